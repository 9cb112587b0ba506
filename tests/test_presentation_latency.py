"""Latency presentation: one paired measurement, its spread, and the run summary (item 10).

Times come from a fake clock that each model advances by a chosen duration, so no
test depends on the speed of the machine.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrinkbench_core.experiment.summary import latency_notes, summary_rows, summary_table
from shrinkbench_core.metrics.latency import (
    MAX_RATIO_SPREAD,
    compare_latency,
    compare_until_supported,
    paired_speedup,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Takes(nn.Module):
    """A model whose forward pass advances the fake clock by the next of its durations (s)."""

    def __init__(self, clock: FakeClock, durations) -> None:
        super().__init__()
        self.clock, self.durations, self.calls = clock, durations, 0

    def forward(self, x):
        self.clock.now += self.durations(self.calls)
        self.calls += 1
        return x


def test_paired_speedup_uses_the_rounds_of_one_measurement():
    clock = FakeClock()
    dense = Takes(clock, lambda i: 0.004)
    pruned = Takes(clock, lambda i: 0.002)
    dense_report, pruned_report = compare_latency(dense, pruned, torch.zeros(8, 3), 0, 9, clock)
    paired = paired_speedup(dense_report, pruned_report)
    assert paired["measured_speedup"] == pytest.approx(2.0)
    assert paired["dense_median_ms"] == pytest.approx(4.0)
    assert paired["measured_speedup_low"] == pytest.approx(2.0) == paired["measured_speedup_high"]
    assert paired["measured_speedup_reliable"] is True


def test_a_spread_ratio_is_measured_again_when_cheap_and_flagged_when_not():
    clock = FakeClock()
    dense = Takes(clock, lambda i: 0.007)
    # the first 10 passes (1 warm-up + 9 timed) swing 0.5 ms..14 ms, later ones are steady
    pruned = Takes(clock, lambda i: (0.0005 if i % 2 else 0.014) if i < 10 else 0.007)
    report, paired = compare_until_supported(dense, pruned, torch.zeros(8, 3), 1, 9,
                                             cheap_seconds=10.0, clock=clock)
    assert paired["latency_attempts"] == 2 and report.repeats == 36
    assert paired["measured_speedup_reliable"] is True
    assert paired["measured_speedup"] == pytest.approx(1.0)

    clock = FakeClock()
    dense = Takes(clock, lambda i: 0.007)
    pruned = Takes(clock, lambda i: 0.0005 if i % 2 else 0.014)
    report, paired = compare_until_supported(dense, pruned, torch.zeros(8, 3), 1, 9,
                                             cheap_seconds=0.1, clock=clock)  # not cheap
    assert paired["latency_attempts"] == 1 and report.repeats == 9
    assert paired["measured_speedup_spread"] > MAX_RATIO_SPREAD
    assert paired["measured_speedup_reliable"] is False


def stage(median: float, dense: float | None = None, reliable: bool = True) -> dict:
    latency = {"median_ms": median, "batch_size": 8, "repeats": 10, "device": "cpu",
               "threads": 2}
    if dense is not None:
        latency.update(dense_median_ms=dense, measured_speedup=dense / median,
                       measured_speedup_reliable=reliable, measured_speedup_low=1.0,
                       measured_speedup_high=1.1, measured_speedup_spread=0.5)
    return {"latency": latency, "accuracy": {"test_top1": 0.9, "test_top5": 0.99}}


def test_summary_shows_one_consistent_set_of_latency_figures():
    # the dense stage timed alone (0.67 ms) in another moment than its pairing (0.47 ms)
    metrics = {"dense": stage(0.67), "pruned": stage(0.46, 0.46), "finetuned": stage(0.46, 0.47)}
    rows = {row[0]: row for row in summary_rows(metrics)}
    assert rows["dense"][5] == "0.47 ms"  # the dense time paired with the fine-tuned one
    assert rows["fine-tuned"][5] == "0.46 ms" and rows["fine-tuned"][6] == "1.02x"
    table = summary_table(metrics)
    assert "latency (ms per batch of 8)" in table.splitlines()[0]
    notes = latency_notes(metrics)
    assert any("fine-tuned: dense 0.47 ms vs fine-tuned 0.46 ms" in line for line in notes)
    assert not any(line.startswith("!") for line in notes)


def test_summary_flags_a_ratio_its_timing_cannot_support():
    metrics = {"dense": stage(7.4), "finetuned": stage(2.3, 7.4, reliable=False)}
    rows = {row[0]: row for row in summary_rows(metrics)}
    assert rows["fine-tuned"][6] == "3.22x?"
    warning = [line for line in latency_notes(metrics) if line.startswith("!")]
    assert len(warning) == 1 and "too spread to support 3.22x" in warning[0]

"""Measured inference latency of the model as it is.

The model runs in eval mode under ``torch.no_grad`` on the device of the example
batch: ``warmup`` untimed forward passes, then ``repeats`` timed ones, each timed
on its own with ``time.perf_counter`` (on CUDA the device is synchronized before
and after each pass, so the time is that of the GPU work). Reported: median,
mean, standard deviation, interquartile range, min and max in milliseconds, with
the batch size, device, number of CPU threads and input dtype. Freed memory is
kept in the process first (:func:`~shrinkbench_core.metrics.allocator.retain_freed_memory`),
so that each pass does not fault its activations' pages in anew.

A pruned model keeps its dense shapes (zeros are stored and multiplied), so its
latency is expected to equal the dense model's: :func:`compare_latency` times
both, interleaved, and reports the measured speedup next to the theoretical one.

A measured speedup comes with its uncertainty: the interleaving pairs the dense
and pruned pass of each round, and resampling the rounds (a seeded bootstrap of
:data:`BOOTSTRAP_SAMPLES` draws) gives a 95% interval of the ratio of medians
(``measured_speedup_low``/``_high``), which says how well the measurement supports
it. When the interval is wider than :data:`MAX_RATIO_SPREAD` of the ratio,
the metric measures again with four times the repeats (the interval narrows as
``1/sqrt(n)``) while that stays cheap (under :data:`CHEAP_SECONDS` in all), and
marks a ratio that is still that uncertain ``measured_speedup_reliable: false``.
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinkbench_core.builtin.metrics import LatencyParameters
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.metrics.allocator import retain_freed_memory

#: Widest 95% interval of the median per-round ratio, relative to the ratio, that supports it.
MAX_RATIO_SPREAD = 0.2
#: Seconds of timing under which a too-spread comparison is repeated with more passes.
CHEAP_SECONDS = 5.0
#: Resamples of the rounds for the interval of a measured speedup (seeded: reproducible).
BOOTSTRAP_SAMPLES = 400
#: Most measurements of one comparison (each with four times the repeats of the last).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class LatencyReport:
    """Times of ``repeats`` forward passes of a batch of ``batch_size``, in milliseconds."""

    times_ms: tuple[float, ...]
    batch_size: int
    device: str
    device_name: str
    threads: int
    warmup: int
    dtype: str
    freed_memory_kept: bool = False

    @property
    def repeats(self) -> int:
        """Number of timed forward passes."""
        return len(self.times_ms)

    @property
    def median_ms(self) -> float:
        """Median time of one forward pass of the batch."""
        return statistics.median(self.times_ms)

    @property
    def iqr_ms(self) -> float:
        """Interquartile range (75th - 25th percentile) of the times."""
        if len(self.times_ms) < 2:
            return 0.0
        quartiles = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return quartiles[2] - quartiles[0]

    @property
    def stdev_ms(self) -> float:
        """Sample standard deviation of the times (0 for a single repeat)."""
        return statistics.stdev(self.times_ms) if len(self.times_ms) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Summary statistics and settings, JSON-friendly (raw times left out)."""
        return {
            "median_ms": self.median_ms,
            "mean_ms": statistics.fmean(self.times_ms),
            "stdev_ms": self.stdev_ms,
            "iqr_ms": self.iqr_ms,
            "min_ms": min(self.times_ms),
            "max_ms": max(self.times_ms),
            "per_example_ms": self.median_ms / self.batch_size,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "threads": self.threads,
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "freed_memory_kept": self.freed_memory_kept,
        }


def make_batch(example_input: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A batch of ``batch_size`` copies of the first example of ``example_input``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    first = example_input[:1]
    return first.expand(batch_size, *first.shape[1:]).contiguous()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _timer(
    model: nn.Module, args: tuple[Any, ...], clock: Callable[[], float]
) -> Callable[[], float]:
    """A function running one forward of ``args`` and returning its time in seconds."""
    devices = {a.device for a in args if isinstance(a, torch.Tensor) and a.device.type == "cuda"}

    def synchronize() -> None:
        for device in devices:
            torch.cuda.synchronize(device)

    def run_once() -> float:
        synchronize()
        start = clock()
        model(*args)
        synchronize()
        return clock() - start

    return run_once


def _report(times: list[float], batch: torch.Tensor, warmup: int) -> LatencyReport:
    return LatencyReport(
        times_ms=tuple(1000.0 * t for t in times),
        batch_size=int(batch.shape[0]),
        device=str(batch.device),
        device_name=_device_name(batch.device),
        threads=torch.get_num_threads(),
        warmup=warmup,
        dtype=str(batch.dtype).removeprefix("torch."),
        freed_memory_kept=retain_freed_memory(),
    )


def interleaved_times(
    models: list[nn.Module],
    args: tuple[Any, ...],
    warmup: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Seconds of ``repeats`` forwards of ``model(*args)`` for each model, taken in turns.

    Each model first runs ``warmup`` untimed passes. Then round ``r`` times every
    model once, so a change of machine load hits them alike. Models run in eval
    mode under ``torch.no_grad`` (their training flags are restored after), with
    freed memory kept in the process (:func:`retain_freed_memory`); CUDA devices
    of the arguments are synchronized around each pass. ``clock`` is wall time by
    default.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    retain_freed_memory()
    flags = [model.training for model in models]
    try:
        for model in models:
            model.eval()
        timers = [_timer(model, args, clock) for model in models]
        times: list[list[float]] = [[] for _ in models]
        with torch.no_grad():
            for timer in timers:
                for _ in range(warmup):
                    timer()
            for _ in range(repeats):
                for timer, bucket in zip(timers, times, strict=True):
                    bucket.append(timer())
        return times
    finally:
        for model, flag in zip(models, flags, strict=True):
            model.train(flag)


def measure_latency(
    model: nn.Module, example_batch: torch.Tensor, warmup: int = 5, repeats: int = 20
) -> LatencyReport:
    """Time forward passes of ``example_batch`` through ``model`` (on the batch's device)."""
    (times,) = interleaved_times([model], (example_batch,), warmup, repeats)
    return _report(times, example_batch, warmup)


def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    example_batch: torch.Tensor,
    warmup: int = 5,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[LatencyReport, LatencyReport]:
    """Time ``dense`` and ``pruned`` alternately on the same batch: ``(dense, pruned)``.

    Interleaving cancels drift (clock boost, other load) between the two.
    Measured speedup = ``dense.median_ms / pruned.median_ms``.
    """
    dense_times, pruned_times = interleaved_times(
        [dense, pruned], (example_batch,), warmup, repeats, clock
    )
    return _report(dense_times, example_batch, warmup), _report(pruned_times, example_batch, warmup)


def paired_speedup(dense: LatencyReport, pruned: LatencyReport) -> dict[str, Any]:
    """Measured speedup of an interleaved measurement, with the spread of its round ratios.

    Keys: ``measured_speedup`` (dense median / pruned median), ``dense_median_ms``,
    ``dense_iqr_ms``, ``measured_speedup_low`` / ``_high`` (95% bootstrap interval of
    the ratio, resampling the rounds, each a dense and a pruned pass),
    ``measured_speedup_spread`` ((high - low) / measured speedup) and
    ``measured_speedup_reliable`` (spread <= :data:`MAX_RATIO_SPREAD`).
    """
    rounds = list(zip(dense.times_ms, pruned.times_ms, strict=True))
    speedup = dense.median_ms / pruned.median_ms
    draws = random.Random(0)
    resampled = sorted(
        statistics.median(d for d, _ in sample) / statistics.median(p for _, p in sample)
        for sample in (draws.choices(rounds, k=len(rounds)) for _ in range(BOOTSTRAP_SAMPLES))
    )
    low = resampled[int(0.025 * BOOTSTRAP_SAMPLES)]
    high = resampled[int(0.975 * BOOTSTRAP_SAMPLES) - 1]
    spread = (high - low) / speedup if speedup > 0 else math.inf
    return {
        "dense_median_ms": dense.median_ms,
        "dense_iqr_ms": dense.iqr_ms,
        "measured_speedup": speedup,
        "measured_speedup_low": low,
        "measured_speedup_high": high,
        "measured_speedup_spread": spread,
        "measured_speedup_reliable": bool(spread <= MAX_RATIO_SPREAD),
    }


def compare_until_supported(
    dense_model: nn.Module,
    model: nn.Module,
    batch: torch.Tensor,
    warmup: int,
    repeats: int,
    cheap_seconds: float = CHEAP_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[LatencyReport, dict[str, Any]]:
    """:func:`compare_latency`, again with 4x the repeats while the ratio is too spread and
    the timing so far took under ``cheap_seconds``; the last measurement is reported whole
    (``pruned`` report, and :func:`paired_speedup` with ``latency_attempts``)."""
    spent, attempts = 0.0, 0
    while True:
        attempts += 1
        start = clock()
        dense, pruned = compare_latency(dense_model, model, batch, warmup, repeats, clock)
        last = clock() - start
        spent += last
        paired = paired_speedup(dense, pruned)
        cheap = spent + 4 * last < cheap_seconds  # the next attempt takes about 4x this one
        if paired["measured_speedup_reliable"] or attempts >= MAX_ATTEMPTS or not cheap:
            return pruned, {**paired, "latency_attempts": attempts}
        repeats *= 4


def compute(context: MetricContext, params: LatencyParameters) -> dict[str, Any]:
    """The ``latency`` metric: times ``context.model`` on copies of ``context.example_input``.

    Keys: ``median_ms`` (per batch), ``mean_ms``, ``stdev_ms``, ``iqr_ms``,
    ``min_ms``, ``max_ms``, ``per_example_ms``, and the settings ``batch_size``,
    ``warmup``, ``repeats``, ``threads``, ``device``, ``device_name``, ``dtype``,
    ``freed_memory_kept`` (whether glibc kept freed memory in the process).
    When ``context.dense_model`` is given (a pruned stage), both models are timed
    interleaved and the keys of :func:`paired_speedup` are added: one paired
    measurement gives ``median_ms``, ``dense_median_ms`` and ``measured_speedup``
    (repeated with more passes when too spread and cheap, see the module docs).
    """
    batch = make_batch(context.example_input, params.batch_size or context.batch_size)
    dense_model = context.dense_model
    if dense_model is None or dense_model is context.model:
        return measure_latency(context.model, batch, params.warmup, params.repeats).as_dict()
    pruned, paired = compare_until_supported(
        dense_model, context.model, batch, params.warmup, params.repeats
    )
    return {**pruned.as_dict(), **paired}

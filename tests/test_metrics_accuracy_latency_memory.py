"""Accuracy, latency and memory metrics, and metrics reached through the registry."""

from __future__ import annotations

import platform
import sys

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shrinkbench_core.builtin.metrics import (
    AccuracyParameters,
    LatencyParameters,
    MemoryParameters,
)
from shrinkbench_core.errors import UserError
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.metrics import accuracy as accuracy_metric
from shrinkbench_core.metrics import latency as latency_metric
from shrinkbench_core.metrics import memory as memory_metric
from shrinkbench_core.metrics.accuracy import evaluate_accuracy
from shrinkbench_core.metrics.latency import compare_latency, make_batch, measure_latency
from shrinkbench_core.metrics.memory import peak_activation_memory
from shrinkbench_core.plugins import make_plugin_manager
from shrinkbench_core.registry import Registry
from shrinkbench_core.specs import MetricSpec

CPU = torch.device("cpu")


def crafted_scores() -> tuple[torch.Tensor, torch.Tensor]:
    """10 examples, 6 classes, whose scores are the inputs (the model is the identity).

    In batches of 4 the last batch has 2 examples. Batches 1 and 2 are all right
    at top-1; the short batch is all wrong, so the exact top-1 is 8/10 while the
    mean of per-batch accuracies would be (1 + 1 + 0) / 3. For top-5 the label of
    example 8 is ranked 2nd and that of example 9 is ranked last (6th).
    """
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    scores = torch.full((10, 6), -1.0)
    scores[torch.arange(8), labels[:8]] = 5.0  # right at top-1
    scores[8] = torch.tensor([0.0, 1.0, 4.0, 3.0, 2.0, 5.0])  # label 2 ranked 2nd
    scores[9] = torch.tensor([5.0, 4.0, 3.0, -2.0, 2.0, 1.0])  # label 3 ranked 6th
    return scores, labels


def crafted_loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(*crafted_scores()), batch_size=batch_size, shuffle=False)


# -- accuracy -------------------------------------------------------------------


def test_accuracy_is_exact_over_the_split_with_a_short_last_batch():
    loader = crafted_loader()
    assert [len(labels) for _, labels in loader] == [4, 4, 2]
    report = evaluate_accuracy(nn.Identity(), loader, CPU)
    assert report.examples == 10
    assert report.correct == {1: 8, 5: 9}
    assert report.top(1) == 0.8  # a mean of per-batch accuracies would give 2/3
    assert report.top(5) == 0.9
    scores, labels = crafted_scores()
    assert report.mean_loss == pytest.approx(F.cross_entropy(scores, labels).item(), rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_accuracy_does_not_depend_on_batch_size(batch_size):
    report = evaluate_accuracy(nn.Identity(), crafted_loader(batch_size), CPU)
    assert (report.top(1), report.top(5)) == (0.8, 0.9)


def test_topk_above_the_number_of_classes_is_left_out():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    loader = DataLoader(TensorDataset(scores, torch.tensor([0, 1])), batch_size=2)
    result = evaluate_accuracy(nn.Identity(), loader, CPU, topk=(1, 5)).as_dict()
    assert result["top1"] == 0.5
    assert "top5" not in result
    assert result["num_classes"] == 3
    with pytest.raises(UserError, match="k <= number of classes"):
        evaluate_accuracy(nn.Identity(), loader, CPU, topk=(5,))


def test_accuracy_uses_eval_mode_and_restores_training():
    model = nn.Sequential(nn.Dropout(0.9), nn.Identity())
    model.train()
    torch.manual_seed(0)
    report = evaluate_accuracy(model, crafted_loader(), CPU)
    assert report.top(1) == 0.8  # dropout would scramble the scores in training mode
    assert model.training


def test_accuracy_reads_the_first_output_of_a_tuple():
    class WithAux(nn.Module):
        def forward(self, x):
            return x, torch.zeros_like(x)

    assert evaluate_accuracy(WithAux(), crafted_loader(), CPU).top(1) == 0.8


def test_accuracy_of_an_empty_split_is_an_error():
    empty = DataLoader(TensorDataset(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(UserError, match="no examples"):
        evaluate_accuracy(nn.Identity(), empty, CPU)


def test_accuracy_metric_names_the_missing_split():
    context = MetricContext(
        model=nn.Identity(), example_input=torch.zeros(1, 6), device=CPU,
        loaders={"test": crafted_loader()},
    )
    result = accuracy_metric.compute(context, AccuracyParameters())
    assert (result["top1"], result["top5"], result["examples"]) == (0.8, 0.9, 10)
    with pytest.raises(UserError, match="available splits: test"):
        accuracy_metric.compute(context, AccuracyParameters(split="validation"))
    with pytest.raises(ValidationError):
        AccuracyParameters(topk=(0,))


# -- latency ---------------------------------------------------------------------


class Recorder(nn.Module):
    """Records every forward call: batch size, training flag, grad mode."""

    def __init__(self, tag: str = "", log: list | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 2)
        self.tag = tag
        self.log = log if log is not None else []

    def forward(self, x):
        self.log.append((self.tag, x.shape[0], self.training, torch.is_grad_enabled()))
        return self.layer(x)


def test_latency_runs_warmup_then_repeats_in_eval_without_grad():
    model = Recorder()
    model.train()
    report = measure_latency(model, torch.randn(3, 6), warmup=4, repeats=7)
    assert len(model.log) == 4 + 7
    assert all(call == ("", 3, False, False) for call in model.log)
    assert model.training
    assert report.repeats == 7 and len(report.times_ms) == 7


def test_latency_reports_its_settings():
    report = measure_latency(Recorder(), torch.randn(5, 6), warmup=2, repeats=5).as_dict()
    assert report["batch_size"] == 5
    assert report["warmup"] == 2
    assert report["repeats"] == 5
    assert report["device"] == "cpu"
    assert report["threads"] == torch.get_num_threads()
    assert report["dtype"] == "float32"
    assert report["device_name"]
    assert report["min_ms"] <= report["median_ms"] <= report["max_ms"]
    assert report["stdev_ms"] >= 0 and report["iqr_ms"] >= 0
    assert report["per_example_ms"] == pytest.approx(report["median_ms"] / 5)
    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert report["freed_memory_kept"] is glibc


def test_latency_rejects_invalid_counts():
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(Recorder(), torch.randn(1, 6), warmup=0, repeats=0)
    with pytest.raises(ValidationError):
        LatencyParameters(repeats=0)


def test_make_batch_repeats_the_first_example():
    example = torch.arange(6.0).view(1, 6)
    batch = make_batch(example, 4)
    assert batch.shape == (4, 6) and torch.equal(batch[3], example[0])


def test_latency_metric_uses_the_requested_batch_size():
    model = Recorder()
    context = MetricContext(model=model, example_input=torch.randn(1, 6), device=CPU, batch_size=9)
    params = LatencyParameters(batch_size=None, warmup=1, repeats=2)  # None: the run's batch size
    result = latency_metric.compute(context, params)
    assert result["batch_size"] == 9 and {call[1] for call in model.log} == {9}
    assert LatencyParameters().batch_size == 8
    result = latency_metric.compute(context, LatencyParameters(batch_size=2, warmup=0, repeats=1))
    assert result["batch_size"] == 2
    assert "measured_speedup" not in result


def test_dense_and_pruned_are_timed_interleaved_with_measured_speedup():
    log: list = []
    dense, pruned = Recorder("dense", log), Recorder("pruned", log)
    dense_report, pruned_report = compare_latency(dense, pruned, torch.randn(2, 6), 1, 3)
    assert [call[0] for call in log] == ["dense", "pruned"] + ["dense", "pruned"] * 3
    assert dense_report.repeats == pruned_report.repeats == 3
    log.clear()
    context = MetricContext(
        model=pruned, example_input=torch.randn(1, 6), device=CPU, stage="pruned",
        dense_model=dense,
    )
    result = latency_metric.compute(context, LatencyParameters(warmup=0, repeats=2))
    assert result["measured_speedup"] == pytest.approx(
        result["dense_median_ms"] / result["median_ms"]
    )
    calls = [call[0] for call in log]  # more rounds when the ratio was too spread
    assert calls == ["dense", "pruned"] * (len(calls) // 2) and len(calls) >= 4


# -- memory ------------------------------------------------------------------------


def test_peak_activation_memory_of_a_chain_by_hand():
    # batch 3, float32: Linear -> 3x16 (192 B); ReLU makes a second 192 B tensor while the
    # first is alive (384 B); then the first is freed and Linear adds 3x4 (48 B).
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert peak_activation_memory(model, torch.randn(3, 8)).peak_activation_bytes == 384
    in_place = nn.Sequential(nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Linear(16, 4))
    assert peak_activation_memory(in_place, torch.randn(3, 8)).peak_activation_bytes == 240


def test_peak_activation_memory_ignores_parameters_and_input():
    report = peak_activation_memory(nn.Linear(1000, 1), torch.randn(1, 1000))
    assert report.peak_activation_bytes == 4  # only the 1x1 output
    assert peak_activation_memory(nn.Identity(), torch.randn(50, 50)).peak_activation_bytes == 0


def test_peak_activation_memory_keeps_a_residual_alive():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1))

        def forward(self, x):
            y = self.inner(x)
            return x + y

    # activations are 2x2x4x4 floats = 256 B each; at most two are alive at once inside
    # `inner` and the sum needs a third while `y` is alive: 2 x 256
    report = peak_activation_memory(Residual(), torch.randn(2, 2, 4, 4))
    assert report.peak_activation_bytes == 512


def test_memory_scales_with_batch_and_restores_training():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten())
    model.train()
    small = peak_activation_memory(model, torch.randn(2, 3, 8, 8))
    large = peak_activation_memory(model, torch.randn(4, 3, 8, 8))
    assert large.peak_activation_bytes == 2 * small.peak_activation_bytes
    assert small.peak_activation_bytes == 2 * (2 * 8 * 8 * 8 * 4)  # conv output + relu output
    assert model.training
    assert small.allocator_peak_bytes is None


def test_memory_metric_uses_the_requested_batch_size():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    context = MetricContext(model=model, example_input=torch.randn(1, 8), device=CPU, batch_size=3)
    result = memory_metric.compute(context, MemoryParameters())
    assert (result["batch_size"], result["peak_activation_bytes"]) == (3, 384)
    result = memory_metric.compute(context, MemoryParameters(batch_size=6))
    assert result["peak_activation_bytes"] == 768
    assert result["peak_activation_mib"] == 768 / 2**20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_and_latency_on_cuda():
    device = torch.device("cuda")
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)
    report = peak_activation_memory(model, torch.randn(3, 8, device=device))
    assert report.peak_activation_bytes == 384
    assert report.allocator_peak_bytes is not None and report.allocator_peak_bytes >= 0
    latency = measure_latency(model, torch.randn(3, 8, device=device), warmup=1, repeats=2)
    assert latency.device.startswith("cuda")


# -- through the registry: built-in and third-party alike -----------------------


class ModuleCountParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: int = 1


def module_count(context: MetricContext, params: ModuleCountParameters) -> dict:
    """A third-party metric: the number of modules times ``params.scale``."""
    return {"modules": len(list(context.model.modules())) * params.scale}


class ThirdPartyPlugin:
    """A plugin object as a third-party distribution would provide it."""

    @staticmethod
    @hookimpl
    def shrinkbench_register_metrics() -> list:
        return [
            MetricSpec(
                name="module_count", summary="modules in the model", unit="modules",
                factory=f"{__name__}:module_count", parameters=ModuleCountParameters,
            )
        ]


def compute_metric(registry: Registry, name: str, context: MetricContext, **options):
    spec = registry.get("metrics", name)
    return spec.load()(context, spec.parameters(**options))


def test_builtin_and_third_party_metrics_are_used_the_same_way():
    manager = make_plugin_manager(
        extra_plugins=[("thirdparty", ThirdPartyPlugin())], load_entry_points=False
    )
    registry = Registry(manager)
    assert {"size", "flops", "accuracy", "latency", "memory", "module_count"} <= set(
        registry.names("metrics")
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 6))
    context = MetricContext(
        model=model, example_input=torch.randn(1, 6), device=CPU, prunable=["1.weight"],
        loaders={"test": crafted_loader()},
    )
    assert compute_metric(registry, "module_count", context, scale=2) == {"modules": 6}
    assert compute_metric(registry, "size", context)["total_parameters"] == 42
    assert compute_metric(registry, "flops", context, per_layer=False)["macs"] == 36
    assert compute_metric(registry, "accuracy", context, topk=(1,))["examples"] == 10
    assert compute_metric(registry, "memory", context, batch_size=2)["batch_size"] == 2
    latency = compute_metric(registry, "latency", context, warmup=0, repeats=1)
    assert latency["repeats"] == 1
    spec = registry.get("metrics", "module_count")
    assert (spec.plugin, spec.unit) == ("thirdparty", "modules")

"""Specs of the standard metrics (no torch import here).

Each metric's ``compute`` returns several numbers; ``unit`` and
``higher_is_better`` describe its headline value, named first in its summary.
The metrics' parameter models are defined here, so that listing metrics never
imports torch; the metric modules import them from here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shrinkbench_core.specs import MetricSpec


class SizeParameters(BaseModel):
    """Options of the ``size`` metric (none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FlopsParameters(BaseModel):
    """Options of the ``flops`` metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_layer: bool = Field(True, description="Include the per-layer breakdown under 'layers'.")


class AccuracyParameters(BaseModel):
    """Options of the ``accuracy`` metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str = Field("test", description="Which split to evaluate ('test', 'validation').")
    topk: tuple[int, ...] = Field((1, 5), description="The k of each top-k accuracy reported.")

    @field_validator("topk")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(k < 1 for k in value):
            raise ValueError("topk must list at least one k, each >= 1")
        return value


class LatencyParameters(BaseModel):
    """Options of the ``latency`` metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int | None = Field(
        8, ge=1, description="Inputs per forward pass (None: the run's evaluation batch size)."
    )
    warmup: int = Field(3, ge=0, description="Untimed forward passes first.")
    repeats: int = Field(10, ge=1, description="Timed forward passes.")


class MemoryParameters(BaseModel):
    """Options of the ``memory`` metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int | None = Field(
        None, ge=1, description="Inputs per forward pass; default: the run's batch size."
    )


class StructuredParameters(BaseModel):
    """Options of the ``structured`` metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int | None = Field(
        32, ge=1, description="Inputs per timed forward pass (None: the run's batch size)."
    )
    repeats: int = Field(10, ge=1, description="Timed passes of each model, interleaved.")


def metric_specs() -> list[MetricSpec]:
    """The standard metrics: size, flops, accuracy, latency, memory."""
    return [
        MetricSpec(
            name="size",
            summary="compression_ratio (all / nonzero parameters), parameter counts, storage bytes",
            factory="shrinkbench_core.metrics.size:compute",
            parameters=SizeParameters,
            unit="x",
            higher_is_better=True,
        ),
        MetricSpec(
            name="flops",
            summary="theoretical_speedup (dense / nonzero MACs), MACs per input, per-layer rows",
            factory="shrinkbench_core.metrics.flops:compute",
            parameters=FlopsParameters,
            unit="x",
            higher_is_better=True,
        ),
        MetricSpec(
            name="accuracy",
            summary="top1, top5 (fraction of a whole split) and mean cross-entropy loss",
            factory="shrinkbench_core.metrics.accuracy:compute",
            parameters=AccuracyParameters,
            unit="fraction",
            higher_is_better=True,
        ),
        MetricSpec(
            name="latency",
            summary="median_ms of a forward pass (warm-up, repeats, spread, batch size, device)",
            factory="shrinkbench_core.metrics.latency:compute",
            parameters=LatencyParameters,
            unit="ms",
            higher_is_better=False,
        ),
        MetricSpec(
            name="memory",
            summary="peak_activation_bytes of one forward pass at a given batch size",
            factory="shrinkbench_core.metrics.memory:compute",
            parameters=MemoryParameters,
            unit="bytes",
            higher_is_better=False,
        ),
        MetricSpec(
            name="structured",
            summary="shrunk_speedup: measured speedup after removing pruned channels, vs masked",
            factory="shrinkbench_core.metrics.structured:compute",
            parameters=StructuredParameters,
            unit="x",
            higher_is_better=True,
        ),
    ]

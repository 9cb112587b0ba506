"""Computing the configured metrics at one stage of the pipeline."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.specs import MetricSpec


def evaluate_stage(
    context: MetricContext,
    specs: list[MetricSpec],
    quiet: bool = False,
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{metric name: its result}`` for every metric spec, computed on ``context``.

    ``params`` holds the parameters set for each metric by name (the config's
    ``metrics`` entries, ``ExperimentConfig.metric_params()``); unset ones keep
    their defaults.

    A metric whose parameters have a ``split`` field is computed on every split
    of the context (test and, when present, validation); its keys are then
    prefixed with the split name (``test_top1``, ``validation_top1``).
    """
    results: dict[str, Any] = {}
    for spec in specs:
        compute = spec.load()
        given = (params or {}).get(spec.name, {})
        if "split" in spec.parameters.model_fields and "split" not in given:
            merged: dict[str, Any] = {}
            for split in context.loaders:
                values = compute(context, spec.parameters(**{**given, "split": split}))
                merged.update({f"{split}_{key}": value for key, value in values.items()})
            results[spec.name] = merged
        else:
            results[spec.name] = compute(context, spec.parameters(**given))
    return results


def accuracy_of(model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
    """Exact top-1/top-5 and mean loss of ``model`` over a whole split."""
    from shrinkbench_core.metrics.accuracy import evaluate_accuracy

    return evaluate_accuracy(model, loader, device).as_dict()

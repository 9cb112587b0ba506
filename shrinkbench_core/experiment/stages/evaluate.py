"""Evaluation stage: the configured metrics at each stage, and the run's ``metrics.json``.

Contract:

* :func:`measure` computes every metric on the model as it is now and records it under
  ``stages[<stage>]`` ("dense", "pruned", "finetuned"), announcing
  ``shrinkbench_stage_end``. Measured stages are saved with fine-tuning's progress, so
  a resumed run never measures them again.
* :func:`finish` measures the fine-tuned model and the best-validation epoch, saves
  ``model.pt`` and writes ``metrics.json`` (with the time of each phase, summed over
  resumed segments). The run is complete once ``status.json`` says so, written after.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import CheckpointError
from shrinkbench_core.experiment.atomic import atomic_torch_save, atomic_write_json
from shrinkbench_core.experiment.context import RunContext

Masks = dict[str, torch.Tensor]


def measure(
    ctx: RunContext,
    stage: str,
    model: nn.Module,
    masks: Masks,
    prunable: list[str],
    *,
    accuracy_only: bool = False,
) -> dict[str, Any]:
    """Every configured metric of ``model`` at ``stage``, recorded and announced."""
    result = ctx.evaluate(model, masks, prunable, stage, accuracy_only=accuracy_only)
    ctx.stages[stage] = result
    ctx.emit("shrinkbench_stage_end", stage=stage, metrics=result)
    return result


def measure_best(ctx: RunContext, model: nn.Module, masks: Masks, prunable: list[str]) -> None:
    """Accuracy of the best-validation epoch (``checkpoints/best.pt``), when there is one."""
    path = ctx.run_dir.best_checkpoint
    if not path.is_file():
        return
    best_model = copy.deepcopy(model)
    try:
        best = torch.load(path, map_location="cpu", weights_only=True)
        best_model.load_state_dict(best["model"])
    except Exception as error:  # truncated or corrupted after it was written
        raise CheckpointError(
            f"{path} is damaged ({type(error).__name__}: {str(error)[:160]}); rerun with "
            "--force to redo the run"
        ) from None
    result = ctx.evaluate(best_model, masks, prunable, "best_validation", accuracy_only=True)
    ctx.stages["best_validation"] = {"epoch": best["epoch"], **result}
    ctx.emit("shrinkbench_stage_end", stage="best", metrics=ctx.stages["best_validation"])


def finish(
    ctx: RunContext, model: nn.Module, masks: Masks, prunable: list[str], logs: list[dict]
) -> dict[str, Any]:
    """Measure the fine-tuned model, save ``model.pt``, write and return ``metrics.json``."""
    measure(ctx, "finetuned", model, masks, prunable)
    measure_best(ctx, model, masks, prunable)
    atomic_torch_save(model.state_dict(), ctx.run_dir.model)
    metrics = summarize(ctx, logs)
    atomic_write_json(ctx.run_dir.metrics, metrics)
    return metrics


def summarize(ctx: RunContext, logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    stages = ctx.stages
    final = stages.get("finetuned", {})
    size = final.get("size", {})
    flops = final.get("flops", {})
    return {
        "digest": ctx.config.digest(),
        "compression": {
            "requested": ctx.config.compression,
            "achieved": size.get("compression_ratio"),
        },
        "theoretical_speedup": flops.get("theoretical_speedup"),
        "schedule": stages.get("schedule"),
        **{stage: value for stage, value in stages.items() if stage != "schedule"},
        "epochs": len(logs),
        "timings_seconds": ctx.timer.snapshot(),
    }

"""Fine-tuning stage: train the pruned model with its masks held (or changed by the schedule).

Contract:

* **In**: the model with the masks the pruning stage returned applied; the schedule's
  training callback, if it changes masks during training (gradual pruning, sparse
  training).
* **Out**: the trained model, the final masks (``masks.pt`` rewritten when the schedule
  changed them), one log row per epoch (``logs.csv``, written by the built-in logs plugin
  on ``shrinkbench_epoch_end``), ``checkpoints/best.pt`` (the epoch of best validation
  top-1, when there is a validation split).
* **Checkpoint / resume**: each epoch is committed in one atomic step,
  ``checkpoints/last.pt``: model, optimizer, LR schedule, epoch, best score, the callback's
  ``state_dict`` and the run's progress (the stages measured so far, the log rows, the
  number of mask changes, the time of each phase). ``checkpoints/progress.json`` is a
  readable copy of that progress written after it; on resume everything is derived from
  ``last.pt`` (``progress.json`` and ``logs.csv`` are rewritten from it), so a kill at any
  point resumes consistently. Every epoch reseeds its data order and augmentation, so the
  result equals an uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import CheckpointError
from shrinkbench_core.experiment.atomic import atomic_torch_save, atomic_write_json, read_json
from shrinkbench_core.experiment.context import RunContext
from shrinkbench_core.experiment.evaluation import accuracy_of
from shrinkbench_core.experiment.events import epoch_logs
from shrinkbench_core.experiment.rundir import RunDirectory
from shrinkbench_core.experiment.schedule_api import Schedule, ScheduleSession, TrainingStep
from shrinkbench_core.experiment.stages.pruning import MaskChanges
from shrinkbench_core.experiment.training import make_optimizer, make_scheduler, train_epochs
from shrinkbench_core.pruning import hold_masks

Masks = dict[str, torch.Tensor]


def saved_progress(run_dir: RunDirectory, during_training: bool) -> dict[str, Any] | None:
    """The progress committed in ``last.pt`` when fine-tuning can resume from it, else None.

    ``progress.json`` is rewritten from it (it may be one epoch behind after a kill).
    """
    if not run_dir.last_checkpoint.is_file():
        return None
    if not (run_dir.masks.is_file() or during_training):
        return None
    progress = _load_checkpoint(run_dir.last_checkpoint).get("progress")
    if progress is None:  # a checkpoint from before progress was committed with it
        progress = read_json(run_dir.progress)
    if progress:
        atomic_write_json(run_dir.progress, progress)
    return progress or None


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot resume from {path}: {type(error).__name__}: {str(error)[:200]}. "
            "Rerun with --force to start the run again."
        ) from None


def restore_model(model: nn.Module, run_dir: RunDirectory) -> int:
    """Load ``last.pt``'s weights into ``model``; return the epochs it completed."""
    path = run_dir.last_checkpoint
    state = _load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
        return int(state["epoch"])
    except Exception as error:
        raise CheckpointError(
            f"cannot resume from {path}: {type(error).__name__}: {str(error)[:200]}. "
            "Rerun with --force to start the run again."
        ) from None


def finetune(
    ctx: RunContext,
    model: nn.Module,
    masks: Masks,
    schedule: Schedule,
    session: ScheduleSession,
    changes: MaskChanges,
    start_epoch: int = 0,
) -> tuple[list[dict[str, Any]], Masks]:
    """Fine-tune for ``finetune.epochs``; checkpoint every epoch; return logs and final masks."""
    run_dir, config = ctx.run_dir, ctx.config.finetune
    optimizer = make_optimizer(model, config.optimizer)
    scheduler = make_scheduler(optimizer, config)
    logs: list[dict[str, Any]] = []
    best_score = float("-inf")
    state: dict[str, Any] = {}
    if start_epoch:
        state = _load_checkpoint(run_dir.last_checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        logs = (state.get("progress") or read_json(run_dir.progress) or {}).get("logs", [])
        best_score = state.get("best_score", best_score)
    first_step = start_epoch * ctx.steps_per_epoch()
    changes.in_training = True
    callback = schedule.training_callback(session, optimizer, masks)
    holder = hold_masks(model, masks, optimizer) if callback is None else None
    if callback is not None:
        callback.start(first_step, state.get("schedule_state") if start_epoch else None)
    loaders = ctx.loaders()

    def epoch_end(row: dict[str, Any], seconds: float) -> None:
        nonlocal best_score
        epoch = row["epoch"]
        if "validation" in loaders:
            validation = accuracy_of(model, loaders["validation"], ctx.device)
            row.update({f"validation_{k}": v for k, v in validation.items()})
            if validation["top1"] > best_score:
                best_score = validation["top1"]
                atomic_torch_save(
                    {"model": model.state_dict(), "epoch": epoch}, run_dir.best_checkpoint
                )
        row["epoch_seconds"] = seconds
        if callback is not None:
            row["compression"] = session.model_compression()
            row.update(callback.epoch_logs())
        logs.append(row)
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_score": best_score,
        }
        if callback is not None:
            checkpoint["schedule_state"] = callback.state_dict()
            ctx.stages["schedule"].update(callback.record())
        checkpoint["progress"] = progress_of(ctx, logs, epoch, changes.count)
        atomic_torch_save(checkpoint, run_dir.last_checkpoint)  # the epoch's commit
        atomic_write_json(run_dir.progress, checkpoint["progress"])
        ctx.emit("shrinkbench_epoch_end", stage="finetune", epoch=epoch, logs=epoch_logs(row))

    def after_step(step: TrainingStep) -> None:
        callback.after_step(step)  # type: ignore[union-attr]

    try:
        train_epochs(
            model,
            optimizer,
            scheduler,
            epochs=config.epochs,
            loader_for=lambda epoch: ctx.train_loader("finetune", epoch),
            device=ctx.device,
            label="fine-tune",
            quiet=ctx.quiet,
            start_epoch=start_epoch,
            start_step=first_step,
            on_step=after_step if callback is not None else None,
            on_epoch_end=epoch_end,
        )
    finally:
        changes.in_training = False
        if holder is not None:
            holder.remove()
        if callback is not None:
            callback.close()
    if callback is not None:
        masks = callback.masks
        ctx.stages["schedule"].update(callback.record())
    if config.epochs == 0 or not run_dir.last_checkpoint.is_file():
        atomic_write_json(run_dir.progress, progress_of(ctx, logs, 0, changes.count))
    return logs, masks


def progress_of(
    ctx: RunContext, logs: list[dict[str, Any]], epoch: int, changes: int
) -> dict[str, Any]:
    """What a resumed run needs besides the weights: stages, logs, mask changes, timings."""
    return {
        "stages": ctx.stages,
        "logs": logs,
        "epoch": epoch,
        "pruning_steps": changes,
        "timings": ctx.timer.snapshot(),
    }

"""Pruning stage: the schedule's work before fine-tuning, and the session schedules use.

Contract:

* **In**: the model with its dense weights, the registered schedule (built from the
  ``schedule`` section) and the rewinder the dense stage filled.
* **Out**: the masks fine-tuning starts from (applied to the model), ``masks.pt`` and
  ``masks_summary.csv`` when there are any, and the schedule's entry of ``metrics.json``
  (``stages["schedule"]``: kind, label, settings, plus what the schedule reports).
* **Checkpoint / resume**: none inside the stage. A run interrupted before fine-tuning
  begins restarts from the cached dense weights (the strategy and every training epoch
  are seeded, so the result is the same); once fine-tuning has checkpointed an epoch, a
  rerun resumes there and never repeats this stage.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from shrinkbench_core.experiment.atomic import atomic_write_text
from shrinkbench_core.experiment.context import RunContext
from shrinkbench_core.experiment.distributed import broadcast_masks, scored_once, world_size
from shrinkbench_core.experiment.events import epoch_logs
from shrinkbench_core.experiment.schedule_api import Schedule, ScheduleSession
from shrinkbench_core.experiment.schedules import Rewinder
from shrinkbench_core.experiment.stages.evaluate import measure
from shrinkbench_core.experiment.training import make_optimizer, make_scheduler, train_epochs
from shrinkbench_core.pruning import apply_masks, hold_masks, masks_summary, save_masks

Masks = dict[str, torch.Tensor]


def build_schedule(ctx: RunContext) -> Schedule:
    """The registered schedule of the config's ``schedule.kind``, with its parameters."""
    section = ctx.config.schedule
    spec = ctx.resolved.schedule
    if spec is None:  # resolved without a registry lookup (an embedder's own resolve)
        from shrinkbench_core.registry import get_registry

        spec = get_registry().get("schedules", section.kind)
    return spec.load()(spec.parameters(**section.settings()), compression=ctx.config.compression)


def schedule_record(ctx: RunContext, schedule: Schedule, session: ScheduleSession) -> None:
    """Check the schedule against the data (before training); start its metrics entry."""
    section = ctx.config.schedule
    session.record.update(kind=section.kind, label=section.label())
    session.record["settings"] = schedule.check(session)


def make_pruner(ctx: RunContext, model: nn.Module, prunable: list[str], classifier: str | None):
    """``prune(c)``: apply the strategy at compression ``c`` to ``model``; return its masks.

    Each call builds the strategy afresh, reseeded with the pruning seed; the
    calibration batches are drawn once, at the first call.
    """
    spec = ctx.resolved.strategy
    input_shape = ctx.input_shape()
    calibration: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def prune(compression: float) -> Masks:
        nonlocal calibration
        torch.manual_seed(ctx.seeds.pruning)
        if calibration is None:
            calibration = ctx.calibration_batches()
        strategy = spec.load()(
            model,
            compression,
            params=spec.parameters(**ctx.config.strategy.params),
            calibration=calibration,
            prunable=prunable,
            classifier=classifier,
            seed=ctx.seeds.pruning,
            input_shape=input_shape,
        )
        masks = strategy.apply(count_dead=True)  # fine-tuning must reach the request
        if spec.structure == "channel":
            masks = complete_channels(ctx, model, masks)
        return masks

    return prune


def complete_channels(ctx: RunContext, model: nn.Module, masks: Masks) -> Masks:
    """Also mask removed channels' biases and BatchNorm entries, so they output exactly zero.

    Then the masked model equals its physically shrunk version. A model the tracer
    cannot follow keeps the weight-only masks (reported on stderr).
    """
    from shrinkbench_core.errors import UserError
    from shrinkbench_core.pruning.structured import complete_channel_masks

    try:
        completed = complete_channel_masks(model, masks, ctx.example_input())
    except UserError as error:
        print(f"shrinkbench: note: channel masks not completed: {error}", file=sys.stderr)
        return masks
    apply_masks(model, completed)
    return completed


class MaskChanges:
    """Announces every mask change (``shrinkbench_pruning_step``), numbered from 1.

    While ``in_training``, pruning runs on a forked RNG (the training randomness is as if
    it did not happen), and the first change also measures the "pruned" stage.
    """

    def __init__(self, ctx: RunContext, model: nn.Module, prunable: list[str], done: int = 0):
        self.ctx, self.model, self.prunable = ctx, model, prunable
        self.count = done
        self.in_training = False
        self._devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []

    def prune(self, pruner: Any, compression: float) -> Masks:
        """``pruner(compression)``, on a forked RNG while in training."""
        if not self.in_training:
            return pruner(compression)
        with torch.random.fork_rng(devices=self._devices):
            return pruner(compression)

    def __call__(self, masks: Masks, details: dict[str, Any]) -> None:
        self.count += 1
        if self.in_training and "pruned" not in self.ctx.stages:
            was_training = self.model.training
            with torch.random.fork_rng(devices=self._devices):
                measure(self.ctx, "pruned", self.model, masks, self.prunable)
            self.model.train(was_training)
        params = list(self.model.parameters())
        nonzero = sum(int(torch.count_nonzero(p)) for p in params)
        total = sum(p.numel() for p in params)
        self.ctx.emit(
            "shrinkbench_pruning_step",
            step=self.count,
            compression=total / nonzero if nonzero else float("inf"),
            summary=masks_summary(masks),
            details={"schedule": self.ctx.config.schedule.kind, **details},
        )


def train_with_masks(
    ctx: RunContext, model: nn.Module, epochs: int, masks: Masks, stage: str
) -> list[dict[str, Any]]:
    """Train between pruning rounds: masks held, a fresh ``finetune`` optimizer and schedule."""
    config = ctx.config.finetune.model_copy(update={"epochs": epochs})
    optimizer = make_optimizer(model, config.optimizer)
    scheduler = make_scheduler(optimizer, config)
    holder = hold_masks(model, masks, optimizer)

    def epoch_end(row: dict[str, Any], seconds: float) -> None:
        ctx.emit(
            "shrinkbench_epoch_end", stage=stage, epoch=row["epoch"], logs=epoch_logs(row, seconds)
        )

    try:
        return train_epochs(
            model,
            optimizer,
            scheduler,
            epochs=epochs,
            loader_for=lambda epoch: ctx.train_loader(stage, epoch),
            device=ctx.device,
            label=stage.replace("round", "round "),
            quiet=ctx.quiet,
            on_epoch_end=epoch_end,
        )
    finally:
        holder.remove()


def make_session(
    ctx: RunContext,
    model: nn.Module,
    prunable: list[str],
    classifier: str | None,
    rewinder: Rewinder | None,
    changes: MaskChanges,
) -> ScheduleSession:
    """The :class:`ScheduleSession` a schedule drives this run through."""
    pruner = make_pruner(ctx, model, prunable, classifier)
    rewind = None
    if rewinder is not None:

        def rewind(masks: Masks) -> None:
            rewinder.restore(model, masks)

    return ScheduleSession(
        model=model,
        device=ctx.device,
        compression=ctx.config.compression,
        prunable=prunable,
        steps_per_epoch=ctx.steps_per_epoch(),
        finetune_steps=ctx.config.finetune.epochs * ctx.steps_per_epoch(),
        dense_epochs=ctx.config.dense.epochs,
        config=ctx.config,
        seeds=ctx.seeds,
        record=ctx.stages.setdefault("schedule", {}),
        # DDP: rank 0 scores and prunes, the other ranks apply its broadcast masks
        prune=scored_once(lambda c: changes.prune(pruner, c), model, ctx.device),
        train=lambda epochs, masks, stage: train_with_masks(ctx, model, epochs, masks, stage),
        rewind=rewind,
        announce=changes,
    )


def write_masks(ctx: RunContext, masks: Masks) -> None:
    """Write ``masks.pt`` and ``masks_summary.csv``."""
    save_masks(masks, ctx.run_dir.masks)
    atomic_write_text(ctx.run_dir.masks_summary, masks_summary(masks).to_csv(index=False))


def run_pruning(ctx: RunContext, schedule: Schedule, session: ScheduleSession) -> Masks:
    """The schedule's pruning before fine-tuning; masks saved when there are any."""
    masks = schedule.prune(session)
    if world_size() > 1:  # DDP: every rank holds rank 0's masks, whatever it computed
        masks = broadcast_masks(masks, device=ctx.device)
        apply_masks(session.model, masks)
    if masks:
        write_masks(ctx, masks)
    return masks

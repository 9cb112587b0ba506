"""Dense stage: the weights every strategy starts from, trained once and shared.

Contract:

* **In**: a freshly built model (init seed) and, when the schedule rewinds, a
  :class:`~shrinkbench_core.experiment.schedules.Rewinder`.
* **Out**: the model holds the dense weights; ``stages["dense_source"]`` says where they
  came from; the rewinder holds the weights of its rewind point.
* **Checkpoint / resume**: ``dense.source = "train"`` caches the trained weights under
  ``<output>/dense/<dense digest>/`` (``model.pt``, ``dense.json``, ``rewind-<point>.pt``),
  under a file lock, so concurrent runs wait for the one that trains and every later run
  (any strategy, schedule, compression) loads them. Dense training has no per-epoch
  checkpoint: interrupted, it restarts from the init weights, which gives the same
  weights (every epoch is seeded). A rewind point missing from the cache is recorded by
  replaying dense training up to it. ``checkpoint`` and ``pretrained`` sources load weights
  and cache nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrinkbench_core.checkpoints import load_state_dict_file
from shrinkbench_core.experiment.context import RunContext
from shrinkbench_core.experiment.dense import (
    cached_dense_weights,
    cached_rewind_state,
    save_rewind_state,
)
from shrinkbench_core.experiment.events import epoch_logs
from shrinkbench_core.experiment.schedules import Rewinder
from shrinkbench_core.experiment.training import (
    TrainingStep,
    make_optimizer,
    make_scheduler,
    train_epochs,
)


def rewind_key(rewinder: Rewinder) -> str:
    """Cache key of a rewind point: ``init``, ``epoch2``, ``iteration30``."""
    return "init" if rewinder.rewind == "init" else f"{rewinder.rewind}{rewinder.point}"


def obtain_dense(
    ctx: RunContext, model: nn.Module, rewinder: Rewinder | None = None
) -> dict[str, Any]:
    """Load or train the dense weights into ``model``; return where they came from.

    With a ``rewinder``, the weights at its rewind point are recorded too: ``init`` from a
    fresh build with the init seed (the dense training's starting point when it is
    trained here); ``epoch``/``iteration`` while the dense model trains, cached next to
    the dense weights.
    """
    dense = ctx.config.dense
    if dense.source == "checkpoint":
        load_state_dict_file(model, dense.checkpoint or "")
        info: dict[str, Any] = {"source": "checkpoint", "checkpoint": dense.checkpoint}
        return _record_init(ctx, rewinder, info)
    if dense.source == "pretrained":
        info = {"source": "pretrained", "weights": dense.weights}
        return _record_init(ctx, rewinder, info)
    digest = ctx.config.dense_digest()
    cache = ctx.root / "dense" / digest[:16]
    in_training = rewinder is not None and rewinder.rewind != "init"

    def train() -> dict[str, Any]:
        logs = train_dense(ctx, model, rewinder if in_training else None, announce=True)
        if rewinder is not None and in_training:
            save_rewind_state(cache, rewind_key(rewinder), rewinder.state_dict())
        return {"source": "train", "logs": logs}

    _, trained_now = cached_dense_weights(
        cache, model, train, {"digest": digest, "config": ctx.config.model_dump(mode="json")}
    )
    info = {"source": "train", "cache": str(cache), "digest": digest, "trained_now": trained_now}
    if rewinder is not None and in_training and not rewinder.recorded:
        state, _ = cached_rewind_state(
            cache, rewind_key(rewinder), lambda: replay_dense(ctx, rewinder)
        )
        rewinder.load_state_dict(state)
    return _record_init(ctx, rewinder, info)


def _record_init(
    ctx: RunContext, rewinder: Rewinder | None, info: dict[str, Any]
) -> dict[str, Any]:
    if rewinder is not None and rewinder.rewind == "init":
        rewinder.record(ctx.build_model(pretrained=False))
    return info


def replay_dense(ctx: RunContext, rewinder: Rewinder) -> dict[str, torch.Tensor]:
    """Dense training from scratch up to the rewind point (weights cached without it)."""
    train_dense(ctx, ctx.build_model(), rewinder, until_recorded=True)
    return rewinder.state_dict()


def train_dense(
    ctx: RunContext,
    model: nn.Module,
    rewinder: Rewinder | None = None,
    until_recorded: bool = False,
    announce: bool = False,
) -> list[dict[str, Any]]:
    """Train the dense model for ``dense.epochs`` epochs; one log row per epoch.

    ``rewinder`` records the weights at its rewind point on the way (which changes
    nothing in the training); ``until_recorded`` stops after the epoch in which they were
    recorded. ``announce`` emits ``shrinkbench_epoch_end`` (stage ``dense``) per epoch.
    """
    config = ctx.config.dense
    optimizer = make_optimizer(model, config.optimizer)
    scheduler = make_scheduler(optimizer, config)
    if rewinder is not None:
        rewinder.maybe_record(model, epoch=0, iteration=0)
        if until_recorded and rewinder.recorded:
            return []

    def after_step(step: TrainingStep) -> None:
        if rewinder is not None and rewinder.rewind == "iteration":
            rewinder.maybe_record(model, iteration=step.global_step)

    def epoch_end(row: dict[str, Any], seconds: float) -> bool:
        if rewinder is not None and rewinder.rewind == "epoch":
            rewinder.maybe_record(model, epoch=row["epoch"])
        if announce:
            ctx.emit(
                "shrinkbench_epoch_end",
                stage="dense",
                epoch=row["epoch"],
                logs=epoch_logs(row, seconds),
            )
        return until_recorded and rewinder is not None and rewinder.recorded

    logs = train_epochs(
        model,
        optimizer,
        scheduler,
        epochs=config.epochs,
        loader_for=lambda epoch: ctx.train_loader("dense", epoch),
        device=ctx.device,
        label="dense",
        quiet=ctx.quiet,
        on_step=after_step,
        on_epoch_end=epoch_end,
    )
    if rewinder is not None and not rewinder.recorded:
        raise RuntimeError(
            f"rewind point {rewinder.rewind} {rewinder.point} was never reached in "
            f"{config.epochs} dense epochs"
        )
    return logs

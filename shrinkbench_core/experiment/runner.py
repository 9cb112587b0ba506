"""The standardized pipeline, read top to bottom: dense -> prune -> fine-tune -> evaluate.

Every strategy is compared from the same dense weights, with the same fine-tuning and the
same metrics. Randomness is split into seeds for model initialization, data order,
augmentation and pruning; each epoch reseeds from them, so an interrupted run resumes to
the same result as an uninterrupted one.

:class:`Experiment` only orchestrates. The stages live in
:mod:`shrinkbench_core.experiment.stages` (each with its checkpoint and resume contract),
the state they share in :class:`~shrinkbench_core.experiment.context.RunContext`, the one
training loop in :mod:`shrinkbench_core.experiment.training`, and *when* pruning happens in
the registered schedule (``schedule.kind``; see
:mod:`shrinkbench_core.experiment.schedule_api` and :mod:`shrinkbench_core.builtin.schedules`).
Every step is announced to the lifecycle hooks (run start/end, stage end, epoch end,
pruning step): ``logs.csv`` and the trackers are plugins on them.
"""

from __future__ import annotations

import copy
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import CheckpointError, MaskError
from shrinkbench_core.experiment.atomic import atomic_write_json, read_json
from shrinkbench_core.experiment.context import RunContext, pick_device, seed_offset
from shrinkbench_core.experiment.distributed import distributed_record
from shrinkbench_core.experiment.naming import run_name
from shrinkbench_core.experiment.provenance import versions
from shrinkbench_core.experiment.rank_failures import run_outcome
from shrinkbench_core.experiment.resolve import ResolvedExperiment
from shrinkbench_core.experiment.rundir import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunDirectory
from shrinkbench_core.experiment.schedule_api import Schedule
from shrinkbench_core.experiment.schedules import Rewinder
from shrinkbench_core.experiment.stages.dense import obtain_dense
from shrinkbench_core.experiment.stages.evaluate import finish, measure
from shrinkbench_core.experiment.stages.finetune import finetune, restore_model, saved_progress
from shrinkbench_core.experiment.stages.pruning import (
    MaskChanges,
    build_schedule,
    make_session,
    run_pruning,
    schedule_record,
    write_masks,
)
from shrinkbench_core.experiment.timing import PhaseTimer
from shrinkbench_core.experiment.train_options import options_for, training_options
from shrinkbench_core.lifecycle import RunEvents, RunInfo
from shrinkbench_core.pruning import (
    compression_budget,
    find_classifier,
    load_masks,
    prunable_parameters,
)
from shrinkbench_core.trackers import tracker_plugins

__all__ = ["Experiment", "RunResult", "pick_device", "seed_offset"]


@dataclass
class RunResult:
    """Where a run's results are and what they say."""

    path: Path
    metrics: dict[str, Any]
    already_complete: bool = False
    resumed_from_epoch: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


def needs_pruning(model: nn.Module, compression: float) -> bool:
    """Whether ``model`` has more nonzero parameters than ``compression`` allows."""
    params = list(model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    return nonzero > round(sum(p.numel() for p in params) / compression)


class Experiment:
    """One experiment, run (or resumed) in its own run directory.

    ``user_model`` / ``user_data``: objects the caller built, used instead of the
    registry's (see :func:`shrinkbench_core.experiment.run_experiment`); ``provenance``
    is recorded in ``config.json`` under ``user_objects``.
    """

    def __init__(
        self,
        resolved: ResolvedExperiment,
        quiet: bool = False,
        *,
        registry: Any = None,
        user_model: nn.Module | None = None,
        user_data: DataSplits | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.resolved, self.config = resolved, resolved.config
        self.registry = registry
        self.provenance = provenance or {}
        self.run_dir = RunDirectory(Path(self.config.output) / "runs" / run_name(resolved))
        self.context = RunContext(
            resolved, self.run_dir, quiet, user_model=user_model, user_data=user_data
        )
        self.seeds, self.device = self.context.seeds, self.context.device

    # -- what tests and tools build the same way as the run ---------------------------
    def build_data(self) -> DataSplits:
        """The dataset's splits, as the run builds them."""
        return self.context.build_data()

    def build_model(self, splits: DataSplits | None = None, pretrained: bool = True) -> nn.Module:
        """The model with its initial weights, as the run builds it."""
        self.context.splits = splits or self.context.splits
        return self.context.build_model(pretrained)

    def steps_per_epoch(self, splits: DataSplits | None = None) -> int:
        """Optimizer steps per training epoch."""
        return self.context.steps_per_epoch(splits)

    def calibration_batches(self, splits: DataSplits | None = None) -> list:
        """The strategy's seeded calibration batches."""
        self.context.splits = splits or self.context.splits
        return self.context.calibration_batches()

    # -- entry point --------------------------------------------------------------
    def run(self, force: bool = False) -> RunResult:
        """Run (or resume) the experiment; a completed run is only reported.

        One process at a time writes a run directory (a second one gets
        :class:`~shrinkbench_core.experiment.rundir.RunBusyError`). SIGTERM is handled like
        Ctrl-C: the run is marked interrupted and resumes when rerun. ``force`` redoes a
        complete run, keeping the old one until the new one completes.
        """
        run_dir = self.run_dir
        if run_dir.is_complete and not force:
            return RunResult(run_dir.path, read_json(run_dir.metrics), already_complete=True)
        registry = self.registry
        if registry is None:
            from shrinkbench_core.registry import get_registry

            registry = get_registry()
        trackers = tracker_plugins(self.config, registry)  # problems surface before any file
        schedule = build_schedule(self.context)
        with run_dir.lock(), sigterm_as_interrupt():
            run_dir.recover()
            if run_dir.is_complete and not force:
                metrics = read_json(run_dir.metrics)
                return RunResult(run_dir.path, metrics, already_complete=True)
            if force:
                run_dir.set_aside()
            progress = self._prepare(schedule)
            with RunEvents(registry.manager, self._info(progress), plugins=trackers) as events:
                self.context.events = events
                events.emit("shrinkbench_run_start")
                try:
                    with training_options(options_for(self.config)):  # precision, DDP
                        result = self._run(schedule, progress)
                except BaseException as error:  # Ctrl-C, SIGTERM, a stop: interrupted
                    with run_outcome(error, run_dir.path) as outcome:  # DDP: which rank failed
                        self._end(events, outcome.status, error=outcome.error,
                                  details=outcome.details())
                    if outcome.exception is not None:
                        raise outcome.exception from error
                    raise
                self._end(events, COMPLETE, metrics=result.metrics)
        return result

    def _prepare(self, schedule: Schedule) -> dict[str, Any] | None:
        """Create the run directory and ``config.json``; the progress to resume from, if any."""
        run_dir = self.run_dir
        run_dir.prepare()
        record = {"digest": self.config.digest(), "config": self.config.model_dump(mode="json")}
        record.update(seeds=self.seeds.model_dump(), versions=versions(self.resolved))
        if self.provenance:
            record["user_objects"] = self.provenance
        record["distributed"] = distributed_record()  # world_size, backend
        atomic_write_json(run_dir.config, record)
        progress = saved_progress(run_dir, schedule.during_training)  # may find it damaged
        run_dir.set_status(RUNNING)
        return progress

    def _info(self, progress: dict[str, Any] | None) -> RunInfo:
        path = self.run_dir.path
        config = self.config.model_dump(mode="json")
        return RunInfo(
            path,
            path.name,
            self.config.digest(),
            config,
            resumed=bool(progress),
            extra={"quiet": self.context.quiet},
        )

    def _end(
        self, events: RunEvents, status: str, metrics: dict | None = None, error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record the final status (the commit of a complete run), settle a redo, announce."""
        if status == INTERRUPTED:
            self.run_dir.set_status(status, message="interrupted; rerun the same command to resume")
        elif status == FAILED:
            self.run_dir.set_status(status, error=error, **(details or {}))
        else:
            self.run_dir.set_status(status)
        self.run_dir.settle(status)
        first_line = error.splitlines()[0] if error else None
        events.emit("shrinkbench_run_end", status=status, metrics=metrics, error=first_line)

    def _saved_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The masks to resume with (``masks.pt``); a damaged file is one clear error."""
        try:
            return load_masks(self.run_dir.masks, model)
        except MaskError as error:
            raise CheckpointError(
                f"cannot resume: {str(error).splitlines()[0][:300]}. Rerun with --force to "
                "start the run again."
            ) from None

    # -- the pipeline -------------------------------------------------------------
    def _run(self, schedule: Schedule, progress: dict[str, Any] | None) -> RunResult:
        ctx, config = self.context, self.config
        ctx.timer = timer = PhaseTimer((progress or {}).get("timings"))  # summed over segments
        if progress:
            ctx.stages = progress["stages"]
        model = ctx.build_model()
        classifier = self.resolved.model.classifier or find_classifier(model, ctx.example_input())
        prunable = prunable_parameters(model, config.prunable, classifier)
        compression_budget(model, prunable, config.compression)  # fail fast if unreachable
        changes = MaskChanges(ctx, model, prunable, done=(progress or {}).get("pruning_steps", 0))
        point = schedule.rewind_point()
        rewinder = Rewinder(*point) if point and not progress else None
        session = make_session(ctx, model, prunable, classifier, rewinder, changes)
        schedule_record(ctx, schedule, session)  # checked against the data before training

        resumed_from = None
        if progress:  # fine-tuning had committed an epoch: continue after it
            masks = {} if schedule.during_training else self._saved_masks(model)
            start_epoch = resumed_from = restore_model(model, self.run_dir)
            with timer.phase("dense"):  # the dense model, to time dense vs pruned
                ctx.dense_model = ctx.build_model()
                obtain_dense(ctx, ctx.dense_model)
        else:
            with timer.phase("dense"):
                ctx.stages["dense_source"] = obtain_dense(ctx, model, rewinder)
                ctx.dense_model = copy.deepcopy(model)
            measure(ctx, "dense", model, {}, prunable)
            with timer.phase("prune"):
                masks = run_pruning(ctx, schedule, session)
            if (
                not schedule.during_training
                or masks
                or not needs_pruning(model, config.compression)
            ):  # else "pruned" is measured at the first pruning step of fine-tuning
                measure(ctx, "pruned", model, masks, prunable)
            start_epoch = 0

        with timer.phase("finetune"):
            logs, masks = finetune(ctx, model, masks, schedule, session, changes, start_epoch)
        if schedule.during_training:
            write_masks(ctx, masks)
        metrics = finish(ctx, model, masks, prunable, logs)
        return RunResult(
            self.run_dir.path,
            metrics,
            resumed_from_epoch=resumed_from,
            timings=metrics["timings_seconds"],
        )


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``timeout``, Slurm, Kubernetes) raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

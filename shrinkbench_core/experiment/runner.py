"""The standardized pipeline: dense -> prune -> fine-tune -> evaluate, resumable.

Every strategy is compared from the same dense weights (see
:mod:`shrinkbench_core.experiment.dense`), with the same fine-tuning and the
same metrics. Randomness is split into seeds for model initialization, data
order, augmentation and pruning; each epoch reseeds from them, so an
interrupted run resumes to the same result as an uninterrupted one.

When pruning happens is the config's ``schedule``
(:mod:`shrinkbench_core.experiment.schedules`), usable with every strategy:

* ``oneshot``: prune once to the target, then fine-tune.
* ``iterative``: rounds of prune -> train (a fresh ``finetune.optimizer`` per
  round, its own cosine/step schedule over ``epochs_per_round``), optionally
  rewinding the surviving weights; the last round is followed by the regular
  fine-tuning. "pruned" metrics are those after the last round (and rewind).
  A run interrupted during the rounds restarts from the dense weights.
* ``gradual``: AGP pruning during fine-tuning; the "pruned" metrics are taken
  right after the first pruning step (the training randomness is left as if
  they were not measured). Masks and the AGP history are checkpointed every
  epoch, so an interrupted run resumes to the same result.
"""

from __future__ import annotations

import copy
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core import __version__
from shrinkbench_core.checkpoints import load_state_dict_file
from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import CheckpointError, ConfigError
from shrinkbench_core.experiment.atomic import atomic_torch_save, atomic_write_json, read_json
from shrinkbench_core.experiment.dense import (
    cached_dense_weights,
    cached_rewind_state,
    save_rewind_state,
)
from shrinkbench_core.experiment.evaluation import evaluate_stage
from shrinkbench_core.experiment.naming import run_name
from shrinkbench_core.experiment.resolve import ResolvedExperiment
from shrinkbench_core.experiment.rundir import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunDirectory
from shrinkbench_core.experiment.schedules import (
    GRADUAL_FIELDS,
    ITERATIVE_FIELDS,
    AGPController,
    PruningRound,
    Rewinder,
    compression_of_sparsity,
    model_sparsity,
    pruning_rounds,
    run_rounds,
)
from shrinkbench_core.experiment.training import (
    make_optimizer,
    make_scheduler,
    seeded_loader,
    train_epoch,
)
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.pruning import (
    apply_masks,
    compression_budget,
    find_classifier,
    hold_masks,
    load_masks,
    masks_summary,
    prunable_parameters,
    save_masks,
)

Masks = dict[str, torch.Tensor]
Pruner = Callable[[float], Masks]


@dataclass
class RunResult:
    """Where a run's results are and what they say."""

    path: Path
    metrics: dict[str, Any]
    already_complete: bool = False
    resumed_from_epoch: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


def seed_offset(stage: str) -> int:
    """Offset of a training stage's per-epoch seeds: ``dense``, ``finetune``, ``round<k>``."""
    if stage == "dense":
        return 0
    if stage == "finetune":
        return 100_000
    return 100_000 * (1 + int(stage.removeprefix("round")))


def rewind_key(rewinder: Rewinder) -> str:
    """Cache key of a rewind point: ``init``, ``epoch2``, ``iteration30``."""
    return "init" if rewinder.rewind == "init" else f"{rewinder.rewind}{rewinder.point}"


def needs_pruning(model: nn.Module, compression: float) -> bool:
    """Whether ``model`` has more nonzero parameters than ``compression`` allows."""
    params = list(model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    return nonzero > round(sum(p.numel() for p in params) / compression)


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def git_commit() -> str | None:
    """The commit of the source tree the core runs from, when it is a git checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def installed_version(distribution: str) -> str | None:
    """Version of an installed distribution, read from its metadata (no import: importing
    torchvision alone takes seconds, paid again by every sweep worker)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def versions(resolved: ResolvedExperiment) -> dict[str, Any]:
    """Versions of python, torch, the core and every plugin used, and the git commit."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": installed_version("torchvision"),
        "shrinkbench-core": __version__,
        "plugins": resolved.plugin_versions(),
        "git_commit": git_commit(),
    }


class Experiment:
    """One experiment, run in its own run directory."""

    def __init__(self, resolved: ResolvedExperiment, quiet: bool = False) -> None:
        self.resolved = resolved
        self.config = resolved.config
        self.seeds = self.config.seeds.resolve(self.config.seed)
        self.schedule = self.config.schedule
        self.quiet = quiet
        self.root = Path(self.config.output)
        self.run_dir = RunDirectory(self.root / "runs" / run_name(resolved))
        self.device = pick_device(self.config.device)
        self.dense_model: nn.Module | None = None  # kept to time dense vs pruned side by side

    # -- entry point ------------------------------------------------------------
    def run(self, force: bool = False) -> RunResult:
        """Run (or resume) the experiment; a completed run is only reported."""
        run_dir = self.run_dir
        if run_dir.is_complete and not force:
            return RunResult(run_dir.path, read_json(run_dir.metrics), already_complete=True)
        if force:
            run_dir.clear()
        run_dir.prepare()
        atomic_write_json(
            run_dir.config,
            {
                "digest": self.config.digest(),
                "config": self.config.model_dump(mode="json"),
                "seeds": self.seeds.model_dump(),
                "versions": versions(self.resolved),
            },
        )
        run_dir.set_status(RUNNING)
        try:
            result = self._run()
        except KeyboardInterrupt:
            run_dir.set_status(INTERRUPTED, message="interrupted; rerun the same command to resume")
            raise
        except BaseException as error:
            run_dir.set_status(FAILED, error=f"{type(error).__name__}: {error}")
            raise
        run_dir.set_status(COMPLETE)
        return result

    # -- building blocks ----------------------------------------------------------
    def build_data(self) -> DataSplits:
        """Build the dataset's splits from the registry."""
        spec, config = self.resolved.dataset, self.config.dataset
        params = spec.parameters(**config.params)
        return spec.load()(params, seed=self.seeds.data_order)

    def input_shape(self, splits: DataSplits) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(splits.input_shape or self.resolved.dataset.input_shape)

    def build_model(self, splits: DataSplits, pretrained: bool = True) -> nn.Module:
        """Build the model with the init seed; pretrained weights when asked for (and allowed)."""
        spec, config = self.resolved.model, self.config.model
        params = dict(config.params)
        if pretrained and self.config.dense.source == "pretrained":
            params["weights"] = self.config.dense.weights
        torch.manual_seed(self.seeds.init)
        model = spec.load()(
            spec.parameters(**params),
            num_classes=splits.num_classes or self.resolved.dataset.num_classes,
            input_shape=self.input_shape(splits),
        )
        return model.to(self.device)

    def loaders(self, splits: DataSplits) -> dict[str, Any]:
        """Evaluation loaders (no shuffling) for validation and test."""
        batch, workers = self.config.dataset.eval_batch_size, self.config.dataset.workers
        loaders = {"test": seeded_loader(splits.test, batch, workers, 0, shuffle=False)}
        if splits.validation is not None and len(splits.validation):
            loaders["validation"] = seeded_loader(
                splits.validation, batch, workers, 0, shuffle=False
            )
        return loaders

    def steps_per_epoch(self, splits: DataSplits) -> int:
        """Optimizer steps in one training epoch (the last batch may be smaller)."""
        return math.ceil(len(splits.train) / self.config.dataset.batch_size)

    def train_loader(self, splits: DataSplits, epoch: int, stage: str) -> Any:
        """The training loader of one epoch, ordered and augmented by that epoch's seeds.

        ``stage``: ``dense``, ``finetune`` or ``round<k>`` (training after
        iterative round ``k``); each has its own seeds.
        """
        offset = seed_offset(stage)
        torch.manual_seed(self.seeds.augmentation + offset + epoch)
        return seeded_loader(
            splits.train,
            self.config.dataset.batch_size,
            self.config.dataset.workers,
            self.seeds.data_order + offset + epoch,
            shuffle=True,
        )

    def calibration_batches(self, splits: DataSplits) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Seeded calibration batches from the un-augmented training data."""
        count = self.config.calibration_batches if self.resolved.strategy.needs_data else 0
        if count == 0:
            return []
        loader = seeded_loader(
            splits.train_eval, self.config.dataset.batch_size, 0, self.seeds.pruning, shuffle=True
        )
        batches = []
        for inputs, targets in loader:
            batches.append((inputs.to(self.device), targets.to(self.device)))
            if len(batches) == count:
                break
        return batches

    def context(
        self, model: nn.Module, splits: DataSplits, masks: dict, prunable: list[str], stage: str
    ) -> MetricContext:
        """What metrics are computed on at one stage."""
        example = splits.test[0][0].unsqueeze(0).to(self.device)
        return MetricContext(
            model=model,
            dense_model=self.dense_model if stage != "dense" else None,
            example_input=example,
            device=self.device,
            masks=masks,
            prunable=prunable,
            loaders=self.loaders(splits),
            stage=stage,
            batch_size=self.config.dataset.eval_batch_size,
        )

    def obtain_dense(
        self, model: nn.Module, splits: DataSplits, rewinder: Rewinder | None = None
    ) -> dict[str, Any]:
        """Load or train the dense weights; returns where they came from.

        With a ``rewinder``, the weights at its rewind point are recorded too:
        ``init`` from a fresh build with the init seed (the dense training's
        starting point when it is trained here); ``epoch``/``iteration`` while
        the dense model trains, cached next to the dense weights.
        """
        dense = self.config.dense
        if dense.source == "checkpoint":
            load_state_dict_file(model, dense.checkpoint or "")
            info: dict[str, Any] = {"source": "checkpoint", "checkpoint": dense.checkpoint}
            return self._record_init(rewinder, splits, info)
        if dense.source == "pretrained":
            info = {"source": "pretrained", "weights": dense.weights}
            return self._record_init(rewinder, splits, info)
        digest = self.config.dense_digest()
        cache = self.root / "dense" / digest[:16]
        rewinds_in_training = rewinder is not None and rewinder.rewind != "init"

        def train() -> dict[str, Any]:
            logs = self.train_dense(model, splits, rewinder if rewinds_in_training else None)
            if rewinder is not None and rewinds_in_training:
                save_rewind_state(cache, rewind_key(rewinder), rewinder.state_dict())
            return {"source": "train", "logs": logs}

        info, trained_now = cached_dense_weights(
            cache, model, train, {"digest": digest, "config": self.config.model_dump(mode="json")}
        )
        info = {
            "source": "train",
            "cache": str(cache),
            "digest": digest,
            "trained_now": trained_now,
        }
        if rewinder is not None and rewinds_in_training and not rewinder.recorded:
            state, _ = cached_rewind_state(
                cache, rewind_key(rewinder), lambda: self.replay_dense(splits, rewinder)
            )
            rewinder.load_state_dict(state)
        return self._record_init(rewinder, splits, info)

    def _record_init(
        self, rewinder: Rewinder | None, splits: DataSplits, info: dict[str, Any]
    ) -> dict[str, Any]:
        if rewinder is not None and rewinder.rewind == "init":
            rewinder.record(self.build_model(splits, pretrained=False))
        return info

    def replay_dense(self, splits: DataSplits, rewinder: Rewinder) -> dict[str, torch.Tensor]:
        """Dense training from scratch up to the rewind point (weights cached without it)."""
        self.train_dense(self.build_model(splits), splits, rewinder, until_recorded=True)
        return rewinder.state_dict()

    def train_dense(
        self,
        model: nn.Module,
        splits: DataSplits,
        rewinder: Rewinder | None = None,
        until_recorded: bool = False,
    ) -> list[dict[str, Any]]:
        """Train the dense model for ``dense.epochs`` epochs.

        ``rewinder`` records the weights at its rewind point on the way (which
        changes nothing in the training); ``until_recorded`` stops after the
        epoch in which they were recorded.
        """
        config = self.config.dense
        optimizer = make_optimizer(model, config.optimizer)
        scheduler = make_scheduler(optimizer, config)
        logs = []
        step = 0

        def after_step() -> None:
            nonlocal step
            step += 1
            if rewinder is not None and rewinder.rewind == "iteration":
                rewinder.maybe_record(model, iteration=step)

        if rewinder is not None:
            rewinder.maybe_record(model, epoch=0, iteration=0)
        for epoch in range(config.epochs):
            if until_recorded and rewinder is not None and rewinder.recorded:
                break
            loader = self.train_loader(splits, epoch, "dense")
            stats = train_epoch(
                model,
                loader,
                optimizer,
                self.device,
                f"dense {epoch + 1}/{config.epochs}",
                self.quiet,
                on_step=after_step,
            )
            scheduler.step()
            logs.append({"epoch": epoch + 1, **stats})
            if rewinder is not None and rewinder.rewind == "epoch":
                rewinder.maybe_record(model, epoch=epoch + 1)
        if rewinder is not None and not rewinder.recorded:
            raise RuntimeError(
                f"rewind point {rewinder.rewind} {rewinder.point} was never reached in "
                f"{config.epochs} dense epochs ({step} optimizer steps)"
            )
        return logs

    def check_schedule(self, splits: DataSplits) -> dict[str, Any]:
        """Check the schedule against the data size (fail before training); its record.

        The record is what ``metrics.json`` shows under ``schedule``: kind,
        label and the kind's settings (a gradual ``end_step`` filled in); the
        runs add ``rounds`` (iterative) or ``agp_history`` (gradual).
        """
        schedule, per_epoch = self.schedule, self.steps_per_epoch(splits)
        if schedule.rewind == "iteration":
            dense_steps = self.config.dense.epochs * per_epoch
            if schedule.rewind_point > dense_steps:
                raise ConfigError(
                    [
                        f"schedule.rewind_point: iteration {schedule.rewind_point} is after the "
                        f"last dense optimizer step ({self.config.dense.epochs} epochs x "
                        f"{per_epoch} steps = {dense_steps}); use 0..{dense_steps}"
                    ]
                )
        resolved = schedule.resolved(self.config.finetune.epochs * per_epoch)
        fields = {"iterative": ITERATIVE_FIELDS, "gradual": GRADUAL_FIELDS}.get(schedule.kind, ())
        return {
            "kind": schedule.kind,
            "label": schedule.label(),
            "settings": resolved.model_dump(mode="json", include=set(fields)),
        }

    # -- the pipeline -------------------------------------------------------------
    def _run(self) -> RunResult:
        run_dir, config = self.run_dir, self.config
        timings: dict[str, float] = {}
        started = time.perf_counter()
        splits = self.build_data()
        model = self.build_model(splits)
        example = splits.test[0][0].unsqueeze(0).to(self.device)
        classifier = self.resolved.model.classifier or find_classifier(model, example)
        prunable = prunable_parameters(model, config.prunable, classifier)
        compression_budget(model, prunable, config.compression)  # fail fast if unreachable
        schedule_record = self.check_schedule(splits)
        gradual = self.schedule.kind == "gradual"
        pruner = self.pruner(model, splits, prunable, classifier)
        progress = read_json(run_dir.progress) if run_dir.last_checkpoint.is_file() else None
        resumed_from = None
        if progress and (run_dir.masks.is_file() or gradual):
            masks = {} if gradual else load_masks(run_dir.masks, model)  # gradual: in last.pt
            stages = progress["stages"]
            stages.setdefault("schedule", schedule_record)
            start_epoch = self._restore(model, run_dir.last_checkpoint)
            resumed_from = start_epoch
            self.dense_model = self.build_model(splits)
            self.obtain_dense(self.dense_model, splits)
        else:
            stages = {}
            rewinder = Rewinder.from_schedule(self.schedule)
            stages["dense_source"] = self.obtain_dense(model, splits, rewinder)
            self.dense_model = copy.deepcopy(model)
            timings["dense"] = time.perf_counter() - started
            stages["dense"] = self.evaluate(model, splits, {}, prunable, "dense")
            stages["schedule"] = schedule_record
            masks = {}
            if not gradual:  # gradual pruning happens during fine-tuning
                masks = self.prune_in_rounds(model, splits, pruner, rewinder, schedule_record)
                self.save_masks(masks)
                stages["pruned"] = self.evaluate(model, splits, masks, prunable, "pruned")
            elif not needs_pruning(model, config.compression):
                # already at the target (compression 1): gradual pruning will never prune
                stages["pruned"] = self.evaluate(model, splits, masks, prunable, "pruned")
            start_epoch = 0
        timings["prune"] = time.perf_counter() - started
        gradual_controller = None
        if gradual:

            def gradual_controller(optimizer: torch.optim.Optimizer) -> AGPController:
                return self.agp_controller(model, optimizer, splits, pruner, prunable, stages)

        logs, masks = self.finetune(model, splits, masks, stages, start_epoch, gradual_controller)
        if gradual:
            self.save_masks(masks)
        stages["finetuned"] = self.evaluate(model, splits, masks, prunable, "finetuned")
        if run_dir.best_checkpoint.is_file():
            best = torch.load(run_dir.best_checkpoint, map_location="cpu", weights_only=True)
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(best["model"])
            stages["best_validation"] = {
                "epoch": best["epoch"],
                **self.evaluate(
                    best_model, splits, masks, prunable, "best_validation", accuracy_only=True
                ),
            }
        atomic_torch_save(model.state_dict(), run_dir.model)
        timings["total"] = time.perf_counter() - started
        metrics = self.summarize(stages, logs, timings)
        atomic_write_json(run_dir.metrics, metrics)
        return RunResult(run_dir.path, metrics, resumed_from_epoch=resumed_from, timings=timings)

    def evaluate(
        self,
        model: nn.Module,
        splits: DataSplits,
        masks: dict,
        prunable: list[str],
        stage: str,
        accuracy_only: bool = False,
    ) -> dict[str, Any]:
        """Every configured metric at one stage."""
        context = self.context(model, splits, masks, prunable, stage)
        specs = [m for m in self.resolved.metrics if not accuracy_only or m.name == "accuracy"]
        return evaluate_stage(
            context, specs, quiet=self.quiet, params=self.resolved.config.metric_params()
        )

    def pruner(
        self, model: nn.Module, splits: DataSplits, prunable: list[str], classifier: str | None
    ) -> Pruner:
        """``prune(c)``: apply the strategy at compression ``c`` to ``model``; return its masks.

        Each call builds the strategy afresh, reseeded with the pruning seed;
        the calibration batches are drawn once, at the first call.
        """
        spec = self.resolved.strategy
        input_shape = self.input_shape(splits)
        calibration: list[tuple[torch.Tensor, torch.Tensor]] | None = None

        def prune(compression: float) -> Masks:
            nonlocal calibration
            torch.manual_seed(self.seeds.pruning)
            if calibration is None:
                calibration = self.calibration_batches(splits)
            strategy = spec.load()(
                model,
                compression,
                params=spec.parameters(**self.config.strategy.params),
                calibration=calibration,
                prunable=prunable,
                classifier=classifier,
                seed=self.seeds.pruning,
                input_shape=input_shape,
            )
            masks = strategy.apply()
            if spec.structure == "channel":
                masks = self.complete_channels(model, masks, splits)
            return masks

        return prune

    def complete_channels(self, model: nn.Module, masks: Masks, splits: DataSplits) -> Masks:
        """Also mask removed channels' biases and BatchNorm entries, so they output exactly zero.

        Then the masked model equals its physically shrunk version. A model the
        tracer cannot follow keeps the weight-only masks (reported in the status).
        """
        from shrinkbench_core.errors import UserError
        from shrinkbench_core.pruning.structured import complete_channel_masks

        example = splits.test[0][0].unsqueeze(0).to(self.device)
        try:
            completed = complete_channel_masks(model, masks, example)
        except UserError as error:
            print(f"shrinkbench: note: channel masks not completed: {error}", file=sys.stderr)
            return masks
        apply_masks(model, completed)
        return completed

    def save_masks(self, masks: Masks) -> None:
        """Write ``masks.pt`` and ``masks_summary.csv``."""
        save_masks(masks, self.run_dir.masks)
        masks_summary(masks).to_csv(self.run_dir.masks_summary, index=False)

    def prune_in_rounds(
        self,
        model: nn.Module,
        splits: DataSplits,
        pruner: Pruner,
        rewinder: Rewinder | None,
        record: dict[str, Any],
    ) -> Masks:
        """One-shot or iterative pruning (with rewinding); iterative rounds go in ``record``."""
        rounds = pruning_rounds(self.schedule, self.config.compression)
        if self.schedule.kind == "oneshot":
            return run_rounds(model, rounds, pruner, lambda *_: None)
        history: list[dict[str, Any]] = record.setdefault("rounds", [])

        def prune(compression: float) -> Masks:
            masks = pruner(compression)
            history.append(
                {
                    "round": len(history) + 1,
                    "compression": compression,
                    "achieved": compression_of_sparsity(model_sparsity(model)),
                    "rewound": rewinder is not None,
                    "logs": [],
                }
            )
            return masks

        def train(pruning_round: PruningRound, masks: Masks) -> None:
            history[-1]["logs"] = self.train_round(model, splits, pruning_round, masks, len(rounds))

        return run_rounds(model, rounds, prune, train, rewinder)

    def train_round(
        self,
        model: nn.Module,
        splits: DataSplits,
        pruning_round: PruningRound,
        masks: Masks,
        rounds: int,
    ) -> list[dict[str, Any]]:
        """Train after an iterative round: a fresh ``finetune`` optimizer and LR schedule."""
        config = self.config.finetune.model_copy(update={"epochs": pruning_round.train_epochs})
        optimizer = make_optimizer(model, config.optimizer)
        scheduler = make_scheduler(optimizer, config)
        holder = hold_masks(model, masks, optimizer)
        logs = []
        try:
            for epoch in range(config.epochs):
                loader = self.train_loader(splits, epoch, f"round{pruning_round.index}")
                row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
                row.update(
                    train_epoch(
                        model,
                        loader,
                        optimizer,
                        self.device,
                        f"round {pruning_round.index}/{rounds} epoch {epoch + 1}/{config.epochs}",
                        self.quiet,
                    )
                )
                scheduler.step()
                logs.append(row)
        finally:
            holder.remove()
        return logs

    def agp_controller(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        splits: DataSplits,
        pruner: Pruner,
        prunable: list[str],
        stages: dict[str, Any],
    ) -> AGPController:
        """Gradual pruning of ``model`` during fine-tuning with ``optimizer``.

        The first pruning step also measures the "pruned" stage. Pruning and
        measuring run on a forked RNG, so the training randomness is the same
        as if neither happened mid-epoch.
        """
        steps = self.config.finetune.epochs * self.steps_per_epoch(splits)
        schedule = self.schedule.resolved(steps)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []

        def prune_step(compression: float) -> Masks:
            with torch.random.fork_rng(devices=devices):
                masks = pruner(compression)
                if "pruned" not in stages:
                    was_training = model.training
                    stages["pruned"] = self.evaluate(model, splits, masks, prunable, "pruned")
                    model.train(was_training)
            return masks

        return AGPController(model, optimizer, prune_step, self.config.compression, schedule)

    def finetune(
        self,
        model: nn.Module,
        splits: DataSplits,
        masks: dict[str, torch.Tensor],
        stages: dict[str, Any],
        start_epoch: int,
        gradual: Callable[[torch.optim.Optimizer], AGPController] | None = None,
    ) -> tuple[list[dict[str, Any]], Masks]:
        """Fine-tune with masks held; checkpoint every epoch; track the best validation epoch.

        With ``gradual`` (builds the AGP controller for the optimizer), the
        model is pruned during fine-tuning instead; its masks and history are
        checkpointed. Returns the logs and the final masks.
        """
        run_dir, config = self.run_dir, self.config.finetune
        optimizer = make_optimizer(model, config.optimizer)
        scheduler = make_scheduler(optimizer, config)
        logs: list[dict[str, Any]] = []
        best_score = float("-inf")
        state: dict[str, Any] = {}
        if start_epoch:
            state = torch.load(run_dir.last_checkpoint, map_location="cpu", weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            logs = read_json(run_dir.progress).get("logs", [])
            best_score = state.get("best_score", best_score)
        step = start_epoch * self.steps_per_epoch(splits)
        controller = gradual(optimizer) if gradual is not None else None
        holder = None
        if controller is None:
            holder = hold_masks(model, masks, optimizer)
        elif start_epoch:
            saved = {name: mask.bool() for name, mask in state.get("masks", {}).items()}
            controller.resume(saved, step, stages["schedule"].get("agp_history", []))
        else:
            controller.step(0)

        def after_step() -> None:
            nonlocal step
            step += 1
            if controller is not None:
                controller.step(step)

        loaders = self.loaders(splits)
        try:
            for epoch in range(start_epoch, config.epochs):
                loader = self.train_loader(splits, epoch, "finetune")
                row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
                row.update(
                    train_epoch(
                        model,
                        loader,
                        optimizer,
                        self.device,
                        f"fine-tune {epoch + 1}/{config.epochs}",
                        self.quiet,
                        on_step=after_step,
                    )
                )
                scheduler.step()
                if "validation" in loaders:
                    from shrinkbench_core.experiment.evaluation import accuracy_of

                    val = accuracy_of(model, loaders["validation"], self.device)
                    row.update({f"validation_{k}": v for k, v in val.items()})
                    if val["top1"] > best_score:
                        best_score = val["top1"]
                        atomic_torch_save(
                            {"model": model.state_dict(), "epoch": epoch + 1},
                            run_dir.best_checkpoint,
                        )
                logs.append(row)
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "best_score": best_score,
                }
                if controller is not None:
                    checkpoint["masks"] = {n: m.cpu() for n, m in controller.masks.items()}
                    stages["schedule"]["agp_history"] = controller.history
                atomic_torch_save(checkpoint, run_dir.last_checkpoint)
                atomic_write_json(
                    run_dir.progress, {"stages": stages, "logs": logs, "epoch": epoch + 1}
                )
                run_dir.write_logs(logs)
        finally:
            if holder is not None:
                holder.remove()
            if controller is not None:
                controller.remove()
        if controller is not None:
            masks = controller.masks
            stages["schedule"]["agp_history"] = controller.history
        if config.epochs == 0 or not run_dir.last_checkpoint.is_file():
            atomic_write_json(run_dir.progress, {"stages": stages, "logs": logs, "epoch": 0})
        return logs, masks

    def _restore(self, model: nn.Module, path: Path) -> int:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            return int(state["epoch"])
        except Exception as error:
            raise CheckpointError(
                f"cannot resume from {path}: {type(error).__name__}: {error}. "
                "Rerun with --force to start the run again."
            ) from None

    def summarize(
        self, stages: dict[str, Any], logs: list[dict[str, Any]], timings: dict[str, float]
    ) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        final = stages.get("finetuned", {})
        size = final.get("size", {})
        flops = final.get("flops", {})
        return {
            "digest": self.config.digest(),
            "compression": {
                "requested": self.config.compression,
                "achieved": size.get("compression_ratio"),
            },
            "theoretical_speedup": flops.get("theoretical_speedup"),
            "schedule": stages.get("schedule"),
            **{stage: value for stage, value in stages.items() if stage != "schedule"},
            "epochs": len(logs),
            "timings_seconds": timings,
        }

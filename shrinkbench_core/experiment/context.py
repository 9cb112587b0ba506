"""The state one run shares between its stages.

A :class:`RunContext` is built by :class:`~shrinkbench_core.experiment.runner.Experiment`
and handed to every stage (dense, pruning schedule, fine-tuning, evaluation). It knows the
resolved config, seeds, device, run directory and the run's event dispatcher, builds the
data and the model, gives each training stage its seeded loaders, and collects what the
stages produce: ``stages`` (the per-stage entries of ``metrics.json``) and the time of
each phase (``timer``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core.config import SeedConfig
from shrinkbench_core.data import DataSplits
from shrinkbench_core.experiment.distributed import in_process_group, sharded_loader, world_size
from shrinkbench_core.experiment.evaluation import evaluate_stage
from shrinkbench_core.experiment.loading import loader_settings
from shrinkbench_core.experiment.precision import to_channels_last
from shrinkbench_core.experiment.resolve import ResolvedExperiment
from shrinkbench_core.experiment.rundir import RunDirectory
from shrinkbench_core.experiment.timing import PhaseTimer
from shrinkbench_core.experiment.training import seeded_loader
from shrinkbench_core.metrics import MetricContext

Masks = dict[str, torch.Tensor]


def seed_offset(stage: str) -> int:
    """Offset of a training stage's per-epoch seeds: ``dense``, ``finetune``, ``round<k>``."""
    if stage == "dense":
        return 0
    if stage == "finetune":
        return 100_000
    return 100_000 * (1 + int(stage.removeprefix("round")))


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class NoEvents:
    """An event dispatcher that announces nothing (a context used outside a run)."""

    def emit(self, hook_name: str, **kwargs: Any) -> None:
        """Do nothing."""


@dataclass
class RunContext:
    """Config, seeds, device, data, model and results of one run, shared by its stages.

    ``user_model`` is a model the caller built (its initial weights are kept: every
    :meth:`build_model` returns a fresh copy of them); ``user_data`` splits the caller
    built. Without them the registry's components are built.
    """

    resolved: ResolvedExperiment
    run_dir: RunDirectory
    quiet: bool = False
    events: Any = field(default_factory=NoEvents)
    user_model: nn.Module | None = None
    user_data: DataSplits | None = None
    # filled in while the run goes
    splits: DataSplits | None = None
    dense_model: nn.Module | None = None  # kept to time dense vs pruned side by side
    stages: dict[str, Any] = field(default_factory=dict)
    timer: PhaseTimer = field(default_factory=PhaseTimer)

    def __post_init__(self) -> None:
        self.config = self.resolved.config
        self.seeds: SeedConfig = self.config.seeds.resolve(self.config.seed)
        self.device = pick_device(self.config.device)
        self.root = Path(self.config.output)

    # -- data ------------------------------------------------------------------
    def build_data(self) -> DataSplits:
        """The dataset's splits: the caller's, or built from the registry with the data seed."""
        if self.user_data is not None:
            return self.user_data
        spec, config = self.resolved.dataset, self.config.dataset
        return spec.load()(spec.parameters(**config.params), seed=self.seeds.data_order)

    def data(self) -> DataSplits:
        """The splits of this run (built once)."""
        if self.splits is None:
            self.splits = self.build_data()
        return self.splits

    def input_shape(self, splits: DataSplits | None = None) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        splits = splits or self.data()
        return tuple(splits.input_shape or self.resolved.dataset.input_shape)

    def num_classes(self, splits: DataSplits | None = None) -> int:
        """Number of classes (or vocabulary size) the model predicts."""
        splits = splits or self.data()
        return splits.num_classes or self.resolved.dataset.num_classes

    def example_input(self) -> torch.Tensor:
        """One test input with a batch dimension, on the run's device."""
        return self.data().test[0][0].unsqueeze(0).to(self.device)

    def steps_per_epoch(self, splits: DataSplits | None = None) -> int:
        """Optimizer steps in one training epoch (the last batch may be smaller)."""
        splits = splits or self.data()
        return math.ceil(len(splits.train) / self.config.dataset.batch_size)

    def loader_options(self, *, persistent: bool) -> tuple[int, dict[str, Any]]:
        """Worker count and DataLoader options for this run's device.

        ``dataset.workers`` (a count, or ``auto`` for the per-device default) sets the
        workers; pinned memory follows the device. ``persistent`` keeps workers alive
        between passes, for loaders that are iterated more than once.
        """
        workers = self.config.dataset.workers
        settings = loader_settings(
            self.device, None if workers == "auto" else workers, processes=world_size()
        )
        options = settings.kwargs()
        count = options.pop("num_workers")
        options["persistent_workers"] = persistent and count > 0
        return count, options

    def loaders(self, splits: DataSplits | None = None) -> dict[str, Any]:
        """Evaluation loaders (no shuffling) for validation and test."""
        splits = splits or self.data()
        batch = self.config.dataset.eval_batch_size
        workers, options = self.loader_options(persistent=True)
        loaders = {"test": seeded_loader(splits.test, batch, workers, 0, False, **options)}
        if splits.validation is not None and len(splits.validation):
            loaders["validation"] = seeded_loader(
                splits.validation, batch, workers, 0, False, **options
            )
        return loaders

    def train_loader(self, stage: str, epoch: int) -> Any:
        """The training loader of one epoch, ordered and augmented by that epoch's seeds.

        ``stage``: ``dense``, ``finetune`` or ``round<k>`` (training after iterative
        round ``k``); each has its own seeds.
        """
        offset = seed_offset(stage)
        torch.manual_seed(self.seeds.augmentation + offset + epoch)
        workers, options = self.loader_options(persistent=False)  # a new loader per epoch
        if in_process_group():  # torchrun: this rank's shard of each global batch
            return sharded_loader(
                self.data().train,
                self.config.dataset.batch_size,
                workers,
                self.seeds.data_order + offset + epoch,
                **options,
            )
        return seeded_loader(
            self.data().train,
            self.config.dataset.batch_size,
            workers,
            self.seeds.data_order + offset + epoch,
            shuffle=True,
            **options,
        )

    def calibration_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Seeded calibration batches from the un-augmented training data (``calibration.samples``
        examples when set, else ``calibration_batches`` batches)."""
        count, keep = self.config.calibration_draw()
        if count == 0 or not self.resolved.strategy.needs_data:
            return []
        with self.timer.phase("calibration"):
            return self._draw_calibration(count, keep)

    def _draw_calibration(
        self, count: int, keep: int | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = seeded_loader(
            self.data().train_eval,
            self.config.dataset.batch_size,
            0,
            self.seeds.pruning,
            shuffle=True,
        )
        batches = []
        for inputs, targets in loader:
            batches.append((inputs.to(self.device), targets.to(self.device)))
            if len(batches) == count:
                break
        surplus = sum(len(inputs) for inputs, _ in batches) - keep if keep is not None else 0
        while surplus > 0:  # cut from the end so that exactly `keep` examples remain
            inputs, targets = batches.pop()
            if len(inputs) > surplus:
                batches.append((inputs[: len(inputs) - surplus], targets[: len(inputs) - surplus]))
            surplus -= len(inputs)
        return batches

    # -- model -----------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        """A fresh model with its initial weights (the init seed; pretrained when asked)."""
        if self.user_model is not None:
            model = copy.deepcopy(self.user_model).to(self.device)
            return to_channels_last(model) if self.config.channels_last else model
        spec, config = self.resolved.model, self.config.model
        params = dict(config.params)
        if pretrained and self.config.dense.source == "pretrained":
            params["weights"] = self.config.dense.weights
        torch.manual_seed(self.seeds.init)
        model = spec.load()(
            spec.parameters(**params),
            num_classes=self.num_classes(),
            input_shape=self.input_shape(),
        )
        model = model.to(self.device)
        return to_channels_last(model) if self.config.channels_last else model

    # -- evaluation ------------------------------------------------------------
    def metric_context(
        self, model: nn.Module, masks: Masks, prunable: list[str], stage: str
    ) -> MetricContext:
        """What metrics are computed on at one stage."""
        return MetricContext(
            model=model,
            dense_model=self.dense_model if stage != "dense" else None,
            example_input=self.example_input(),
            device=self.device,
            masks=masks,
            prunable=prunable,
            loaders=self.loaders(),
            stage=stage,
            batch_size=self.config.dataset.eval_batch_size,
        )

    def evaluate(
        self,
        model: nn.Module,
        masks: Masks,
        prunable: list[str],
        stage: str,
        accuracy_only: bool = False,
    ) -> dict[str, Any]:
        """Every configured metric at one stage (only accuracy when asked)."""
        context = self.metric_context(model, masks, prunable, stage)
        specs = [m for m in self.resolved.metrics if not accuracy_only or m.name == "accuracy"]
        params = self.config.metric_params()
        with self.timer.phase("evaluate"):
            return evaluate_stage(context, specs, quiet=self.quiet, params=params)

    def emit(self, hook_name: str, **kwargs: Any) -> None:
        """Announce a run event to the lifecycle hooks (see :mod:`shrinkbench_core.lifecycle`)."""
        self.events.emit(hook_name, **kwargs)

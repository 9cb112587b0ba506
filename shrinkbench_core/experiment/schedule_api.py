"""What a pruning schedule is, and what it may ask of the run: the schedule contract.

A schedule decides *when* the masks change; the run's strategy decides *which* weights go.
A plugin adds one by registering a :class:`~shrinkbench_core.specs.ScheduleSpec`
(``shrinkbench_register_schedules``) whose factory is a :class:`Schedule` subclass. The
runner builds it as ``factory(params, compression=target)`` and drives it:

1. :meth:`Schedule.check` once the data is known (fail before training; its return value
   is the ``settings`` shown in ``metrics.json``);
2. the dense stage records the weights of :meth:`Schedule.rewind_point`, if any;
3. :meth:`Schedule.prune` before fine-tuning: prune, train rounds, rewind... and return the
   masks fine-tuning starts from (``{}``: start dense);
4. :meth:`Schedule.training_callback` at the start of fine-tuning: an object told before
   the first optimizer step and after every one (:class:`TrainingCallback`); it may change
   the masks at any step (gradual pruning, sparse training with SET/RigL updates).

Everything a schedule does goes through the :class:`ScheduleSession` it is given: prune to
a compression, train epochs with masks held, rewind, hold new masks, announce a mask
change. A schedule never touches the run directory; the runner checkpoints a training
callback's :meth:`TrainingCallback.state_dict` every epoch and hands it back on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from shrinkbench_core.experiment.training import TrainingStep
from shrinkbench_core.pruning.masks import MaskHolder, Masks

__all__ = ["Schedule", "ScheduleSession", "TrainingCallback", "TrainingStep"]


class ScheduleSession:
    """The run as a schedule sees it: the model, the target, and what it may do.

    Attributes:
        model: the model being pruned (on ``device``); weights are changed in place.
        device: its device.
        compression: the run's target compression (all parameters / nonzero ones).
        prunable: names of the parameters the strategy may mask.
        steps_per_epoch: optimizer steps in one training epoch.
        finetune_steps: optimizer steps of the whole fine-tuning stage.
        dense_epochs: epochs of dense training (when trained here).
        config: the run's :class:`~shrinkbench_core.config.ExperimentConfig` (read only).
        seeds: the run's resolved seeds (``init``, ``data_order``, ``augmentation``, ``pruning``).
        record: this schedule's entry of ``metrics.json`` (``kind``, ``label``, ``settings``);
            add what the schedule wants to report (e.g. its rounds).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        device: torch.device,
        compression: float,
        prunable: list[str],
        steps_per_epoch: int,
        finetune_steps: int,
        dense_epochs: int,
        config: Any,
        seeds: Any,
        record: dict[str, Any],
        prune: Callable[[float], Masks],
        train: Callable[[int, Masks, str], list[dict[str, Any]]],
        rewind: Callable[[Masks], None] | None,
        announce: Callable[[Masks, dict[str, Any]], None],
    ) -> None:
        self.model, self.device = model, device
        self.compression = float(compression)
        self.prunable = list(prunable)
        self.steps_per_epoch, self.finetune_steps = steps_per_epoch, finetune_steps
        self.dense_epochs = dense_epochs
        self.config, self.seeds, self.record = config, seeds, record
        self._prune, self._train, self._rewind, self._announce = prune, train, rewind, announce

    def prune_to(self, compression: float) -> Masks:
        """Apply the run's strategy to the model at ``compression``; return its masks.

        The strategy is built afresh (reseeded with the pruning seed) and scores the model
        as it is now; the returned masks are already applied (pruned entries are zero).
        Called during training, the training randomness is left as if it was not called.
        """
        return self._prune(compression)

    def train(self, epochs: int, masks: Masks, stage: str) -> list[dict[str, Any]]:
        """Train ``epochs`` epochs with ``masks`` held; return one log row per epoch.

        A fresh ``finetune.optimizer`` and learning-rate schedule over ``epochs``; the
        data order and augmentation are seeded by ``stage`` (``round<k>``, k >= 1) and
        the epoch. Each epoch is announced (``shrinkbench_epoch_end`` with ``stage``).
        """
        return self._train(epochs, masks, stage)

    @property
    def can_rewind(self) -> bool:
        """Whether weights were recorded at the schedule's :meth:`Schedule.rewind_point`."""
        return self._rewind is not None

    def rewind(self, masks: Masks) -> None:
        """Reset the model to the weights recorded at the rewind point, then apply ``masks``."""
        if self._rewind is None:
            raise RuntimeError("nothing to rewind to: the schedule declared no rewind_point()")
        self._rewind(masks)

    def hold(self, masks: Masks, optimizer: torch.optim.Optimizer) -> MaskHolder:
        """Apply ``masks`` now and keep them applied after every ``optimizer.step()``.

        Call ``.remove()`` on the result before holding other masks (for masks that
        change during training, e.g. regrown connections).
        """
        from shrinkbench_core.pruning.masks import hold_masks

        return hold_masks(self.model, masks, optimizer)

    def pruning_step(self, masks: Masks, **details: Any) -> None:
        """Announce that the masks changed (``shrinkbench_pruning_step``), with ``details``.

        The event carries the model's compression now, the masks' summary table and
        ``details`` (e.g. ``round=2`` or ``global_step=500, changed=1234``). The first
        change during fine-tuning is also when the run measures its "pruned" stage.
        """
        self._announce(masks, dict(details))

    def model_compression(self) -> float:
        """The model's compression now: all parameters / nonzero parameters."""
        params = list(self.model.parameters())
        nonzero = sum(int(torch.count_nonzero(p)) for p in params)
        total = sum(p.numel() for p in params)
        return total / nonzero if nonzero else float("inf")


class TrainingCallback:
    """A schedule's part in fine-tuning, created by :meth:`Schedule.training_callback`.

    The runner calls :meth:`start` once before the first optimizer step, :meth:`after_step`
    after every optimizer step, then :meth:`close`. After each epoch it adds
    :meth:`epoch_logs` to the epoch's log row, checkpoints :meth:`state_dict` and stores
    :meth:`record` in the schedule's ``metrics.json`` entry;
    on resume :meth:`start` receives the saved state. ``masks`` are the masks now in force;
    they are saved as ``masks.pt`` when the run ends.
    """

    masks: Masks

    def start(self, global_step: int, state: dict[str, Any] | None) -> None:
        """Before the first step: ``global_step`` steps are done; ``state`` is None unless
        resuming (then it is what :meth:`state_dict` returned at that point)."""

    def after_step(self, step: TrainingStep) -> None:
        """Right after ``optimizer.step()``; gradients are still in ``.grad``."""

    def state_dict(self) -> dict[str, Any]:
        """What to checkpoint to resume (tensors, numbers, strings, lists and dicts)."""
        return {"masks": {name: mask.cpu() for name, mask in self.masks.items()}}

    def record(self) -> dict[str, Any]:
        """JSON-friendly facts merged into the schedule's ``metrics.json`` entry."""
        return {}

    def epoch_logs(self) -> dict[str, Any]:
        """Columns added to this epoch's ``logs.csv`` row (e.g. masks changed this epoch)."""
        return {}

    def close(self) -> None:
        """Fine-tuning ended (or failed): stop holding masks, drop hooks."""


class Schedule:
    """Base class of pruning schedules (one-shot, iterative, gradual, sparse training...).

    Subclasses set ``during_training = True`` when their masks change while the model
    fine-tunes, and override what they need; the default is one-shot pruning.

    Args:
        params: an instance of the spec's ``parameters`` model.
        compression: the run's target compression.
    """

    during_training: ClassVar[bool] = False

    def __init__(self, params: BaseModel, *, compression: float) -> None:
        self.params = params
        self.compression = float(compression)

    def check(self, session: ScheduleSession) -> dict[str, Any]:
        """Check the settings against the data size and epochs; return them for metrics.json.

        Raise :class:`shrinkbench_core.errors.ConfigError` with ``schedule.<field>: problem``
        lines for settings that cannot work; nothing has trained yet.
        """
        return self.params.model_dump(mode="json")

    def rewind_point(self) -> tuple[str, int] | None:
        """Weights to record during the dense stage: ``("init", 0)``, ``("epoch", k)``,
        ``("iteration", k)``; None (default) when the schedule never rewinds."""
        return None

    def prune(self, session: ScheduleSession) -> Masks:
        """Everything before fine-tuning; return the masks fine-tuning starts from."""
        masks = session.prune_to(self.compression)
        session.pruning_step(masks)
        return masks

    def training_callback(
        self, session: ScheduleSession, optimizer: torch.optim.Optimizer, masks: Masks
    ) -> TrainingCallback | None:
        """The callback that changes masks during fine-tuning, or None (masks held as they
        are). ``masks`` are those :meth:`prune` returned; ``optimizer`` is fine-tuning's."""
        return None

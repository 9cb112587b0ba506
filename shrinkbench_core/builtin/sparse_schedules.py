"""Sparse training as schedules: ``static``, ``set`` and ``rigl``.

The model is made sparse before fine-tuning (the "training" of a sparse-from-scratch run
is the fine-tuning stage; use ``-p dense.epochs=0`` to start from the initialization): each
layer keeps its share of the run's budget (ERK or uniform densities, the exact number of
weights the target compression allows), chosen at random or by magnitude, or the run's
strategy chooses the mask. ``static`` then holds that mask; ``set`` and ``rigl`` move it
every ``update_interval`` optimizer steps with
:class:`~shrinkbench_core.pruning.sparse_training.DynamicSparsity`, announcing each update
(``shrinkbench_pruning_step`` with ``global_step`` and ``changed``) and reporting them under
``sparse_updates`` in ``metrics.json`` and as ``mask_changes`` per epoch.
"""

from __future__ import annotations

from typing import Any

import torch

from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment.schedule_api import (
    Schedule,
    ScheduleSession,
    TrainingCallback,
    TrainingStep,
)
from shrinkbench_core.pruning.compression import compression_budget
from shrinkbench_core.pruning.masks import Masks, apply_masks
from shrinkbench_core.pruning.sparse_training import DynamicSparsity, initial_masks


class StaticSparse(Schedule):
    """A sparse mask chosen before training and held unchanged."""

    method = "static"

    def prune(self, session: ScheduleSession) -> Masks:
        """The initial sparse mask at exactly the budget, applied to the model."""
        params = self.params
        if params.init == "strategy":
            masks = session.prune_to(self.compression)
        else:
            budget = compression_budget(session.model, session.prunable, self.compression)
            named = dict(session.model.named_parameters())
            masks = initial_masks(
                {name: named[name] for name in session.prunable},
                budget.keep,
                params.distribution,
                params.init,
                seed=session.seeds.pruning,
            )
            apply_masks(session.model, masks)
        session.pruning_step(masks, init=params.init, distribution=params.distribution)
        return masks


class _Dynamic(StaticSparse):
    """Shared by SET and RigL: the initial mask, then updates during fine-tuning."""

    during_training = True

    def check(self, session: ScheduleSession) -> dict[str, Any]:
        """At least one update must fall before the updates stop."""
        params = self.params
        end_step = int(params.stop_fraction * session.finetune_steps)
        if params.update_interval >= end_step:
            raise ConfigError(
                [
                    f"schedule.update_interval: {params.update_interval} steps leaves no mask "
                    f"update: fine-tuning has {session.finetune_steps} steps and updates stop "
                    f"at step {end_step} (stop_fraction {params.stop_fraction:g}); use an "
                    f"interval below {max(end_step, 1)} or more fine-tuning epochs"
                ]
            )
        return params.model_dump(mode="json")

    def training_callback(
        self, session: ScheduleSession, optimizer: torch.optim.Optimizer, masks: Masks
    ) -> TrainingCallback:
        """Moves the masks every ``update_interval`` steps."""
        return SparseTrainingCallback(self, session, optimizer, masks)


class SET(_Dynamic):
    """Sparse Evolutionary Training (Mocanu et al. 2018): regrow at random."""

    method = "set"


class RigL(_Dynamic):
    """RigL (Evci et al. 2020): regrow where the dense gradient is largest."""

    method = "rigl"


class SparseTrainingCallback(TrainingCallback):
    """Runs :class:`DynamicSparsity` from the fine-tuning loop; checkpointable."""

    def __init__(
        self,
        schedule: _Dynamic,
        session: ScheduleSession,
        optimizer: torch.optim.Optimizer,
        masks: Masks,
    ) -> None:
        self.schedule, self.session, self.optimizer = schedule, session, optimizer
        self.initial = masks
        self.engine: DynamicSparsity | None = None
        self.history: list[dict[str, Any]] = []
        self.reported = 0  # history entries already counted in an epoch's logs

    @property
    def masks(self) -> Masks:  # type: ignore[override]
        """The masks in force."""
        return self.engine.masks if self.engine is not None else self.initial

    def start(self, global_step: int, state: dict[str, Any] | None) -> None:
        """Hold the initial masks, or those of the checkpoint when resuming."""
        params = self.schedule.params
        masks = self.initial
        if state is not None:
            masks = {name: mask.bool() for name, mask in state["masks"].items()}
            self.history = [dict(entry) for entry in state.get("history", [])]
            self.reported = len(self.history)
        self.engine = DynamicSparsity(
            self.session.model,
            masks,
            self.optimizer,
            self.schedule.method,
            total_steps=self.session.finetune_steps,
            drop_fraction=params.drop_fraction,
            update_interval=params.update_interval,
            stop_fraction=params.stop_fraction,
            seed=self.session.seeds.pruning,
        )
        if state is not None and state.get("generator") is not None:
            self.engine.generator.set_state(state["generator"])

    def after_step(self, step: TrainingStep) -> None:
        """Drop and regrow when the step is due; announce the update."""
        assert self.engine is not None
        if not self.engine.due(step.global_step):
            return
        update = self.engine.update(step.global_step)
        self.history.append(
            {"global_step": update.step, "drop_fraction": update.drop_fraction,
             "changed": update.changed}
        )
        self.session.pruning_step(
            self.engine.masks, global_step=update.step, changed=update.changed,
            drop_fraction=update.drop_fraction,
        )

    def epoch_logs(self) -> dict[str, Any]:
        """``mask_changes``: mask entries changed by the updates since the last call."""
        new = self.history[self.reported:]
        self.reported = len(self.history)
        return {"mask_changes": sum(entry["changed"] for entry in new)}

    def state_dict(self) -> dict[str, Any]:
        """Masks, the regrowth generator and the update history."""
        return {
            "masks": {name: mask.cpu() for name, mask in self.masks.items()},
            "generator": self.engine.generator.get_state() if self.engine else None,
            "history": [dict(entry) for entry in self.history],
        }

    def record(self) -> dict[str, Any]:
        """``sparse_updates``: every update's step, drop fraction and changed entries."""
        return {
            "sparse_updates": [dict(entry) for entry in self.history],
            "mask_changes": sum(entry["changed"] for entry in self.history),
        }

    def close(self) -> None:
        """Stop holding the masks."""
        if self.engine is not None:
            self.engine.remove()

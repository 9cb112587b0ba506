"""The built-in schedules, on the contract of :mod:`shrinkbench_core.experiment.schedule_api`.

* :class:`OneShot`: prune once to the target, then fine-tune.
* :class:`Iterative`: rounds of prune -> train (a fresh fine-tuning optimizer per round),
  the compression growing geometrically to exactly the target at the last round, the
  surviving weights optionally rewound after each pruning step; the last round is followed
  by the regular fine-tuning. Its rounds are reported under ``rounds``.
* :class:`Gradual`: AGP pruning during fine-tuning (Zhu & Gupta 2017), reported under
  ``agp_history``; its state (masks and history) is checkpointed every epoch.
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
from shrinkbench_core.experiment.schedule_config import ScheduleConfig
from shrinkbench_core.experiment.schedules import (
    AGPController,
    compression_of_sparsity,
    model_sparsity,
    pruning_rounds,
)
from shrinkbench_core.pruning.masks import Masks


class OneShot(Schedule):
    """Prune once to the target compression."""

    def check(self, session: ScheduleSession) -> dict[str, Any]:
        """No settings."""
        return {}


class Iterative(Schedule):
    """Rounds of prune -> train, optionally rewinding the surviving weights."""

    def config(self) -> ScheduleConfig:
        """These settings as a ``schedule`` section."""
        return ScheduleConfig(kind="iterative", **self.params.model_dump())

    def check(self, session: ScheduleSession) -> dict[str, Any]:
        """An iteration rewind point must lie within dense training."""
        params = self.params
        if params.rewind == "iteration":
            dense_steps = session.dense_epochs * session.steps_per_epoch
            if params.rewind_point > dense_steps:
                raise ConfigError(
                    [
                        f"schedule.rewind_point: iteration {params.rewind_point} is after the "
                        f"last dense optimizer step ({session.dense_epochs} epochs x "
                        f"{session.steps_per_epoch} steps = {dense_steps}); use 0..{dense_steps}"
                    ]
                )
        return params.model_dump(mode="json")

    def rewind_point(self) -> tuple[str, int] | None:
        """``rewind`` and ``rewind_point``, unless ``rewind = 'none'``."""
        if self.params.rewind == "none":
            return None
        return self.params.rewind, self.params.rewind_point

    def prune(self, session: ScheduleSession) -> Masks:
        """Prune, rewind, train; round after round."""
        history: list[dict[str, Any]] = session.record.setdefault("rounds", [])
        masks: Masks = {}
        for pruning_round in pruning_rounds(self.config(), self.compression):
            masks = session.prune_to(pruning_round.compression)
            history.append(
                {
                    "round": pruning_round.index,
                    "compression": pruning_round.compression,
                    "achieved": compression_of_sparsity(model_sparsity(session.model)),
                    "rewound": session.can_rewind,
                    "logs": [],
                }
            )
            if session.can_rewind:
                session.rewind(masks)
            session.pruning_step(masks, round=pruning_round.index, target=pruning_round.compression)
            if pruning_round.train_epochs > 0:
                history[-1]["logs"] = session.train(
                    pruning_round.train_epochs, masks, f"round{pruning_round.index}"
                )
        return masks


class Gradual(Schedule):
    """AGP: the cubic sparsity schedule, applied during fine-tuning."""

    during_training = True

    def config(self, total_steps: int) -> ScheduleConfig:
        """These settings as a ``schedule`` section, ``end_step`` filled in and checked."""
        return ScheduleConfig(kind="gradual", **self.params.model_dump()).resolved(total_steps)

    def check(self, session: ScheduleSession) -> dict[str, Any]:
        """The steps must fit in fine-tuning; ``end_step`` defaults to its last step."""
        resolved = self.config(session.finetune_steps)
        return {name: getattr(resolved, name) for name in type(self.params).model_fields}

    def prune(self, session: ScheduleSession) -> Masks:
        """Nothing before fine-tuning: the model starts dense."""
        return {}

    def training_callback(
        self, session: ScheduleSession, optimizer: torch.optim.Optimizer, masks: Masks
    ) -> TrainingCallback:
        """An AGP controller that prunes when the scheduled sparsity rises."""
        return GradualCallback(
            session, optimizer, self.compression, self.config(session.finetune_steps)
        )


class GradualCallback(TrainingCallback):
    """Runs an :class:`AGPController` from the fine-tuning loop."""

    def __init__(
        self,
        session: ScheduleSession,
        optimizer: torch.optim.Optimizer,
        compression: float,
        schedule: ScheduleConfig,
    ) -> None:
        self.session = session
        self.controller = AGPController(
            session.model, optimizer, session.prune_to, compression, schedule
        )

    @property
    def masks(self) -> Masks:  # type: ignore[override]
        """The masks in force."""
        return self.controller.masks

    def start(self, global_step: int, state: dict[str, Any] | None) -> None:
        """Prune at step 0 when due; or continue from a checkpoint."""
        if state is None:
            self._step(global_step)
            return
        masks = {name: mask.bool() for name, mask in state.get("masks", {}).items()}
        self.controller.resume(masks, global_step, state.get("history", []))

    def after_step(self, step: TrainingStep) -> None:
        """Prune when the scheduled sparsity rose."""
        self._step(step.global_step)

    def _step(self, global_step: int) -> None:
        if self.controller.step(global_step):
            entry = self.controller.history[-1]
            self.session.pruning_step(
                self.controller.masks,
                global_step=global_step,
                scheduled_sparsity=entry["scheduled_sparsity"],
            )

    def state_dict(self) -> dict[str, Any]:
        """Masks and the history of pruning steps."""
        return {
            "masks": {name: mask.cpu() for name, mask in self.controller.masks.items()},
            "history": [dict(entry) for entry in self.controller.history],
        }

    def record(self) -> dict[str, Any]:
        """``agp_history``: every pruning step with its scheduled and reached sparsity."""
        return {"agp_history": [dict(entry) for entry in self.controller.history]}

    def close(self) -> None:
        """Stop holding the masks."""
        self.controller.remove()

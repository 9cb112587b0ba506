"""Pruning schedules: one-shot, iterative (with rewinding) and gradual (AGP).

Pure logic the runner calls; every schedule works with every strategy because
strategies are only ever asked for masks at a compression ratio.

* ``oneshot`` (default): prune once to the target, then fine-tune.
* ``iterative``: ``rounds`` rounds of prune -> train, the compression growing
  geometrically to exactly the target at the last round; optionally the
  surviving weights are rewound after each pruning step to the weights
  recorded at initialization or at epoch / iteration ``rewind_point`` of dense
  training (Frankle & Carbin 2019; Frankle et al. 2020).
* ``gradual``: pruning during fine-tuning with the cubic schedule of Zhu &
  Gupta (2017), ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3``.

Sparsity here is the fraction of *all* parameters that are zero, so
``compression = 1 / (1 - sparsity)`` (the paper's ratio; see
:mod:`shrinkbench_core.pruning.compression`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from shrinkbench_core.experiment.schedule_config import (
    GRADUAL_FIELDS,
    ITERATIVE_FIELDS,
    ScheduleConfig,
)
from shrinkbench_core.pruning.masks import MaskHolder, Masks, apply_masks, hold_masks

__all__ = [
    "GRADUAL_FIELDS",
    "ITERATIVE_FIELDS",
    "AGPController",
    "PruningRound",
    "Rewinder",
    "ScheduleConfig",
    "agp_pruning_steps",
    "agp_sparsity",
    "compression_of_sparsity",
    "geometric_compressions",
    "model_sparsity",
    "pruning_rounds",
    "run_rounds",
]


# -- iterative ---------------------------------------------------------------
def geometric_compressions(target: float, rounds: int) -> list[float]:
    """Compression after each round, ``target ** (k / rounds)``; the last is exactly ``target``."""
    if not target >= 1:
        raise ValueError(f"target compression must be >= 1, got {target}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    out = [target ** (k / rounds) for k in range(1, rounds)]
    return [*out, float(target)]


@dataclass(frozen=True)
class PruningRound:
    """One round: prune to ``compression``, then train ``train_epochs`` (0 for the last)."""

    index: int  # 1-based
    compression: float
    train_epochs: int
    last: bool


def pruning_rounds(schedule: ScheduleConfig, target: float) -> list[PruningRound]:
    """The rounds of a ``oneshot`` (one round) or ``iterative`` schedule.

    The last round is never followed by training here: the regular fine-tuning
    stage follows it, as for one-shot pruning.
    """
    if schedule.kind == "gradual":
        raise ValueError("gradual pruning has no rounds; use AGPController")
    if schedule.kind == "oneshot":
        return [PruningRound(1, float(target), 0, True)]
    compressions = geometric_compressions(target, schedule.rounds)
    return [
        PruningRound(
            k, c, 0 if k == len(compressions) else schedule.epochs_per_round, k == len(compressions)
        )
        for k, c in enumerate(compressions, start=1)
    ]


def run_rounds(
    model: nn.Module,
    rounds: list[PruningRound],
    prune: Callable[[float], Masks],
    train: Callable[[PruningRound, Masks], Any],
    rewinder: Rewinder | None = None,
) -> Masks:
    """Run ``rounds``: ``prune(c)`` (strategy.apply at c), rewind, ``train(round, masks)``.

    ``train`` is called only for rounds with ``train_epochs > 0`` and must hold
    the masks (e.g. with :func:`hold_masks`). Returns the last round's masks.
    """
    masks: Masks = {}
    for pruning_round in rounds:
        masks = prune(pruning_round.compression)
        if rewinder is not None:
            rewinder.restore(model, masks)
        if pruning_round.train_epochs > 0:
            train(pruning_round, masks)
    return masks


class Rewinder:
    """Weights recorded at the rewind point, restored for the unpruned entries.

    ``rewind``: ``init`` (before any training step), ``epoch`` (after
    ``point`` dense epochs) or ``iteration`` (after ``point`` dense optimizer
    steps). Parameters and, with ``buffers=True``, buffers (BatchNorm
    statistics) are recorded, as lottery-ticket rewinding resets the whole state.
    """

    def __init__(
        self, rewind: Literal["init", "epoch", "iteration"], point: int = 0, buffers: bool = True
    ) -> None:
        if rewind not in ("init", "epoch", "iteration"):
            raise ValueError(f"rewind must be 'init', 'epoch' or 'iteration', got {rewind!r}")
        self.rewind = rewind
        self.point = 0 if rewind == "init" else int(point)
        self.buffers = buffers
        self._state: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_schedule(cls, schedule: ScheduleConfig) -> Rewinder | None:
        """The schedule's rewinder, or ``None`` when it does not rewind."""
        if schedule.kind != "iterative" or schedule.rewind == "none":
            return None
        return cls(schedule.rewind, schedule.rewind_point)

    @property
    def recorded(self) -> bool:
        """Whether the weights have been recorded."""
        return self._state is not None

    def due(self, *, epoch: int = 0, iteration: int = 0) -> bool:
        """Whether the state after ``epoch`` epochs / ``iteration`` steps is the rewind point."""
        if self.rewind == "iteration":
            return iteration == self.point
        return epoch == self.point and (self.rewind == "epoch" or iteration == 0)

    def maybe_record(self, model: nn.Module, *, epoch: int = 0, iteration: int = 0) -> bool:
        """Record ``model`` if this is the rewind point and nothing is recorded yet."""
        if self.recorded or not self.due(epoch=epoch, iteration=iteration):
            return False
        self.record(model)
        return True

    def record(self, model: nn.Module) -> None:
        """Copy the model's parameters (and buffers) now."""
        state = {name: p.detach().clone() for name, p in model.named_parameters()}
        if self.buffers:
            state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
        self._state = state

    @torch.no_grad()
    def restore(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        """Load the recorded weights into ``model``, then zero the entries ``masks`` prune."""
        if self._state is None:
            raise RuntimeError(
                f"nothing recorded to rewind to ({self.rewind} {self.point}); "
                "call record() at the rewind point"
            )
        for name, param in model.named_parameters():
            param.copy_(self._state[name])
        if self.buffers:
            for name, buffer in model.named_buffers():
                buffer.copy_(self._state[f"buffer:{name}"])
        apply_masks(model, masks)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The recorded tensors (to save next to the dense weights)."""
        if self._state is None:
            raise RuntimeError("nothing recorded yet")
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a recording saved with :meth:`state_dict`."""
        self._state = dict(state)


# -- gradual (AGP) -----------------------------------------------------------
def agp_sparsity(
    step: int,
    final_sparsity: float,
    start_step: int,
    end_step: int,
    frequency: int,
    initial_sparsity: float = 0.0,
) -> float:
    """Sparsity of Zhu & Gupta (2017) in force after optimizer step ``step``.

    ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (end - t0))^3`` at the pruning
    steps ``t = t0, t0 + frequency, ...`` and at ``end`` (``end - t0 = n dt``
    when ``frequency`` divides it, as in the paper); constant in between;
    ``0`` before ``t0`` and ``s_f`` from ``end`` on.
    """
    if not 0 <= initial_sparsity <= final_sparsity < 1:
        raise ValueError(
            f"need 0 <= initial_sparsity <= final_sparsity < 1, got {initial_sparsity}, "
            f"{final_sparsity}"
        )
    if frequency < 1 or end_step < start_step:
        raise ValueError(
            f"need frequency >= 1 and end_step >= start_step, got {frequency}, "
            f"{start_step}..{end_step}"
        )
    if step < start_step:
        return 0.0
    if step >= end_step:
        return float(final_sparsity)
    last = start_step + (step - start_step) // frequency * frequency
    progress = (last - start_step) / (end_step - start_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1 - progress) ** 3


def agp_pruning_steps(start_step: int, end_step: int, frequency: int) -> list[int]:
    """The steps at which AGP prunes: ``t0, t0 + frequency, ... < end`` and ``end``."""
    return [*range(start_step, end_step, frequency), end_step]


def _nonzero_and_total(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(int(torch.count_nonzero(p)) for p in params), sum(p.numel() for p in params)


def model_sparsity(model: nn.Module) -> float:
    """Fraction of all parameters of ``model`` that are zero."""
    nonzero, total = _nonzero_and_total(model)
    return 1 - nonzero / total if total else 0.0


class AGPController:
    """Gradual pruning from a training loop (Zhu & Gupta 2017).

    Args:
        model: the model being trained (pruned in place).
        optimizer: its optimizer; the masks are held after each of its steps.
        prune: ``prune(c)`` computes *and applies* the strategy's masks at
            compression ``c`` (``strategy.apply()`` on ``model``) and returns them.
        target_compression: the compression reached at ``end_step``.
        schedule: a ``gradual`` schedule resolved with its ``end_step``
            (:meth:`ScheduleConfig.resolved`).

    Call :meth:`step` with ``0`` before the first optimizer step and with ``k``
    after the ``k``-th. When the scheduled sparsity ``s_t`` rises, the model is
    pruned to ``1 / (1 - s_t)`` (exactly ``target_compression`` at the end) and
    the new masks replace the held ones (a fresh :class:`MaskHolder`).
    Strategies never revive pruned weights, so each mask set is a subset of the
    previous one.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        prune: Callable[[float], Masks],
        target_compression: float,
        schedule: ScheduleConfig,
    ) -> None:
        if schedule.kind != "gradual" or schedule.end_step is None:
            raise ValueError("AGPController needs a gradual schedule resolved with an end_step")
        if not target_compression >= 1:
            raise ValueError(f"target compression must be >= 1, got {target_compression}")
        self.model, self.optimizer, self.prune = model, optimizer, prune
        self.target_compression = float(target_compression)
        self.schedule = schedule
        self.final_sparsity = 1 - 1 / self.target_compression
        self.masks: Masks = {}
        self.holder: MaskHolder | None = None
        self.history: list[dict[str, float]] = []
        self._scheduled = 0.0

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity after optimizer step ``step``."""
        s = self.schedule
        initial = min(s.initial_sparsity, self.final_sparsity)
        return agp_sparsity(
            step, self.final_sparsity, s.start_step, s.end_step or 0, s.frequency, initial
        )

    def compression_at(self, step: int) -> float:
        """The compression ratio scheduled after ``step`` (exactly the target at the end)."""
        sparsity = self.sparsity_at(step)
        if sparsity >= self.final_sparsity:
            return self.target_compression
        return compression_of_sparsity(sparsity)

    def step(self, global_step: int) -> bool:
        """Prune if the scheduled sparsity rose at ``global_step``; return whether it did."""
        sparsity = self.sparsity_at(global_step)
        if sparsity <= self._scheduled:
            return False
        self._scheduled = sparsity
        compression = self.compression_at(global_step)
        nonzero, total = _nonzero_and_total(self.model)
        if round(total / compression) >= nonzero:
            return False  # the model is already at least this sparse
        self.masks = self.prune(compression)
        if self.holder is not None:
            self.holder.remove()
        self.holder = hold_masks(self.model, self.masks, self.optimizer)
        self.history.append(
            {
                "step": global_step,
                "scheduled_sparsity": sparsity,
                "compression": compression,
                "sparsity": model_sparsity(self.model),
            }
        )
        return True

    def resume(
        self, masks: Masks, global_step: int, history: list[dict[str, float]] | None = None
    ) -> None:
        """Continue after ``global_step`` with ``masks`` (and ``history``) from a checkpoint."""
        self.masks = dict(masks)
        if history is not None:
            self.history = [dict(entry) for entry in history]
        if self.holder is not None:
            self.holder.remove()
        self.holder = hold_masks(self.model, self.masks, self.optimizer) if masks else None
        self._scheduled = self.sparsity_at(global_step)

    def remove(self) -> None:
        """Stop holding the masks."""
        if self.holder is not None:
            self.holder.remove()
            self.holder = None


def compression_of_sparsity(sparsity: float) -> float:
    """``1 / (1 - sparsity)``; ``inf`` for sparsity 1."""
    return math.inf if sparsity >= 1 else 1 / (1 - sparsity)

"""Specs of the sparse-training schedules: ``static``, ``set``, ``rigl`` (torch-free).

The implementations are in :mod:`shrinkbench_core.builtin.sparse_schedules`, the engine in
:mod:`shrinkbench_core.pruning.sparse_training`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shrinkbench_core.specs import ScheduleSpec


class StaticParameters(BaseModel):
    """A sparse mask fixed before training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: Literal["erk", "uniform"] = Field(
        default="erk",
        description="Layer densities: 'erk' (Erdos-Renyi-Kernel) or 'uniform' (the same in "
        "every layer). Ignored with init='strategy'.",
    )
    init: Literal["random", "magnitude", "strategy"] = Field(
        default="random",
        description="Initial mask within each layer: 'random' (pruning seed), 'magnitude' "
        "(largest |w|), or 'strategy' (the run's strategy chooses the whole mask).",
    )


class DynamicParameters(StaticParameters):
    """A sparse mask updated during training at constant sparsity."""

    drop_fraction: float = Field(
        default=0.3, gt=0, le=1,
        description="Fraction of each layer's active weights replaced at the first update; "
        "decays to 0 with a cosine.",
    )
    update_interval: int = Field(default=100, ge=1, description="Optimizer steps between updates.")
    stop_fraction: float = Field(
        default=0.75, gt=0, le=1, description="Updates stop after this fraction of training steps."
    )


def sparse_schedule_specs() -> list[ScheduleSpec]:
    """The sparse-training schedules."""
    factory = "shrinkbench_core.builtin.sparse_schedules"
    return [
        ScheduleSpec(
            name="static",
            summary="Sparse from the start with a fixed mask (random or magnitude, ERK or "
            "uniform layer densities).",
            factory=f"{factory}:StaticSparse",
            parameters=StaticParameters,
            during_training=True,
            reference="Evci et al. 2020 (the 'static' baseline)",
        ),
        ScheduleSpec(
            name="set",
            summary="Sparse Evolutionary Training: drop the smallest |w|, regrow at random.",
            factory=f"{factory}:SET",
            parameters=DynamicParameters,
            during_training=True,
            reference="Mocanu et al. 2018, Nature Communications",
        ),
        ScheduleSpec(
            name="rigl",
            summary="RigL: drop the smallest |w|, regrow where the dense gradient is largest.",
            factory=f"{factory}:RigL",
            parameters=DynamicParameters,
            during_training=True,
            reference="Evci et al. 2020, Rigging the Lottery (ICML)",
        ),
    ]

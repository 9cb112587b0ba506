"""Specs of the built-in schedules: one-shot, iterative (with rewinding), gradual (AGP).

Torch-free (listing must not import torch). The parameter models are made from the
``schedule`` section's own fields (:class:`ScheduleConfig`), where the built-in kinds keep
their settings; the implementations are in :mod:`shrinkbench_core.builtin.schedules`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, create_model

from shrinkbench_core.experiment.schedule_config import (
    GRADUAL_FIELDS,
    ITERATIVE_FIELDS,
    ScheduleConfig,
)
from shrinkbench_core.specs import NoParameters, ScheduleSpec


def _parameters(name: str, fields: tuple[str, ...]) -> type[BaseModel]:
    definitions = ScheduleConfig.model_fields
    return create_model(  # type: ignore[call-overload]
        name,
        __config__=ConfigDict(extra="forbid", frozen=True),
        **{field: (definitions[field].annotation, definitions[field]) for field in fields},
    )


IterativeParameters = _parameters("IterativeParameters", ITERATIVE_FIELDS)
GradualParameters = _parameters("GradualParameters", GRADUAL_FIELDS)


def schedule_specs() -> list[ScheduleSpec]:
    """The three schedules every strategy works with."""
    return [
        ScheduleSpec(
            name="oneshot",
            summary="Prune once to the target compression, then fine-tune (the default).",
            factory="shrinkbench_core.builtin.schedules:OneShot",
            parameters=NoParameters,
        ),
        ScheduleSpec(
            name="iterative",
            summary="Rounds of prune -> train reaching the target geometrically; optional "
            "rewinding (lottery ticket).",
            factory="shrinkbench_core.builtin.schedules:Iterative",
            parameters=IterativeParameters,
            reference="Frankle & Carbin 2019; Frankle et al. 2020 (rewinding)",
        ),
        ScheduleSpec(
            name="gradual",
            summary="Prune during fine-tuning on the cubic schedule of Zhu & Gupta (AGP).",
            factory="shrinkbench_core.builtin.schedules:Gradual",
            parameters=GradualParameters,
            during_training=True,
            reference="Zhu & Gupta 2017, To prune, or not to prune",
        ),
    ]

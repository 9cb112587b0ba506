"""The ``schedule`` section of an experiment config: when pruning happens.

Torch-free (the config, ``shrinkbench list`` and ``--help`` must not import
torch); the logic that runs a schedule is in
:mod:`shrinkbench_core.experiment.schedules`.

* ``oneshot`` (default): prune once to the target, then fine-tune.
* ``iterative``: ``rounds`` rounds of prune -> train reaching the target
  geometrically, optionally rewinding the surviving weights (lottery ticket).
* ``gradual``: pruning during fine-tuning on the cubic schedule of Zhu & Gupta (AGP).
* any other name: a schedule registered by a plugin (``shrinkbench list schedules``), with
  its own options in ``params`` (checked against the registry when the run is resolved).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shrinkbench_core.errors import ConfigError

ITERATIVE_FIELDS = ("rounds", "epochs_per_round", "rewind", "rewind_point")
GRADUAL_FIELDS = ("start_step", "end_step", "frequency", "initial_sparsity")
BUILTIN_KINDS = ("oneshot", "iterative", "gradual")


class ScheduleConfig(BaseModel):
    """When pruning happens. Fields of one kind must keep their defaults under another kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(
        "oneshot",
        pattern=r"^[A-Za-z][A-Za-z0-9_.:\-]*$",
        description="oneshot (prune once), iterative (rounds), gradual (AGP), or a schedule "
        "registered by a plugin (`shrinkbench list schedules`).",
    )
    params: dict[str, Any] | None = Field(
        None,
        description="Options of a plugin's schedule (the built-in kinds take theirs as the "
        "fields below).",
    )
    # iterative
    rounds: int = Field(3, ge=1, description="iterative: prune -> train rounds.")
    epochs_per_round: int = Field(
        1,
        ge=0,
        description="iterative: training epochs after each round but the last "
        "(the last round is followed by the regular fine-tuning).",
    )
    rewind: Literal["none", "init", "epoch", "iteration"] = Field(
        "none",
        description="iterative: rewind surviving weights to init or to dense "
        "epoch/iteration `rewind_point` after each pruning step.",
    )
    rewind_point: int = Field(
        0,
        ge=0,
        description="iterative: dense-training epoch or iteration (optimizer steps "
        "done) whose weights are rewound to.",
    )
    # gradual (AGP)
    start_step: int = Field(0, ge=0, description="gradual: first pruning step t0.")
    end_step: int | None = Field(
        None,
        ge=0,
        description="gradual: step reaching the target (default: the last fine-tuning step).",
    )
    frequency: int = Field(100, ge=1, description="gradual: optimizer steps between prunings.")
    initial_sparsity: float = Field(
        0.0, ge=0, lt=1, description="gradual: sparsity s_i applied at t0."
    )

    @model_validator(mode="after")
    def _fields_match_kind(self) -> ScheduleConfig:
        problems = []
        foreign = {
            "oneshot": ITERATIVE_FIELDS + GRADUAL_FIELDS,
            "iterative": GRADUAL_FIELDS,
            "gradual": ITERATIVE_FIELDS,
        }.get(self.kind, ITERATIVE_FIELDS + GRADUAL_FIELDS)
        defaults = ScheduleConfig.model_fields
        for name in foreign:
            if getattr(self, name) != defaults[name].default:
                owner = "iterative" if name in ITERATIVE_FIELDS else "gradual"
                problems.append(f"`{name}` applies only to kind='{owner}', not '{self.kind}'")
        if self.kind in BUILTIN_KINDS and self.params:
            problems.append(
                f"`params` applies only to plugin schedules; kind '{self.kind}' takes its "
                "settings as schedule fields (e.g. schedule.rounds=5)"
            )
        if self.rewind in ("none", "init") and self.rewind_point:
            problems.append(
                f"`rewind_point` needs rewind='epoch' or 'iteration', not '{self.rewind}'"
            )
        if self.end_step is not None and self.end_step < self.start_step:
            problems.append(
                f"`end_step` ({self.end_step}) is before `start_step` ({self.start_step})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def label(self) -> str:
        """A short name for tables and plot legends, e.g. ``iterative-3x-rewind-epoch2``."""
        if self.kind == "iterative":
            rewind = "" if self.rewind == "none" else f"-rewind-{self.rewind}"
            point = str(self.rewind_point) if self.rewind in ("epoch", "iteration") else ""
            return f"iterative-{self.rounds}x{rewind}{point}"
        if self.kind == "gradual":
            end = "end" if self.end_step is None else str(self.end_step)
            return f"gradual-{self.start_step}-{end}-f{self.frequency}"
        return self.kind.replace(":", "-")

    @property
    def builtin(self) -> bool:
        """Whether this is one of the core's own kinds (oneshot, iterative, gradual)."""
        return self.kind in BUILTIN_KINDS

    def settings(self) -> dict[str, Any]:
        """The kind's own options: its fields for a built-in kind, else ``params``."""
        if self.kind == "iterative":
            return self.model_dump(mode="json", include=set(ITERATIVE_FIELDS))
        if self.kind == "gradual":
            return self.model_dump(mode="json", include=set(GRADUAL_FIELDS))
        if self.kind == "oneshot":
            return {}
        return dict(self.params or {})

    def resolved(self, total_steps: int) -> ScheduleConfig:
        """For ``gradual``: ``end_step`` filled with ``total_steps`` and checked to fit in it."""
        if self.kind != "gradual":
            return self
        end = total_steps if self.end_step is None else self.end_step
        if end > total_steps or self.start_step > end:
            raise ConfigError(
                [
                    f"schedule.end_step: gradual pruning runs from step {self.start_step} to "
                    f"{end}, but fine-tuning has only {total_steps} optimizer steps; "
                    "lower end_step or raise finetune.epochs"
                ]
            )
        return self.model_copy(update={"end_step": end})

"""The sweep file: a grid of experiments, validated by pydantic and expanded into runs.

A sweep lists strategies (each with parameters), compressions, seeds, models
and datasets, plus ``shared`` settings (any :class:`ExperimentConfig` field).
Every combination is one experiment. Expansion validates each experiment's
config against the registry before anything runs, and reports every problem
at once as ``field: problem`` lines located in the sweep file.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from shrinkbench_core.config import ExperimentConfig, read_config_file
from shrinkbench_core.errors import ConfigError
from shrinkbench_core.results.collect import format_params

#: ExperimentConfig fields that the grid sets; ``shared`` may not set them.
GRID_FIELDS = {"strategy": "strategies", "compression": "compressions", "seed": "seeds"}


def _at_least_one(value: float) -> float:
    if not value >= 1:
        raise ValueError("must be >= 1 (compression = all parameters / nonzero parameters)")
    return value


class GridComponent(BaseModel):
    """One entry of ``strategies``, ``datasets`` or ``models``: a name or a table.

    A table may carry, besides ``name`` and ``params``, any other field of the
    matching experiment section (e.g. ``batch_size`` for a dataset).
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def section(self) -> dict[str, Any]:
        """The experiment section this entry sets (name, params and extra fields)."""
        return self.model_dump(mode="json")


class SweepFile(BaseModel):
    """A pruning study: strategies x compressions x seeds x models x datasets."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field("results", description="Root folder of the study's run directories.")
    strategies: list[GridComponent] = Field(min_length=1)
    compressions: list[Annotated[float, AfterValidator(_at_least_one)]] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    datasets: list[GridComponent] = Field(
        default_factory=lambda: [GridComponent(name="digits")], min_length=1
    )
    models: list[GridComponent] = Field(
        default_factory=lambda: [GridComponent(name="mlp")], min_length=1
    )
    shared: dict[str, Any] = Field(
        default_factory=dict, description="ExperimentConfig fields shared by every run."
    )
    #: Where the sweep was read from (named in every error header).
    _source: str = PrivateAttr("sweep file")
    #: Grid entries that were invalid in the file (``(list, index)``): runs using them are
    #: not checked again (only set on a salvaged sweep, see :func:`parse_sweep`).
    _skip: frozenset[tuple[str, int]] = PrivateAttr(frozenset())

    @field_validator("shared")
    @classmethod
    def _shared(cls, values: dict[str, Any]) -> dict[str, Any]:
        problems = [
            f"'{key}' is set by the sweep's '{grid}' list"
            for key, grid in GRID_FIELDS.items()
            if key in values
        ]
        if "output" in values:
            problems.append("'output' is a top-level field of the sweep file")
        if problems:
            raise ValueError("; ".join(problems))
        return values


@dataclass(frozen=True)
class PlannedRun:
    """One experiment of a sweep: its validated config and where it will run."""

    index: int
    config: dict[str, Any]  # ExperimentConfig as JSON, components resolved, output absolute
    name: str  # run directory name
    path: Path  # run directory
    dense_digest: str  # runs with the same value share one dense baseline

    def columns(self) -> list[str]:
        """Dataset, model, strategy (+params), compression and seed, as table cells."""
        c = self.config
        strategy = c["strategy"]["name"]
        if c["strategy"]["params"]:
            strategy += f"({format_params(c['strategy']['params'])})"
        return [
            c["dataset"]["name"],
            c["model"]["name"],
            strategy,
            f"c={c['compression']:g}",
            f"seed={c['seed']}",
        ]

    def describe(self) -> str:
        """One line: dataset, model, strategy (+params), compression, seed."""
        return "  ".join(self.columns())


def aligned_columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells joined into lines whose columns line up."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in recursively (``override`` wins)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read and validate a TOML, YAML or JSON sweep file."""
    return parse_sweep(read_config_file(path), source=str(path))


def parse_sweep(
    data: dict[str, Any], source: str = "sweep file", registry: Any = None
) -> SweepFile:
    """Validate a sweep dict; problems are ``field: problem`` lines.

    When the file itself is invalid, the experiments its valid entries expand
    to are checked too (against ``registry``, default the installed plugins),
    so that every problem is reported in one round.
    """
    try:
        sweep = SweepFile.model_validate(data)
    except ValidationError as error:
        problems = sweep_problems(error)
        salvaged = _salvage(data, error)
        if salvaged is not None:
            if registry is None:
                from shrinkbench_core.registry import get_registry

                registry = get_registry()
            try:
                expand_sweep(salvaged, registry, check_environment=False)
            except ConfigError as more:
                problems += [line for line in more.problems if line not in problems]
        raise ConfigError(problems, title=f"invalid sweep file {source}") from None
    sweep._source = source
    return sweep


#: A valid stand-in for an invalid entry of each grid list (never checked: see ``_skip``).
_PLACEHOLDERS: dict[str, Any] = {
    "strategies": {"name": "_"},
    "datasets": {"name": "_"},
    "models": {"name": "_"},
    "compressions": 1.0,
    "seeds": 0,
}


def _salvage(data: dict[str, Any], error: ValidationError) -> SweepFile | None:
    """The sweep without its invalid parts (``None`` if that still fails).

    An invalid grid entry is replaced by a stand-in whose runs are skipped (so
    the positions the other problems name stay right); an invalid top-level
    field takes its default; ``shared`` loses the keys it may not set.
    """
    data = copy.deepcopy(data)
    skip: set[tuple[str, int]] = set()
    for item in error.errors():
        location = item["loc"]
        head = location[0] if location else None
        if head in _PLACEHOLDERS:
            values = data.get(head)
            if len(location) > 1 and isinstance(location[1], int) and isinstance(values, list):
                values[location[1]] = _PLACEHOLDERS[head]
                skip.add((head, location[1]))
            else:  # the list itself: missing, empty or not a list
                data[head] = [_PLACEHOLDERS[head]]
                skip.add((head, 0))
        elif head == "shared" and isinstance(data.get("shared"), dict):
            for key in [*GRID_FIELDS, "output"]:
                data["shared"].pop(key, None)
        elif head is not None:
            data.pop(head, None)
    try:
        sweep = SweepFile.model_validate(data)
    except ValidationError:
        return None
    sweep._skip = frozenset(skip)
    return sweep


def sweep_problems(error: ValidationError) -> list[str]:
    """``field: problem`` lines with list positions as ``strategies[1].name``."""
    lines = []
    for item in error.errors():
        field = ""
        for part in item["loc"]:
            field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{field or '(sweep file)'}: {message}")
    return lines


def grid(sweep: SweepFile) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """Every experiment dict of the grid with the indices of the entries that made it.

    Order: datasets, models, strategies, compressions, seeds (seeds vary fastest).
    """
    experiments = []
    axes = itertools.product(
        enumerate(sweep.datasets),
        enumerate(sweep.models),
        enumerate(sweep.strategies),
        enumerate(sweep.compressions),
        enumerate(sweep.seeds),
    )
    for (d, dataset), (m, model), (s, strategy), (c, compression), (k, seed) in axes:
        data = deep_merge(
            sweep.shared,
            {
                "dataset": dataset.section(),
                "model": model.section(),
                "strategy": strategy.section(),
            },
        )
        data.update(compression=compression, seed=seed, output=sweep.output)
        where = {"datasets": d, "models": m, "strategies": s, "compressions": c, "seeds": k}
        experiments.append((data, where))
    return experiments


def _has_path(data: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def _locate(line: str, where: dict[str, int], sweep: SweepFile) -> str:
    """Rewrite an experiment's ``field: problem`` line to the field's place in the sweep file."""
    field, sep, problem = line.partition(": ")
    head, _, rest = field.partition(".")
    sections = {"strategy": "strategies", "dataset": "datasets", "model": "models"}
    if head in sections:
        grid_list = sections[head]
        entry = getattr(sweep, grid_list)[where[grid_list]].section()
        path = [p.split("[")[0] for p in rest.split(".")] if rest else []
        if path and not _has_path(entry, path) and _has_path(sweep.shared.get(head), path):
            return f"shared.{field}{sep}{problem}"
        location = f"{grid_list}[{where[grid_list]}]"
        return f"{location}.{rest}{sep}{problem}" if rest else f"{location}{sep}{problem}"
    if head in ("compression", "seed"):
        grid_list = GRID_FIELDS[head]
        return f"{grid_list}[{where[grid_list]}]{sep}{problem}"
    return f"shared.{field}{sep}{problem}"


def expand_sweep(
    sweep: SweepFile,
    registry: Any,
    output: str | Path | None = None,
    check_environment: bool = False,
) -> list[PlannedRun]:
    """Validate every experiment of the grid and plan its run; one :class:`ConfigError` for all.

    ``output`` overrides the sweep file's; it is made absolute (relative to the
    current directory) so that workers on any node write to the same place.
    ``check_environment`` also checks this machine (device, data): right for
    the local executor, not for a cluster whose nodes may differ.
    """
    from shrinkbench_core.experiment.resolve import validate_experiment

    root = Path(output if output is not None else sweep.output).expanduser().resolve()
    problems: list[str] = []
    runs: list[PlannedRun] = []
    for data, where in grid(sweep.model_copy(update={"output": str(root)})):
        if any((grid_list, index) in sweep._skip for grid_list, index in where.items()):
            continue
        try:
            resolved = validate_experiment(data, registry, check_environment=check_environment)
        except ConfigError as error:
            for line in error.problems:
                located = _locate(line, where, sweep)
                if located not in problems:
                    problems.append(located)
            continue
        runs.append(_plan(len(runs), resolved, root))
    if problems:
        raise ConfigError(problems, title=f"invalid sweep file {sweep._source}")
    return runs


def _plan(index: int, resolved: Any, root: Path) -> PlannedRun:
    from shrinkbench_core.experiment.naming import run_name

    config: ExperimentConfig = resolved.config
    name = run_name(resolved)
    return PlannedRun(
        index=index,
        config=config.model_dump(mode="json"),
        name=name,
        path=root / "runs" / name,
        dense_digest=config.dense_digest(),
    )


def sharing_order(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Runs interleaved across dense baselines (round-robin).

    Runs that start together then need different dense baselines, so parallel
    workers train distinct baselines instead of waiting on the same one.
    """
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(run.dense_digest, []).append(run)
    ordered = []
    for layer in itertools.zip_longest(*groups.values()):
        ordered.extend(run for run in layer if run is not None)
    return ordered

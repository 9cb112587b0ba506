"""Checking and building the trackers a config selects."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shrinkbench_core.config import ExperimentConfig, format_validation_error
from shrinkbench_core.errors import ConfigError, UserError
from shrinkbench_core.factories import factory_problem

if TYPE_CHECKING:
    from shrinkbench_core.registry import Registry


def missing_modules(names: Iterable[str]) -> list[str]:
    """The modules among ``names`` that cannot be imported (found without importing them)."""
    missing = []
    for name in names:
        if sys.modules.get(name) is not None:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package is missing, or a blocked import
            found = False
        if not found:
            missing.append(name)
    return missing


def tracker_problems(config: ExperimentConfig, registry: Registry) -> list[str]:
    """``field: problem`` lines for the config's trackers, found before anything runs.

    Reports unknown names (with candidates), a tracker selected twice, parameters its
    model rejects, and a library that is not installed (naming the extra to install).
    """
    problems: list[str] = []
    seen: set[str] = set()
    for index, selection in enumerate(config.trackers):
        field = f"trackers[{index}]"
        try:
            spec = registry.get("trackers", selection.name)
        except UserError as error:
            problems.append(f"{field}: {error}")  # every line: candidates, broken plugins
            continue
        if spec.qualified_name in seen:
            problems.append(f"{field}: '{selection.name}' is selected twice; list it once")
            continue
        seen.add(spec.qualified_name)
        try:
            spec.parameters(**selection.params)
        except ValidationError as error:
            allowed = ", ".join(spec.parameters.model_fields) or "(none)"
            problems.extend(
                line + (f" (allowed: {allowed})" if line.endswith("unknown field") else "")
                for line in format_validation_error(error, prefix=f"{field}.params.")
            )
        missing = missing_modules(spec.requires)
        if missing:
            packages = ", ".join(missing)
            target = spec.extra or " ".join(missing)
            noun = "package" if len(missing) == 1 else "packages"
            problems.append(
                f"trackers: '{spec.name}' needs the {packages} {noun}: pip install '{target}'"
            )
        elif problem := factory_problem(spec):  # the tracker's module imports, before a run
            problems.append(f"{field}: {problem}")
    return problems


def tracker_plugins(config: ExperimentConfig, registry: Registry) -> list[tuple[str, object]]:
    """``(name, plugin)`` pairs of the config's trackers, for :class:`RunEvents`.

    Building a tracker does not import its library (that happens when the run starts).
    Raises :class:`ConfigError` with every problem of :func:`tracker_problems`.
    """
    problems = tracker_problems(config, registry)
    if problems:
        raise ConfigError(problems)
    plugins: list[tuple[str, object]] = []
    for selection in config.trackers:
        spec = registry.get("trackers", selection.name)
        factory = spec.load()
        plugins.append((f"tracker:{spec.name}", factory(spec.parameters(**selection.params))))
    return plugins

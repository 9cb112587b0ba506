"""Plugin-manager factory: the built-in plugin, entry points, error isolation.

Plugins are found through the ``shrinkbench`` entry-point group. Each one is
loaded on its own: a plugin that fails to import (or whose hook raises, see
:mod:`shrinkbench_core.registry`) is recorded with its error and reported in
one line, while every other plugin keeps working.

Environment variables:

* ``SHRINKBENCH_STRICT_PLUGINS=1``: any plugin error is fatal.
* ``SHRINKBENCH_DISABLE_PLUGINS=a,b``: never load these plugins.
* ``SHRINKBENCH_LOAD_PLUGINS=a,b``: load only these entry-point plugins
  (set but empty: none). The core's built-in plugin is always loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from shrinkbench_core import __version__, hookspecs
from shrinkbench_core.errors import PluginError

BUILTIN_PLUGIN_NAME = "builtin"


@dataclass
class PluginInfo:
    """What is known about one plugin: where it came from and whether it works."""

    name: str
    distribution: str | None = None
    version: str | None = None
    status: str = "ok"  # "ok", "error" or "disabled"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        """Mark the plugin broken, keeping the first error."""
        self.status = "error"
        self.error = self.error or message

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for ``shrinkbench plugins --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "hooks": list(self.hooks),
            "error": self.error,
        }


@dataclass
class PluginSelection:
    """Which entry-point plugins to load, read from the environment by default."""

    strict: bool = False
    load_only: set[str] | None = None
    disabled: set[str] = field(default_factory=set)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PluginSelection:
        """Read the ``SHRINKBENCH_*_PLUGINS`` variables."""
        env = os.environ if environ is None else environ
        load = env.get("SHRINKBENCH_LOAD_PLUGINS")
        return cls(
            strict=env.get("SHRINKBENCH_STRICT_PLUGINS", "").strip() not in ("", "0", "false"),
            load_only=None if load is None else _split_names(load),
            disabled=_split_names(env.get("SHRINKBENCH_DISABLE_PLUGINS", "")),
        )

    def describe(self) -> str:
        """The environment settings that filter plugins, as ``VAR=value`` (for messages)."""
        parts = []
        if self.load_only is not None:
            parts.append(f"SHRINKBENCH_LOAD_PLUGINS={','.join(sorted(self.load_only))}")
        if self.disabled:
            parts.append(f"SHRINKBENCH_DISABLE_PLUGINS={','.join(sorted(self.disabled))}")
        return " and ".join(parts) or "no plugin selection"

    def unknown_names(self, installed: Iterable[str]) -> list[str]:
        """Warnings for names in the selection that no installed plugin has."""
        installed = set(installed) | {BUILTIN_PLUGIN_NAME}
        available = ", ".join(sorted(installed)) or "(none)"
        lines = []
        for variable, names in (
            ("SHRINKBENCH_LOAD_PLUGINS", self.load_only or set()),
            ("SHRINKBENCH_DISABLE_PLUGINS", self.disabled),
        ):
            for name in sorted(set(names) - installed):
                lines.append(
                    f"{variable} names '{name}', which is not an installed plugin "
                    f"(installed: {available})"
                )
        return lines

    def allows(self, name: str) -> bool:
        """Whether the plugin called ``name`` may be loaded."""
        if name in self.disabled:
            return False
        return self.load_only is None or name in self.load_only


def _split_names(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers each plugin's provenance and status."""

    def __init__(self, selection: PluginSelection) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.selection = selection
        self.infos: dict[str, PluginInfo] = {}

    def register_plugin(
        self, plugin: object, name: str, distribution: str | None = None, version: str | None = None
    ) -> PluginInfo:
        """Register ``plugin`` under ``name`` and record its provenance."""
        info = PluginInfo(name=name, distribution=distribution, version=version)
        self.infos[name] = info
        try:
            self.register(plugin, name=name)
        except Exception as error:  # pluggy validation errors, e.g. an unknown hook name
            info.fail(f"{type(error).__name__}: {error}")
            self.report(info)
            return info
        info.hooks = sorted(
            caller.name for caller in self.get_hookcallers(plugin) or () if caller.name
        )
        return info

    def report(self, info: PluginInfo) -> None:
        """Warn (one line) about a broken plugin, or raise when strict."""
        message = f"plugin '{info.name}' failed to load: {info.error}"
        if self.selection.strict:
            raise PluginError(
                message + "\n(unset SHRINKBENCH_STRICT_PLUGINS to skip broken plugins)"
            )
        print(f"shrinkbench: warning: {message}", file=sys.stderr)


def iter_entry_points() -> Iterable[metadata.EntryPoint]:
    """Entry points of the ``shrinkbench`` group, one per name (first wins)."""
    seen: set[str] = set()
    for entry_point in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        if entry_point.name not in seen:
            seen.add(entry_point.name)
            yield entry_point


def make_plugin_manager(
    selection: PluginSelection | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
    load_entry_points: bool = True,
) -> PluginManager:
    """Build a fresh manager: built-in plugin first, then entry points, then extras.

    ``extra_plugins`` are ``(name, plugin)`` pairs registered after the entry
    points (used by tests and by programs embedding ShrinkBench).
    """
    from shrinkbench_core import builtin

    selection = selection or PluginSelection.from_environment()
    manager = PluginManager(selection)
    manager.register_plugin(builtin, BUILTIN_PLUGIN_NAME, "shrinkbench-core", __version__)
    from shrinkbench_core.builtin.epoch_lines import EpochLines  # a line per epoch on stderr

    manager.register(EpochLines(), name=f"{BUILTIN_PLUGIN_NAME}-epoch-lines")
    if load_entry_points:
        entry_points = list(iter_entry_points())
        for entry_point in entry_points:
            _load_entry_point(manager, entry_point)
        for line in selection.unknown_names(entry_point.name for entry_point in entry_points):
            print(f"shrinkbench: warning: {line}", file=sys.stderr)
    for name, plugin in extra_plugins:
        manager.register_plugin(plugin, name)
    return manager


def _load_entry_point(manager: PluginManager, entry_point: metadata.EntryPoint) -> None:
    distribution = entry_point.dist.metadata["Name"] if entry_point.dist else None
    version = entry_point.dist.version if entry_point.dist else None
    if not manager.selection.allows(entry_point.name):
        manager.infos[entry_point.name] = PluginInfo(
            entry_point.name, distribution, version, status="disabled"
        )
        return
    try:
        plugin = entry_point.load()
    except Exception as error:  # any import-time failure is isolated to this plugin
        info = PluginInfo(entry_point.name, distribution, version)
        info.fail(f"{type(error).__name__}: {error}")
        manager.infos[entry_point.name] = info
        manager.report(info)
        return
    manager.register_plugin(plugin, entry_point.name, distribution, version)

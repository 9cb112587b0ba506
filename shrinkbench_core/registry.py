"""Typed lookup of the components that plugins register.

The registry calls each registration hook of each plugin separately, so a hook
that raises or returns an invalid spec only breaks its own plugin. Names are
never silently overwritten: when two plugins register the same name both are
kept under ``plugin:name`` and an unqualified lookup lists the candidates.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import defaultdict
from typing import Any

from pydantic import ValidationError

from shrinkbench_core.errors import PluginError, UnknownComponentError
from shrinkbench_core.plugins import PluginManager, make_plugin_manager
from shrinkbench_core.specs import SPEC_TYPES, ComponentSpec

KINDS = tuple(SPEC_TYPES)
SINGULAR = {
    "strategies": "strategy",
    "datasets": "dataset",
    "models": "model",
    "metrics": "metric",
    "schedules": "schedule",
    "trackers": "tracker",
}
#: The project's distribution that provides a kind the core itself does not register.
PROVIDERS = {"strategies": "shrinkbench-strategies"}
MAX_CANDIDATES = 12  # an unknown name lists every known one when there are at most this many


def _format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(spec)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


class Registry:
    """All registered components, by kind and name."""

    def __init__(self, manager: PluginManager) -> None:
        self.manager = manager
        self._specs: dict[str, list[ComponentSpec]] = {kind: [] for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)

    # -- building -------------------------------------------------------
    def _collect(self, kind: str) -> None:
        hook = getattr(self.manager.hook, f"shrinkbench_register_{kind}")
        for implementation in hook.get_hookimpls():
            info = self.manager.infos.get(implementation.plugin_name)
            if info is None or info.status != "ok":
                continue
            try:
                items = implementation.function()
            except ValidationError as error:  # e.g. StrategySpec(...) built with a wrong field
                info.fail(
                    f"invalid {SINGULAR[kind]} spec built in shrinkbench_register_{kind} "
                    f"({error.title}): {_format_validation_error(error)}"
                )
                self.manager.report(info)
                self._drop_plugin(info.name)
                continue
            except Exception as error:  # a plugin's bug must not take the others down
                info.fail(f"shrinkbench_register_{kind} raised {type(error).__name__}: {error}")
                self.manager.report(info)
                self._drop_plugin(info.name)
                continue
            specs = self._validate(kind, items or [], info)
            if specs is None:
                self._drop_plugin(info.name)
                continue
            self._specs[kind].extend(specs)

    def _validate(self, kind: str, items: Any, info: Any) -> list[ComponentSpec] | None:
        spec_type = SPEC_TYPES[kind]
        if not isinstance(items, (list, tuple)):
            info.fail(f"shrinkbench_register_{kind} must return a list, got {type(items).__name__}")
            self.manager.report(info)
            return None
        specs: list[ComponentSpec] = []
        for index, item in enumerate(items):
            data = item.model_dump() if isinstance(item, ComponentSpec) else item
            if isinstance(item, ComponentSpec) and not isinstance(item, spec_type):
                info.fail(
                    f"{kind}[{index}]: expected {spec_type.__name__}, got {type(item).__name__}"
                )
                self.manager.report(info)
                return None
            try:
                if not isinstance(data, dict):
                    raise TypeError(f"expected {spec_type.__name__}, got {type(item).__name__}")
                provenance = {
                    "plugin": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                }
                spec = spec_type.model_validate({**data, **provenance})
            except (ValidationError, TypeError) as error:
                name = data.get("name", "?") if isinstance(data, dict) else "?"
                detail = (
                    _format_validation_error(error)
                    if isinstance(error, ValidationError)
                    else str(error)
                )
                info.fail(
                    f"invalid {SINGULAR[kind]} spec {kind}[{index}] (name={name!r}): {detail}"
                )
                self.manager.report(info)
                return None
            specs.append(spec)
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            info.fail(f"registers {SINGULAR[kind]} name(s) more than once: {', '.join(duplicates)}")
            self.manager.report(info)
            return None
        return specs

    def _drop_plugin(self, plugin: str) -> None:
        for kind in KINDS:
            self._specs[kind] = [spec for spec in self._specs[kind] if spec.plugin != plugin]

    # -- lookup ---------------------------------------------------------
    def specs(self, kind: str) -> list[ComponentSpec]:
        """Every spec of ``kind`` (``strategies``, ``datasets``, ``models``, ``metrics``)."""
        self._check_kind(kind)
        return list(self._specs[kind])

    def names(self, kind: str) -> list[str]:
        """Display names: plain when unique, ``plugin:name`` when several plugins clash."""
        counts = self._name_counts(kind)
        return [
            spec.name if counts[spec.name] == 1 else spec.qualified_name
            for spec in self.specs(kind)
        ]

    def list(self, kind: str, pattern: str | None = None) -> list[ComponentSpec]:
        """Specs whose (qualified) name matches the shell-style ``pattern``, sorted by name."""
        specs = self.specs(kind)
        if pattern:
            lowered = pattern.lower()
            specs = [
                spec
                for spec in specs
                if fnmatch.fnmatchcase(spec.name.lower(), lowered)
                or fnmatch.fnmatchcase(spec.qualified_name.lower(), lowered)
            ]
        return sorted(specs, key=lambda spec: (spec.name.lower(), spec.plugin or ""))

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec called ``name`` (or ``plugin:name``); clear errors otherwise."""
        specs = self.specs(kind)
        if ":" in name:
            plugin, _, plain = name.partition(":")
            matches = [spec for spec in specs if spec.plugin == plugin and spec.name == plain]
        else:
            matches = [spec for spec in specs if spec.name == name]
        if len(matches) == 1:
            return matches[0]
        singular = SINGULAR[kind]
        if len(matches) > 1:
            candidates = ", ".join(sorted(spec.qualified_name for spec in matches))
            raise UnknownComponentError(
                f"{singular} name '{name}' is ambiguous: several plugins register it. "
                f"Use one of: {candidates}"
            )
        self._raise_unknown(kind, name)
        raise AssertionError("unreachable")

    def _raise_unknown(self, kind: str, name: str) -> None:
        singular = SINGULAR[kind]
        known = sorted({spec.name for spec in self.specs(kind)})
        message = f"unknown {singular} '{name}'."
        close = difflib.get_close_matches(name.partition(":")[2] or name, known, n=3, cutoff=0.5)
        close += [k for k in known if k.lower() == name.lower() and k not in close]
        if close:
            message += f" Did you mean: {', '.join(close)}?"
        elif known and len(known) <= MAX_CANDIDATES:
            message += f" Available: {', '.join(known)}."
        elif not known:
            message += f" No loaded plugin registers any {kind}."
            if kind in PROVIDERS:
                message += f" The project's own are in {PROVIDERS[kind]} (pip install it)."
        infos = self.manager.infos.values()
        filtered = sorted(info.name for info in infos if info.status == "disabled")
        if filtered:
            message += (
                f"\nnot loaded because of {self.manager.selection.describe()}: "
                f"{', '.join(filtered)} (one of them may provide it)"
            )
        broken = [info for info in infos if info.status == "error"]
        plugin = name.partition(":")[0] if ":" in name else None
        for info in broken:
            if plugin is None or plugin == info.name:
                message += f"\nplugin '{info.name}' is broken and may provide it: {info.error}"
                if plugin == info.name:
                    raise PluginError(message)
        message += f"\nRun `shrinkbench list {kind}` to see the {len(known)} available."
        raise UnknownComponentError(message)

    def _name_counts(self, kind: str) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for spec in self.specs(kind):
            counts[spec.name] += 1
        return counts

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise UnknownComponentError(
                f"unknown component kind '{kind}'; choose one of: {', '.join(KINDS)}"
            )

    def plugins(self) -> list[dict[str, Any]]:
        """Every plugin with its provenance, hooks and status."""
        return [info.as_dict() for info in self.manager.infos.values()]


_default_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use from installed plugins."""
    global _default_registry
    if _default_registry is None:
        _default_registry = Registry(make_plugin_manager())
    return _default_registry


def reset_registry(registry: Registry | None = None) -> None:
    """Forget (or replace) the process-wide registry; used by tests and embedders."""
    global _default_registry
    _default_registry = registry

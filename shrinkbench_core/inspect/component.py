"""``shrinkbench show {strategy,dataset,model,metric,...} NAME``: everything a spec says."""

from __future__ import annotations

import typing
from typing import Any

from shrinkbench_core.registry import SINGULAR
from shrinkbench_core.specs import ComponentSpec, _jsonable

KIND_WORDS = {word: kind for kind, singular in SINGULAR.items() for word in (kind, singular)}
_COMMON = {"name", "summary", "factory", "parameters", "plugin", "distribution", "version"}


def type_name(annotation: Any) -> str:
    """A readable type: ``int``, ``tuple[int, ...]``, ``Literal['l1', 'l2']``, ``str | None``."""
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation)
    for prefix in ("typing.", "pathlib.", "collections.abc."):
        text = text.replace(prefix, "")
    return text


def parameter_rows(spec: ComponentSpec) -> list[dict[str, Any]]:
    """One dict per parameter: name, type, default (or required), description."""
    rows = []
    for name, field in spec.parameters.model_fields.items():
        required = field.is_required()
        rows.append(
            {
                "name": name,
                "type": type_name(field.annotation),
                "required": required,
                "default": None if required else field.get_default(call_default_factory=True),
                "description": field.description or "",
            }
        )
    return rows


def facts(spec: ComponentSpec) -> dict[str, Any]:
    """The kind-specific fields of a spec (scope, input shape, unit, ...)."""
    data = spec.model_dump(mode="json", exclude=_COMMON)
    return {key: value for key, value in data.items() if value not in (None, {}, [], ())}


def component_details(spec: ComponentSpec) -> dict[str, Any]:
    """JSON-ready description: provenance, facts and every parameter."""
    return {
        "kind": spec.kind,
        "name": spec.name,
        "qualified_name": spec.qualified_name,
        "summary": spec.summary,
        "plugin": spec.plugin,
        "distribution": spec.distribution,
        "version": spec.version,
        "factory": spec.factory,
        **facts(spec),
        "parameters": [
            {**row, "default": _jsonable(row["default"])} for row in parameter_rows(spec)
        ],
    }


def format_component(spec: ComponentSpec) -> str:
    """Human-readable, untruncated: one block per parameter."""
    provenance = " ".join(part for part in (spec.distribution, spec.version) if part)
    lines = [
        f"{spec.kind} {spec.name}",
        f"  summary:          {spec.summary}",
    ]
    for key, value in facts(spec).items():
        label = f"{key.replace('_', ' ')}:"
        lines.append(f"  {label:<17} {_plain(value)}")
    lines += [
        f"  plugin:           {spec.plugin or '-'}" + (f" ({provenance})" if provenance else ""),
        f"  qualified name:   {spec.qualified_name}",
        f"  factory:          {spec.factory}",
    ]
    rows = parameter_rows(spec)
    lines.append("parameters:" if rows else "parameters: (none)")
    for row in rows:
        default = "required" if row["required"] else f"default {row['default']!r}"
        lines.append(f"  {row['name']}: {row['type']}, {default}")
        if row["description"]:
            lines.append(f"      {row['description']}")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={_plain(item)}" for key, item in value.items())
    return str(value)

"""Turning run events into what trackers log: flat scalars, flat parameters, sparsities."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: Order of the evaluated stages, used as the step of stage metrics.
STAGE_ORDER = {"dense": 0, "pruned": 1, "finetuned": 2, "best": 3, "best_validation": 3}


def scalars(data: Mapping[str, Any], prefix: str = "", separator: str = "/") -> dict[str, float]:
    """Every number in nested ``data`` (lists and strings skipped), keyed by its joined path."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(scalars(value, name, separator))
        elif isinstance(value, (bool, int, float)):
            out[name] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy/torch scalar
            out[name] = float(value.item())
    return out


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config ``data`` as ``dotted.key -> value`` (lists and None as JSON text)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, name))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str, sort_keys=True)
    return out


def layer_sparsity(summary: Any) -> dict[str, float]:
    """Parameter name -> fraction pruned, from a masks summary (DataFrame or list of rows)."""
    if summary is None:
        return {}
    rows = summary.to_dict("records") if hasattr(summary, "to_dict") else list(summary)
    out = {}
    for row in rows:
        size = float(row["size"])
        out[str(row["parameter"])] = float(row["pruned"]) / size if size else 0.0
    return out


def finite(values: Mapping[str, float]) -> dict[str, float]:
    """The entries of ``values`` that are finite numbers."""
    return {key: value for key, value in values.items() if math.isfinite(value)}

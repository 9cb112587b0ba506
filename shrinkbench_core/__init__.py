"""ShrinkBench core: the plugin contract, registry, pruning engine and runner.

Importing this package is cheap: nothing here imports torch until a component
is actually used. The Python API (``import shrinkbench_core as sb``;
``sb.prune``, ``sb.evaluate``, ``sb.run``, ...) lives in
:mod:`shrinkbench_core.api` and is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from shrinkbench_core.api import (
        PruneResult,
        evaluate,
        export,
        get_dataset,
        get_model,
        get_strategy,
        list_components,
        prune,
        run,
        run_sweep,
    )

_API = (
    "PruneResult",
    "evaluate",
    "export",
    "get_dataset",
    "get_model",
    "get_strategy",
    "list_components",
    "prune",
    "run",
    "run_sweep",
)

__all__ = [
    "PruneResult",
    "__version__",
    "evaluate",
    "export",
    "get_dataset",
    "get_model",
    "get_strategy",
    "list_components",
    "prune",
    "run",
    "run_sweep",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from shrinkbench_core import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

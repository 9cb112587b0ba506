"""Sweeps: grids of experiments run on a local process pool or a Ray cluster.

``shrinkbench sweep FILE`` reads a sweep file (:mod:`.config`), skips the runs
already complete, and executes the rest with :mod:`.local` or
:mod:`.ray_executor`; both call :func:`.worker.execute_run`. Importing this
package is cheap: torch is imported only when a sweep runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shrinkbench_core.sweep.config import PlannedRun, SweepFile, expand_sweep, load_sweep_file
    from shrinkbench_core.sweep.driver import SweepSummary, run_sweep

__all__ = [
    "PlannedRun", "SweepFile", "SweepSummary", "expand_sweep", "load_sweep_file", "run_sweep",
]

_EXPORTS = {
    "PlannedRun": "config",
    "SweepFile": "config",
    "expand_sweep": "config",
    "load_sweep_file": "config",
    "SweepSummary": "driver",
    "run_sweep": "driver",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The rows the ``shrinkbench_epoch_end`` hooks receive, and the ``logs.csv`` columns.

See :mod:`shrinkbench_core.lifecycle` for the dispatch and :mod:`shrinkbench_core.hookspecs`
for the events.
"""

from __future__ import annotations

from typing import Any

# hookspec names of ``shrinkbench_epoch_end`` logs -> the runner's own log columns
LOG_ALIASES = {
    "train_acc": "train_top1",
    "val_loss": "validation_loss",
    "val_acc": "validation_top1",
}


def epoch_logs(row: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
    """The ``logs`` of ``shrinkbench_epoch_end``: the epoch's log row, its wall time, and the
    hookspec's names (``train_acc``, ``val_loss``, ``val_acc``; None without validation)."""
    logs = dict(row)
    if seconds is not None:
        logs.setdefault("epoch_seconds", seconds)
    for alias, column in LOG_ALIASES.items():
        logs[alias] = row.get(column)
    return logs


def log_row(logs: dict[str, Any]) -> dict[str, Any]:
    """The ``logs.csv`` row of an epoch's ``logs`` (without the hookspec's aliases)."""
    return {key: value for key, value in logs.items() if key not in LOG_ALIASES}

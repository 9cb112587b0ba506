"""``logs.csv``: one row per fine-tuning epoch, written by the built-in plugin from run events.

It is a plugin on the lifecycle hooks like any tracker: ``shrinkbench_epoch_end`` of the
``finetune`` stage adds the epoch's row (rows of a later epoch, left by an interrupted
attempt, are dropped first), and ``shrinkbench_run_start`` of a resumed run rebuilds the
file from the rows the last checkpoint committed (``checkpoints/progress.json``), so a
resumed run's ``logs.csv`` holds every epoch exactly once. Torch-free.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from shrinkbench_core.hookspecs import hookimpl

LOGGED_STAGE = "finetune"
_ALIASES = ("train_acc", "val_loss", "val_acc")  # the hookspec's names, duplicates of columns


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``logs.csv`` (empty when missing); ``epoch`` as an int."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``logs.csv`` atomically (columns in order of first appearance)."""
    from shrinkbench_core.experiment.rundir import RunDirectory

    RunDirectory(path.parent).write_logs(rows)


@hookimpl
def shrinkbench_run_start(run: Any) -> None:
    """A resumed run: ``logs.csv`` = the committed rows of ``checkpoints/progress.json``."""
    if not run.resumed:
        return
    from shrinkbench_core.experiment.atomic import read_json

    progress = read_json(Path(run.path) / "checkpoints" / "progress.json") or {}
    rows = [{k: v for k, v in row.items() if k not in _ALIASES} for row in progress.get("logs", [])]
    path = Path(run.path) / "logs.csv"
    if rows:
        write_rows(path, rows)
    elif path.exists():
        path.unlink()


@hookimpl
def shrinkbench_epoch_end(run: Any, stage: str, epoch: int, logs: dict) -> None:
    """Append a fine-tuning epoch's row to ``logs.csv``."""
    if stage != LOGGED_STAGE:
        return
    path = Path(run.path) / "logs.csv"
    rows = [row for row in read_rows(path) if row["epoch"] < epoch]
    rows.append({k: v for k, v in logs.items() if k not in _ALIASES})
    write_rows(path, rows)

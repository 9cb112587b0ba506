"""The run directory of one experiment, and its status.

Layout: ``config.json``, ``status.json``, ``metrics.json`` (written once, when
the run completes), ``logs.csv``, ``masks.pt``, ``masks_summary.csv``,
``checkpoints/`` (``last.pt``, ``best.pt``, ``progress.json``) and ``model.pt``
(the final weights). Every file is written atomically; a run is complete only
when ``status.json`` says so.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Any

from shrinkbench_core.errors import UserError
from shrinkbench_core.experiment.atomic import atomic_write_json, atomic_write_text, read_json

COMPLETE, RUNNING, INTERRUPTED, FAILED = "complete", "running", "interrupted", "failed"


class RunDirectory:
    """Paths and state of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.status_file = self.path / "status.json"
        self.metrics = self.path / "metrics.json"
        self.logs = self.path / "logs.csv"
        self.masks = self.path / "masks.pt"
        self.masks_summary = self.path / "masks_summary.csv"
        self.checkpoints = self.path / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last.pt"
        self.best_checkpoint = self.checkpoints / "best.pt"
        self.progress = self.checkpoints / "progress.json"
        self.model = self.path / "model.pt"

    def prepare(self) -> None:
        """Create the directory, failing clearly when it cannot be written."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise UserError(
                f"cannot write to the output directory {self.path}: {error.strerror or error}. "
                "Choose another with --output."
            ) from None
        if not os.access(self.path, os.W_OK):
            raise UserError(
                f"output directory {self.path} is not writable; choose another with --output"
            )

    def status(self) -> dict[str, Any]:
        """The recorded status (``{}`` when the run never started)."""
        try:
            return read_json(self.status_file) or {}
        except ValueError:
            return {"status": "corrupt"}

    @property
    def is_complete(self) -> bool:
        """Whether the run finished and its metrics were written."""
        return self.status().get("status") == COMPLETE and self.metrics.is_file()

    def set_status(self, status: str, **details: Any) -> None:
        """Record the run's status atomically."""
        atomic_write_json(self.status_file, {"status": status, **details})

    def clear(self) -> None:
        """Remove everything from a previous attempt (``--force``)."""
        if self.path.exists():
            shutil.rmtree(self.path)

    def write_logs(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``logs.csv`` (one row per epoch) atomically."""
        if not rows:
            return
        fields: list[str] = []
        for row in rows:
            fields += [key for key in row if key not in fields]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.logs, buffer.getvalue())

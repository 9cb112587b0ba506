"""The run directory of one experiment, and its status.

Layout: ``config.json``, ``status.json``, ``metrics.json`` (written once, when
the run completes), ``logs.csv``, ``masks.pt``, ``masks_summary.csv``,
``checkpoints/`` (``last.pt``, ``best.pt``, ``progress.json``) and ``model.pt``
(the final weights). Every file is written atomically; a run is complete only
when ``status.json`` says so and ``metrics.json`` is there and readable.

One process writes a run directory at a time: :meth:`RunDirectory.lock` holds an exclusive
``fcntl`` lock on ``<output>/.locks/<name>.lock`` for the run's lifetime (the OS releases it
when the process dies, however it dies); a second writer is told which process holds it.
Redoing a complete run (``--force``) first moves it to ``<output>/.replaced/<name>``: it is
deleted only when the new run completes, and put back when the new run fails.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import shutil
import socket
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shrinkbench_core.errors import UserError
from shrinkbench_core.experiment.atomic import atomic_write_json, atomic_write_text, read_json

COMPLETE, RUNNING, INTERRUPTED, FAILED = "complete", "running", "interrupted", "failed"


class RunBusyError(UserError):
    """Another process is writing this run directory."""


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
        root = self.path.parent.parent
        self.lock_file = root / ".locks" / f"{self.path.name}.lock"
        self.backup = root / ".replaced" / self.path.name

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
        for stale in [*self.path.glob(".*.tmp"), *self.checkpoints.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a killed writer (the caller holds the lock)
        (self.path / "error.txt").unlink(missing_ok=True)  # an earlier attempt's failure

    def status(self) -> dict[str, Any]:
        """The recorded status (``{}`` when the run never started)."""
        try:
            status = read_json(self.status_file) or {}
        except (OSError, ValueError):
            return {"status": "corrupt"}
        return status if isinstance(status, dict) else {"status": "corrupt"}

    @property
    def is_complete(self) -> bool:
        """Whether the run finished: status ``complete``, readable ``metrics.json`` and
        ``config.json``, and ``model.pt`` / ``masks.pt`` whole (a damaged one makes a rerun
        resume and rewrite them).

        The weight files are checked as ``torch.save`` writes them, a zip archive: its
        central directory sits at the end, so a truncated, emptied or overwritten file fails
        the check without reading the tensors.
        """
        if self.status().get("status") != COMPLETE:
            return False
        if not all(zipfile.is_zipfile(f) for f in (self.model, self.masks) if f.exists()):
            return False
        try:
            return all(isinstance(read_json(f), dict) for f in (self.metrics, self.config))
        except (OSError, ValueError):
            return False

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this run's writer lock; :class:`RunBusyError` when another process has it."""
        try:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_file, "a+")  # noqa: SIM115 - closed below
        except OSError as error:
            raise UserError(
                f"cannot write to the output directory {self.lock_file.parent.parent}: "
                f"{error.strerror or error}. Choose another with --output."
            ) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunBusyError(
                    f"run {self.path} is being written by {holder}; wait for it to end (or "
                    "stop it), then rerun to resume or report it"
                ) from None
            try:
                handle.seek(0)
                handle.truncate()
                started = time.strftime("%Y-%m-%d %H:%M:%S")
                handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
                handle.flush()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def set_aside(self) -> None:
        """Before redoing the run from scratch: keep a complete run in :attr:`backup`.

        A backup left by an earlier attempt that never completed is kept (it is the last
        complete result); an incomplete run directory is simply removed.
        """
        if self.backup.exists() or not self.is_complete:
            self.clear()
            return
        self.backup.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, self.backup)

    def recover(self) -> None:
        """Put back a complete run set aside by a redo that never got to create the new one."""
        if self.backup.exists() and not self.path.exists():
            os.replace(self.backup, self.path)

    def settle(self, status: str) -> None:
        """After a redo ended with ``status``: drop the backup when the new run completed,
        restore it over a failed one; an interrupted one keeps both (rerun to resume)."""
        if not self.backup.exists():
            return
        if status == COMPLETE:
            shutil.rmtree(self.backup)
        elif status == FAILED:
            self.clear()
            os.replace(self.backup, self.path)

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

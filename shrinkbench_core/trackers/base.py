"""The base of the built-in trackers: lifecycle hooks that call overridable methods."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.lifecycle import RunInfo


class Tracker:
    """A plugin object observing one run; subclasses override the ``on_*`` methods.

    When a method raises, :meth:`abort` is called first (so the tracker closes what it
    opened and keeps what it already wrote), then the error propagates to
    :class:`~shrinkbench_core.lifecycle.RunEvents`, which reports it in one line and
    disables the tracker for the rest of the run.
    """

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    # -- what a tracker does (override) ---------------------------------------------------
    def on_start(self, run: RunInfo) -> None:
        """The run starts or resumes; import the library and open the tracker's run."""

    def on_epoch(self, run: RunInfo, stage: str, epoch: int, logs: dict[str, Any]) -> None:
        """A training epoch of ``stage`` ended; ``logs`` is its ``logs.csv`` row."""

    def on_stage(self, run: RunInfo, stage: str, metrics: dict[str, Any]) -> None:
        """A stage was evaluated; ``metrics`` maps metric names to result dicts."""

    def on_pruning(
        self, run: RunInfo, step: int, compression: float, summary: Any, details: dict[str, Any]
    ) -> None:
        """The masks changed (pruning step ``step``)."""

    def on_end(
        self, run: RunInfo, status: str, metrics: dict[str, Any] | None, error: str | None
    ) -> None:
        """The run ended with ``status`` (complete, failed, interrupted); close the run."""

    def abort(self) -> None:
        """Close whatever is open after a failure of this tracker (best effort)."""

    # -- the hooks --------------------------------------------------------------------------
    def _guarded(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            with contextlib.suppress(Exception):
                self.abort()
            raise

    @hookimpl
    def shrinkbench_run_start(self, run: RunInfo) -> None:
        self._guarded(self.on_start, run)

    @hookimpl
    def shrinkbench_epoch_end(self, run: RunInfo, stage: str, epoch: int, logs: dict) -> None:
        self._guarded(self.on_epoch, run, stage, epoch, logs)

    @hookimpl
    def shrinkbench_stage_end(self, run: RunInfo, stage: str, metrics: dict) -> None:
        self._guarded(self.on_stage, run, stage, metrics)

    @hookimpl
    def shrinkbench_pruning_step(
        self, run: RunInfo, step: int, compression: float, summary: Any, details: dict
    ) -> None:
        self._guarded(self.on_pruning, run, step, compression, summary, details)

    @hookimpl
    def shrinkbench_run_end(
        self, run: RunInfo, status: str, metrics: dict | None, error: str | None
    ) -> None:
        self._guarded(self.on_end, run, status, metrics, error)

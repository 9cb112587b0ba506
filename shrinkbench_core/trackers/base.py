"""The base of the built-in trackers: lifecycle hooks that call overridable methods.

By default a tracker's methods run on a worker thread of their own, in the order of the
events, so the run never waits for the tracker's library (importing it, opening its run,
writing to disk or the network): the hook only hands a copy of the event to the thread.
``shrinkbench_run_end`` waits until every event has been handled.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel

from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.lifecycle import RunInfo

#: Seconds the end of a run (or of the process) waits for a tracker to handle its events.
DRAIN_TIMEOUT = 300.0
#: The hook that calls each method, to say which event a failure happened in.
HOOK_OF = {
    "on_start": "shrinkbench_run_start",
    "on_epoch": "shrinkbench_epoch_end",
    "on_stage": "shrinkbench_stage_end",
    "on_pruning": "shrinkbench_pruning_step",
    "on_end": "shrinkbench_run_end",
}


class TrackerError(RuntimeError):
    """A tracker's failure, raised by the hook after the event it happened in."""


class Tracker:
    """A plugin object observing one run; subclasses override the ``on_*`` methods.

    When a method raises, :meth:`abort` is called (so the tracker closes what it opened and
    keeps what it already wrote) and a :class:`TrackerError` naming the event and the error
    is raised by the tracker's next hook (in the background mode, the hook after the failing
    event; ``shrinkbench_run_end`` waits for the last one) to
    :class:`~shrinkbench_core.lifecycle.RunEvents`, which reports it in one line and disables
    the tracker for the rest of the run.
    """

    #: Handle events on a worker thread (True) or in the hook itself (False).
    background: ClassVar[bool] = True

    def __init__(self, params: BaseModel) -> None:
        self.params = params
        self._error: Exception | None = None
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None

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

    # -- dispatch ---------------------------------------------------------------------------
    def _handle(self, method: Callable[..., None], args: tuple) -> None:
        if self._error is not None:
            return
        try:
            method(*args)
        except Exception as error:
            hook = HOOK_OF.get(method.__name__, method.__name__)
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            self._error = TrackerError(f"handling {hook}: {message}")
            self._error.__cause__ = error
            with contextlib.suppress(Exception):
                self.abort()

    def _raise_failure(self) -> None:
        if self._error is not None:
            self.drain()  # the worker only skips what is left; the tracker is done
            raise self._error

    def _submit(self, method: Callable[..., None], run: RunInfo, *args: Any) -> None:
        self._raise_failure()
        if not self.background:
            self._handle(method, (run, *args))
            self._raise_failure()
            return
        if self._worker is None:
            self._queue = queue.Queue()
            self._worker = threading.Thread(
                target=self._work, name=f"shrinkbench-{type(self).__name__}", daemon=True
            )
            self._worker.start()
            atexit.register(self.drain)
        with contextlib.suppress(Exception):  # the runner may reuse its dicts
            args = copy.deepcopy(args)
        assert self._queue is not None
        self._queue.put((method, (run, *args)))

    def _work(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            self._handle(*item)
            self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every event submitted so far has been handled."""
        if self._worker is not None and self._queue is not None:
            self._queue.join()

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait until every submitted event is handled, and stop the worker thread."""
        worker, self._worker = self._worker, None
        if worker is not None and self._queue is not None:
            self._queue.put(None)
            worker.join(timeout)
            atexit.unregister(self.drain)

    # -- the hooks --------------------------------------------------------------------------
    @hookimpl
    def shrinkbench_run_start(self, run: RunInfo) -> None:
        self._submit(self.on_start, run)

    @hookimpl
    def shrinkbench_epoch_end(self, run: RunInfo, stage: str, epoch: int, logs: dict) -> None:
        self._submit(self.on_epoch, run, stage, epoch, logs)

    @hookimpl
    def shrinkbench_stage_end(self, run: RunInfo, stage: str, metrics: dict) -> None:
        self._submit(self.on_stage, run, stage, metrics)

    @hookimpl
    def shrinkbench_pruning_step(
        self, run: RunInfo, step: int, compression: float, summary: Any, details: dict
    ) -> None:
        self._submit(self.on_pruning, run, step, compression, summary, details)

    @hookimpl
    def shrinkbench_run_end(
        self, run: RunInfo, status: str, metrics: dict | None, error: str | None
    ) -> None:
        self._submit(self.on_end, run, status, metrics, error)
        self.drain()
        self._raise_failure()

"""What a worker does with one run of a sweep, whichever executor sent it.

:func:`execute_run` is the single entry point both executors call: in a local
worker process or in a Ray task. It never raises for a failing run: the
failure is recorded in the run directory (``status.json``) and returned as a
small :class:`RunOutcome`, so the rest of the sweep continues.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"
INTERRUPTED, NOT_RUN = "interrupted", "not run"
OUTCOMES = (SUCCEEDED, FAILED, SKIPPED, INTERRUPTED, NOT_RUN)

# Worker-process state for SIGINT handling (see init_worker).
_running = False
_stopping = False


@dataclass
class RunOutcome:
    """What became of one run of a sweep."""

    name: str
    status: str  # one of OUTCOMES
    seconds: float = 0.0
    error: str | None = None
    resumed_from_epoch: int | None = None
    dense_trained: bool | None = None  # whether this run trained its dense baseline
    worker: str | None = None  # "host:pid" of the worker that ran it

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_run(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` concurrent runs: the cores shared out, at least 1."""
    return max(1, (cores or available_cores()) // max(1, workers))


def _on_interrupt(signum: int, frame: Any) -> None:
    """Stop this worker: interrupt its run once; later runs it receives are not started.

    A worker may get SIGINT twice (from the terminal and forwarded by the
    driver); the second must not interrupt the recording of the first. An idle
    worker must not die, or the whole process pool breaks.
    """
    global _stopping
    if _stopping:
        return
    _stopping = True
    if _running:
        raise KeyboardInterrupt


def init_worker(threads: int) -> None:
    """Set up a local worker process: torch threads and graceful SIGINT handling."""
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, _on_interrupt)


def execute_run(
    config: dict[str, Any], name: str, threads: int | None = None, quiet: bool = True
) -> RunOutcome:
    """Run (or resume) one experiment from its config dict; record and return its outcome."""
    import socket

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if _stopping:
        return RunOutcome(name, NOT_RUN, worker=worker)
    try:
        result = _run_experiment(config, threads, quiet)
    except KeyboardInterrupt:
        return RunOutcome(name, INTERRUPTED, time.perf_counter() - started, worker=worker)
    except Exception as error:  # recorded; the sweep goes on
        message = f"{type(error).__name__}: {error}"
        run_path = Path(config["output"]) / "runs" / name
        record_failure(run_path, config, message, traceback.format_exc())
        return RunOutcome(name, FAILED, time.perf_counter() - started, message, worker=worker)
    dense = result.metrics.get("dense_source") or {}
    return RunOutcome(
        name,
        SKIPPED if result.already_complete else SUCCEEDED,
        time.perf_counter() - started,
        resumed_from_epoch=result.resumed_from_epoch,
        dense_trained=dense.get("trained_now"),
        worker=worker,
    )


def _run_experiment(config: dict[str, Any], threads: int | None, quiet: bool) -> Any:
    global _running
    _running = True
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from shrinkbench_core.config import build_config
        from shrinkbench_core.errors import show_shrinkbench_warnings
        from shrinkbench_core.experiment.resolve import resolve_config
        from shrinkbench_core.experiment.runner import Experiment
        from shrinkbench_core.registry import get_registry

        show_shrinkbench_warnings()  # one line each, as on the CLI
        resolved = resolve_config(build_config(config), get_registry())
        return Experiment(resolved, quiet=quiet).run()
    finally:
        _running = False


def record_failure(path: Path, config: dict[str, Any], message: str, details: str) -> None:
    """Make sure a failed run's directory says so, even when it failed before it started."""
    from shrinkbench_core.experiment.atomic import atomic_write_json, read_json
    from shrinkbench_core.experiment.rundir import FAILED as FAILED_STATUS
    from shrinkbench_core.experiment.rundir import RunDirectory

    try:
        run_dir = RunDirectory(path)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        if not run_dir.config.is_file():
            atomic_write_json(run_dir.config, {"config": config})
        status = read_json(run_dir.status_file) or {}
        if status.get("status") != FAILED_STATUS:
            run_dir.set_status(FAILED_STATUS, error=message)
        (run_dir.path / "error.txt").write_text(details)
    except (OSError, ValueError):
        pass  # an unwritable output is already in the outcome's error

"""The local executor: a pool of worker processes on this machine.

Each worker is a fresh (spawned) Python process with
``torch.set_num_threads(cores // workers)`` so that concurrent runs do not
oversubscribe the cores. Ctrl-C interrupts the running experiments (their run
directories say ``interrupted`` and resume on the next sweep), and no new run
starts.

Workers never import the caller's ``__main__``. ``spawn`` normally re-runs
the main script in every worker (to unpickle objects defined there), which
re-executes a script's top level: without an ``if __name__ == "__main__":``
guard the sweep then starts itself again in each worker and the pool dies.
Workers get only plain config dicts and the core's own functions, so the
main module is hidden from ``multiprocessing`` while they start
(:func:`main_module_hidden`): a sweep runs the same from a guarded script, an
unguarded one, ``python - < file`` and a notebook.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from shrinkbench_core.sweep.config import PlannedRun
from shrinkbench_core.sweep.worker import (
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    RunOutcome,
    execute_run,
    init_worker,
)

Report = Callable[[PlannedRun, RunOutcome], None]


def run_local(runs: list[PlannedRun], workers: int, threads: int, report: Report) -> bool:
    """Execute ``runs`` on ``workers`` processes, calling ``report`` as each one ends.

    Returns whether the sweep was interrupted (Ctrl-C); every run gets an outcome.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(threads,),
    )
    futures: dict[Future[RunOutcome], PlannedRun] = {}
    reported: set[int] = set()
    try:
        with main_module_hidden():  # the pool starts its workers inside submit()
            for run in runs:
                futures[pool.submit(execute_run, run.config, run.name)] = run
        for future in as_completed(futures):
            run = futures[future]
            reported.add(run.index)
            report(run, _outcome(future, run))
        return False
    except KeyboardInterrupt:
        _interrupt_workers(pool)
        for future in futures:
            future.cancel()
        for future, run in futures.items():
            if run.index not in reported:
                report(run, _outcome(future, run, interrupted=True))
        return True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Start spawned processes without re-importing ``__main__`` in them.

    ``multiprocessing.spawn`` asks a child to import the parent's main module
    when that module has a ``__spec__`` (``python -m``) or a ``__file__`` (a
    script). Both are hidden for the duration of the block and restored after.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: vars(main)[name] for name in ("__spec__", "__file__") if name in vars(main)}
    try:
        main.__spec__ = None
        if "__file__" in saved:
            del main.__file__
        yield
    finally:
        if "__spec__" in saved:
            main.__spec__ = saved["__spec__"]
        else:
            vars(main).pop("__spec__", None)
        if "__file__" in saved:
            main.__file__ = saved["__file__"]


def _outcome(future: Future[RunOutcome], run: PlannedRun, interrupted: bool = False) -> RunOutcome:
    if future.cancelled():
        return RunOutcome(run.name, NOT_RUN)
    try:
        return future.result()
    except BrokenProcessPool as error:
        return RunOutcome(run.name, FAILED, error=f"worker process died: {error}")
    except KeyboardInterrupt:
        return RunOutcome(run.name, INTERRUPTED if interrupted else FAILED)


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    """Forward SIGINT to the pool's workers (a no-op for those that already got it)."""
    processes = getattr(pool, "_processes", None) or {}
    for pid in list(processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)

"""The Ray executor: each run is a Ray task calling the same worker function as the local pool.

Ray schedules the tasks (we keep at most ``workers`` in flight when asked to,
nothing more). With ``address`` the sweep joins an existing cluster; without
it a local Ray instance is started for the sweep and shut down afterwards.
Every node must see the sweep's output directory at the same path (a shared
filesystem), which is also what lets runs share one dense baseline.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from shrinkbench_core.errors import UserError
from shrinkbench_core.sweep.config import PlannedRun
from shrinkbench_core.sweep.worker import FAILED, INTERRUPTED, NOT_RUN, RunOutcome, execute_run

Report = Callable[[PlannedRun, RunOutcome], None]
INSTALL_HINT = "pip install 'shrinkbench-core[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(
            f"the ray executor needs Ray, which is not installed: {INSTALL_HINT} "
            "(or use --executor local)"
        ) from None
    return ray


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at a ``host:port`` address (Ray would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as error:
        raise UserError(
            f"cannot connect to the Ray cluster at {address}: {error.strerror or error}. "
            "Start one with `ray start --head` and pass the address it prints, or leave out "
            "--address to start a local Ray instance for the sweep."
        ) from None


def start_ray(ray: Any, address: str | None, workers: int | None) -> None:
    """Join the cluster at ``address``, or start a local one with ``workers`` CPUs."""
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, **options)
    except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE") is None:
            hint = (" If the cluster uses token authentication (Ray enables it when "
                    "~/.ray/auth_token exists), set RAY_AUTH_MODE=token for the sweep.")
        raise UserError(f"cannot connect to {where}: {error}.{hint}") from None


def run_ray(
    runs: list[PlannedRun],
    workers: int | None,
    threads: int,
    report: Report,
    address: str | None = None,
) -> bool:
    """Execute ``runs`` as Ray tasks, calling ``report`` as each one ends.

    ``workers`` caps the runs in flight (``None``: as many as the cluster
    schedules). Returns whether the sweep was interrupted (Ctrl-C).
    """
    ray = import_ray()
    start_ray(ray, address, workers)
    task = ray.remote(num_cpus=1, max_retries=0)(execute_run)
    waiting = list(runs)
    in_flight: dict[Any, PlannedRun] = {}
    limit = workers or len(runs)
    try:
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                run = waiting.pop(0)
                in_flight[task.remote(run.config, run.name, threads)] = run
            (done,), _ = ray.wait(list(in_flight), num_returns=1)
            run = in_flight.pop(done)
            report(run, _outcome(ray, done, run))
        return False
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref)
        for ref, run in in_flight.items():
            report(run, _outcome(ray, ref, run, interrupted=True))
        for run in waiting:
            report(run, RunOutcome(run.name, NOT_RUN))
        return True
    finally:
        ray.shutdown()


def _outcome(ray: Any, ref: Any, run: PlannedRun, interrupted: bool = False) -> RunOutcome:
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return RunOutcome(run.name, INTERRUPTED)
    except ray.exceptions.RayError as error:
        status = INTERRUPTED if interrupted else FAILED
        return RunOutcome(run.name, status, error=f"{type(error).__name__}: {error}")

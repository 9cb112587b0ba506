"""The Ray executor: each run is a Ray task calling the same worker function as the local pool.

Ray schedules the tasks (we keep at most ``workers`` in flight when asked to,
nothing more). With ``address`` the sweep joins an existing cluster; without
it a local Ray instance is started for the sweep and shut down afterwards.
Every node must see the sweep's output directory at the same path (a shared
filesystem), which is also what lets runs share one dense baseline.

At the edges: an address is probed before Ray is asked to join it (Ray retries
for ever when something that is not Ray listens there); Ctrl-C cancels the runs
in flight, marks them interrupted and still returns, so the driver prints its
summary and writes ``sweep.json``; a worker that Ray tells to exit in the middle
of a run (its driver died) leaves that run interrupted and resumable, not failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shrinkbench_core.errors import UserError
from shrinkbench_core.sweep.config import PlannedRun
from shrinkbench_core.sweep.worker import FAILED, INTERRUPTED, NOT_RUN, RunOutcome, execute_run

Report = Callable[[PlannedRun, RunOutcome], None]
INSTALL_HINT = "pip install 'shrinkbench-core[ray]'"
PROBE_TIMEOUT = 5.0  # seconds to connect, and again for the handshake's answer
CANCEL_TIMEOUT = 30.0  # seconds to wait for a cancelled run to record itself
# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and
# Ray Client) answers with a SETTINGS frame of its own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_FRAME = 0x04


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


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``[ray://]host:port`` address; ``None`` for ``auto`` or no port."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast unless a Ray (gRPC) server answers at a ``host:port`` address.

    Connects, then sends the HTTP/2 preface every gRPC client sends first and waits at
    most ``timeout`` seconds for the server's SETTINGS frame. Anything else (an HTTP/1
    reply, a closed connection, silence) is a :class:`UserError` saying what was found.
    Skipped for addresses without a port (``auto``) and under ``RAY_USE_TLS``.
    """
    where = split_address(address)
    if where is None:
        return
    try:
        connection = socket.create_connection(where, timeout=timeout)
    except OSError as error:
        raise UserError(
            f"cannot connect to the Ray cluster at {address}: {error.strerror or error}. "
            "Start one with `ray start --head` and pass the address it prints, or leave out "
            "--address to start a local Ray instance for the sweep."
        ) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        connection.close()
        return  # the handshake would need TLS first; let Ray connect
    with connection:
        found = _grpc_answer(connection, timeout)
    if found is not None:
        raise UserError(
            f"{address} is not a Ray cluster: {found}. Pass the address `ray start --head` "
            "printed (the GCS port, 6379 by default; ray://HOST:10001 for Ray Client), "
            "or leave out --address to start a local Ray instance for the sweep."
        )


def _grpc_answer(connection: socket.socket, timeout: float) -> str | None:
    """``None`` when the server answers like gRPC, else a description of what it did."""
    connection.settimeout(timeout)
    try:
        connection.sendall(_HTTP2_PREFACE)
        data = connection.recv(64)
    except TimeoutError:
        return f"something listens there but did not answer a gRPC handshake within {timeout:g} s"
    except OSError as error:
        return f"the connection failed during a gRPC handshake ({error.strerror or error})"
    if not data:
        return "something listens there but closed the connection without a gRPC answer"
    if len(data) >= 9 and data[3] == _SETTINGS_FRAME:
        return None
    if data.startswith(b"HTTP/"):
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        return (f"an HTTP server answered ({line!r}; the Ray dashboard, port 8265, is not the "
                "cluster address)")
    shown = data[:24].decode("latin-1").encode("unicode_escape").decode()
    return f"something that is not gRPC answered ({shown!r})"


def auth_hint(address: str | None) -> str:
    """The token-authentication hint, for an address with a port when RAY_AUTH_MODE is unset."""
    if not address or split_address(address) is None or os.environ.get("RAY_AUTH_MODE"):
        return ""
    return (" If the cluster uses token authentication (Ray enables it when "
            "~/.ray/auth_token exists), set RAY_AUTH_MODE=token for the sweep.")


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
        raise UserError(f"cannot connect to {where}: {error}.{auth_hint(address)}") from None


def ray_task(config: dict[str, Any], name: str, threads: int | None) -> RunOutcome:
    """:func:`execute_run` in a Ray worker; a run stopped by ``SystemExit`` is interrupted.

    Ray raises ``SystemExit`` in a task whose worker it shuts down (its driver was
    killed, or the task was force-cancelled). The run could be resumed, so its directory
    must say ``interrupted``, not ``failed``.
    """
    try:
        return execute_run(config, name, threads)
    except SystemExit:
        mark_interrupted(Path(config["output"]) / "runs" / name)
        raise


def mark_interrupted(path: Path) -> None:
    """Record an unfinished run as interrupted (a complete run is left as it is)."""
    from shrinkbench_core.experiment.atomic import read_json
    from shrinkbench_core.experiment.rundir import COMPLETE, RunDirectory

    run_dir = RunDirectory(path)
    with contextlib.suppress(OSError, ValueError):
        if (read_json(run_dir.status_file) or {}).get("status") not in (None, COMPLETE):
            run_dir.set_status(
                INTERRUPTED, message="its Ray worker was stopped; rerun the sweep to resume"
            )


def run_ray(
    runs: list[PlannedRun],
    workers: int | None,
    threads: int,
    report: Report,
    address: str | None = None,
) -> bool:
    """Execute ``runs`` as Ray tasks, calling ``report`` as each one ends.

    ``workers`` caps the runs in flight (``None``: as many as the cluster
    schedules). Returns whether the sweep was interrupted (Ctrl-C); every run gets an
    outcome either way.
    """
    ray = import_ray()
    waiting = list(runs)
    in_flight: dict[Any, PlannedRun] = {}
    try:
        start_ray(ray, address, workers)
        task = ray.remote(num_cpus=1, max_retries=0)(ray_task)
        limit = workers or len(runs)
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                run = waiting.pop(0)
                in_flight[task.remote(run.config, run.name, threads)] = run
            (done,), _ = ray.wait(list(in_flight), num_returns=1)
            run = in_flight.pop(done)
            report(run, _outcome(ray, done, run))
        return False
    except KeyboardInterrupt:
        with _sigint_ignored():
            _stop_in_flight(ray, in_flight, report)
            for run in waiting:
                report(run, RunOutcome(run.name, NOT_RUN))
        return True
    finally:
        with _sigint_ignored(), contextlib.suppress(Exception):
            ray.shutdown()


def _stop_in_flight(ray: Any, in_flight: dict[Any, PlannedRun], report: Report) -> None:
    """Cancel the runs in flight and report each as interrupted, whatever Ray raises."""
    for ref in in_flight:
        with contextlib.suppress(Exception):
            ray.cancel(ref)  # KeyboardInterrupt in the task: the run records "interrupted"
    for ref, run in in_flight.items():
        try:
            outcome = _outcome(ray, ref, run, interrupted=True, timeout=CANCEL_TIMEOUT)
        except Exception as error:  # Ray's cancel path may raise anything; the run stopped
            outcome = RunOutcome(run.name, INTERRUPTED, error=f"{type(error).__name__}: {error}")
        if outcome.status == FAILED:
            outcome = RunOutcome(run.name, INTERRUPTED, outcome.seconds, outcome.error,
                                 worker=outcome.worker)
        report(run, outcome)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore further Ctrl-C while the sweep records how it stopped."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _outcome(
    ray: Any, ref: Any, run: PlannedRun, interrupted: bool = False, timeout: float | None = None
) -> RunOutcome:
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.TaskCancelledError:
        return RunOutcome(run.name, INTERRUPTED)
    except ray.exceptions.GetTimeoutError:
        return RunOutcome(run.name, INTERRUPTED, error="did not stop within "
                          f"{CANCEL_TIMEOUT:g} s of the interrupt")
    except ray.exceptions.RayError as error:
        status = INTERRUPTED if interrupted else FAILED
        return RunOutcome(run.name, status, error=f"{type(error).__name__}: {error}")

"""Ray at the edges: addresses that are not Ray, Ctrl-C on a Ray sweep, workers told to exit."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_sweep import write_sweep
from test_sweep_ray import RAY_ENV, ray_cluster  # noqa: F401 (a fixture)

from shrinkbench_core.errors import UserError
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.sweep.config import PlannedRun
from shrinkbench_core.sweep.ray_executor import (
    _stop_in_flight,
    auth_hint,
    check_reachable,
    ray_task,
)
from shrinkbench_core.sweep.worker import INTERRUPTED, RunOutcome


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says anything."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


class _Http(http.server.BaseHTTPRequestHandler):
    def handle(self) -> None:  # answer anything with an HTTP/1.1 status line
        self.rfile.read1(1024)
        self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def http_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Http)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def grpc_like_server():
    """Answers the HTTP/2 preface with a SETTINGS frame, as a gRPC server (Ray's GCS) does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(64)
                connection.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_silent_port_is_reported_within_the_timeout(silent_server):
    started = time.monotonic()
    with pytest.raises(UserError, match="is not a Ray cluster: something listens there but did "
                                         "not answer a gRPC handshake within 1 s"):
        check_reachable(silent_server, timeout=1)
    assert time.monotonic() - started < 5


def test_an_http_server_is_named(http_server):
    with pytest.raises(UserError, match=r"an HTTP server answered \('HTTP/1.1 400 Bad Request'"):
        check_reachable(http_server, timeout=2)


def test_a_grpc_server_passes_the_probe(grpc_like_server):
    check_reachable(grpc_like_server, timeout=2)
    check_reachable("auto")  # no port: nothing to probe


def test_the_sweep_cli_exits_2_quickly_on_a_port_that_is_not_ray(tmp_path, silent_server):
    pytest.importorskip("ray")
    path = write_sweep(tmp_path, ["RandomPruning"], [2], [0])
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "shrinkbench_core.cli", "sweep", str(path), "--executor", "ray",
         "--address", silent_server], capture_output=True, text=True, timeout=120, env=RAY_ENV)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not a Ray cluster" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_token_hint_is_given_only_for_an_address_with_a_port(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "RAY_AUTH_MODE=token" in auth_hint("10.0.0.1:6379")
    assert "RAY_AUTH_MODE=token" in auth_hint("ray://10.0.0.1:10001")
    assert auth_hint("auto") == auth_hint("10.0.0.1") == auth_hint(None) == ""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert auth_hint("10.0.0.1:6379") == ""


class _SystemExitAtEpochEnd:
    """A plugin that stops the run the way Ray stops a worker whose driver died."""

    @hookimpl
    def shrinkbench_epoch_end(self, run, stage, epoch, logs):
        raise SystemExit(1)


def test_a_worker_told_to_exit_leaves_its_run_interrupted_not_failed(tmp_path):
    from shrinkbench_core.config import build_config
    from shrinkbench_core.experiment.resolve import resolve_config
    from shrinkbench_core.registry import get_registry

    registry = get_registry()
    config = build_config({"output": str(tmp_path), "dense": {"epochs": 1},
                           "finetune": {"epochs": 1}, "metrics": ["size"]})
    resolved = resolve_config(config, registry)
    from shrinkbench_core.experiment.runner import Experiment

    name = Experiment(resolved).run_dir.path.name
    plugin = _SystemExitAtEpochEnd()
    registry.manager.register(plugin, name="system-exit-at-epoch-end")
    try:
        with pytest.raises(SystemExit):
            ray_task(config.model_dump(mode="json"), name, 1)
    finally:
        registry.manager.unregister(plugin)
    status = json.loads((tmp_path / "runs" / name / "status.json").read_text())
    assert status["status"] == INTERRUPTED, status


class _BrokenCancelRay:
    """Ray's interface where cancel and get raise what a crashing cancel path raised."""

    class exceptions:  # noqa: N801 - mirrors ray.exceptions
        class TaskCancelledError(Exception): ...

        class GetTimeoutError(Exception): ...

        class RayError(Exception): ...

    def cancel(self, ref):
        raise RuntimeError("cancel crashed")

    def get(self, ref, timeout=None):
        raise AttributeError("'NoneType' object has no attribute 'owner_address'")


def test_a_crash_in_rays_cancel_path_still_reports_every_run_interrupted():
    runs = [PlannedRun(index=i, name=f"run{i}", config={}, path=Path(f"/nowhere/run{i}"),
                       dense_digest="d") for i in range(2)]
    reported: list[RunOutcome] = []
    _stop_in_flight(_BrokenCancelRay(), {object(): run for run in runs},
                    lambda run, outcome: reported.append(outcome))
    assert [o.status for o in reported] == [INTERRUPTED, INTERRUPTED]
    assert "owner_address" in reported[0].error


@pytest.mark.slow
@pytest.mark.ray
def test_ctrl_c_on_a_ray_sweep_exits_130_with_a_summary_and_interrupted_runs(
    tmp_path, ray_cluster  # noqa: F811
):
    check_reachable(ray_cluster)  # a real GCS passes the probe
    path = write_sweep(tmp_path, ["GlobalMagWeight", "RandomPruning"], [4], [0],
                       dense_epochs=400, finetune_epochs=50)
    driver = subprocess.Popen(
        [sys.executable, "-m", "shrinkbench_core.cli", "sweep", str(path), "--executor", "ray",
         "--address", ray_cluster, "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=RAY_ENV)
    runs = tmp_path / "out" / "runs"
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/status.json")):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.5)
    time.sleep(2)
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, out + err
    assert "sweep interrupted" in out and "Traceback" not in err, out + err
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert record["summary"]["interrupted"] is True
    statuses = sorted(run["status"] for run in record["runs"])
    assert statuses == ["interrupted", "not run"], record["runs"]
    (started,) = runs.glob("*/status.json")
    assert json.loads(started.read_text())["status"] == INTERRUPTED


"""The Ray executor: a local Ray cluster on loopback gives the local executor's results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_sweep import summary_counts, write_sweep

from shrinkbench_core.errors import UserError

pytestmark = pytest.mark.ray


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Ray >= 2.5x turns token authentication on for `ray start` when ~/.ray/auth_token exists
# (any earlier local `ray.init()` writes one) but not for a driver given an explicit
# address; the loopback test cluster runs without it, whatever the home folder holds.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster started with ``ray start --head --block``; yields its address."""
    pytest.importorskip("ray")
    ray_cli = shutil.which("ray") or pytest.skip("the ray command is not installed")
    port = free_port()
    # Ray's unix sockets live under the temp dir, whose path must stay short.
    temp_dir = tempfile.mkdtemp(prefix="sbray", dir="/tmp")
    process = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=RAY_ENV,
    )
    try:
        deadline = time.monotonic() + 120
        output = []
        for line in process.stdout:
            output.append(line)
            if "block forever" in line:
                break
            assert time.monotonic() < deadline, "".join(output)
        assert process.poll() is None, "".join(output)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)  # --block: stops every process it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def deterministic(metrics: dict) -> dict:
    """metrics.json without wall-clock measurements and cache bookkeeping."""
    out = {k: v for k, v in metrics.items() if k not in ("timings_seconds", "dense_source")}
    return {k: {a: b for a, b in v.items() if a != "latency"} if isinstance(v, dict) else v
            for k, v in out.items()}


def sweep_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shrinkbench_core.cli", "sweep", *args],
                          capture_output=True, text=True, timeout=600, env=RAY_ENV)


def all_metrics(output: Path) -> dict[str, dict]:
    return {path.parent.name: deterministic(json.loads(path.read_text()))
            for path in (output / "runs").glob("*/metrics.json")}


def test_ray_cluster_gives_the_local_executors_results(tmp_path, ray_cluster):
    path = write_sweep(tmp_path, ["GlobalMagWeight", "RandomPruning"], [4], [0])
    ray_run = sweep_cli(str(path), "--executor", "ray", "--address", ray_cluster,
                        "--workers", "2", "--output", str(tmp_path / "ray"))
    assert ray_run.returncode == 0, ray_run.stdout + ray_run.stderr
    assert summary_counts(ray_run.stdout)["succeeded"] == 2
    local_run = sweep_cli(str(path), "--workers", "2", "--output", str(tmp_path / "local"))
    assert local_run.returncode == 0, local_run.stdout + local_run.stderr

    ray_metrics, local_metrics = all_metrics(tmp_path / "ray"), all_metrics(tmp_path / "local")
    assert len(ray_metrics) == 2 and ray_metrics.keys() == local_metrics.keys()
    assert ray_metrics == local_metrics  # bit-identical, latency and timings aside
    # the tasks ran in the cluster's worker processes, not in the driver
    record = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert all(run["worker"] and run["status"] == "succeeded" for run in record["runs"])
    # a rerun through the cluster skips everything
    again = sweep_cli(str(path), "--executor", "ray", "--address", ray_cluster,
                      "--output", str(tmp_path / "ray"))
    assert summary_counts(again.stdout) == {"total": 2, "succeeded": 0, "failed": 0,
                                            "skipped": 2}


def test_missing_ray_is_a_clear_error(monkeypatch):
    from shrinkbench_core.sweep.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install 'shrinkbench-core\[ray\]'"):
        import_ray()


def test_unreachable_cluster_is_a_user_error(tmp_path):
    pytest.importorskip("ray")
    path = write_sweep(tmp_path, ["RandomPruning"], [2], [0])
    result = sweep_cli(str(path), "--executor", "ray", "--address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot connect to the Ray cluster" in result.stderr
    assert "Traceback" not in result.stderr

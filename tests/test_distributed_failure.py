"""A rank of a data-parallel run failing: every rank stops, the run is marked failed, resume.

The failure comes from a real plugin distribution written to a temporary folder on
PYTHONPATH: its model ``faulty_mlp`` is the built-in MLP, which raises, or kills its own
process with SIGKILL, on one rank at one training step when ``SB_TEST_FAULT=RANK:STEP:HOW``
is set (by the test only; the rerun leaves it unset and resumes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from shrinkbench_core.experiment import rank_failures
from shrinkbench_core.experiment.distributed import launch_failed
from shrinkbench_core.experiment.rank_failures import RankFailedError, _Board, _decide
from shrinkbench_core.experiment.rundir import RunDirectory

# 1797 digits - 360 test - 29 validation = 1408 = 22 global batches of 64: one dense epoch
# is steps 1-22, fine-tuning epoch 1 steps 23-44, so step 49 is in fine-tuning epoch 2.
RUN = ["-p", "dense.epochs=1", "-p", "finetune.epochs=3", "-p", "metrics=[size,accuracy]",
       "-p", "dataset.batch_size=64", "-p", "dataset.validation_size=29",
       "-p", "model.params.hidden_sizes=[32]", "--model", "faulty_mlp", "--quiet"]
FAULT_STEP = 49

PLUGIN = '''
import os
import signal
import socket

from shrinkbench_core.builtin.catalogue import MlpParameters
from shrinkbench_core.builtin.models import MLP, build_mlp
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import ModelSpec

_steps = 0


class FaultyMLP(MLP):
    """The MLP; on rank RANK its STEP-th training forward pass fails (SB_TEST_FAULT)."""

    def forward(self, x):
        global _steps
        fault = os.environ.get("SB_TEST_FAULT")
        if fault and self.training:
            rank, step, how = fault.split(":")
            _steps += 1
            if os.environ.get("RANK") == rank and _steps == int(step):
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure on rank {rank} at training step {step}")
        return super().forward(x)


def build(params, *, num_classes, input_shape):
    model = build_mlp(params, num_classes=num_classes, input_shape=input_shape)
    model.__class__ = FaultyMLP
    return model


@hookimpl
def shrinkbench_register_models():
    return [ModelSpec(name="faulty_mlp", summary="MLP failing on one rank (tests)",
                      factory="sb_faulty:build", parameters=MlpParameters,
                      classifier="classifier")]
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A folder holding the ``sb-faulty`` plugin distribution (for PYTHONPATH)."""
    site = tmp_path / "site"
    info = site / "sb_faulty-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "sb_faulty.py").write_text(textwrap.dedent(PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sb-faulty\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[shrinkbench]\nsb-faulty = sb_faulty\n")
    return site


def _env(site: Path, fault: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("SB_TEST_FAULT", None)
    if fault:
        env["SB_TEST_FAULT"] = fault
    return env


def _launcher(output: Path) -> list[str]:  # shrinkbench-run --nproc 2 ...
    return [sys.executable, "-m", "shrinkbench_core.cli", "run", "--nproc", "2",
            "--output", str(output), *RUN]


def _torchrun(output: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "shrinkbench_core.cli", "run", "--output", str(output), *RUN]


def _run_dir(output: Path) -> Path:
    (run,) = (output / "runs").iterdir()
    return run


def _assert_committed_at_epoch(output: Path, run: Path, epoch: int) -> None:
    """Nothing half-written: no temporary file, no result of an unfinished run, every
    committed file whole, and the progress at the last committed epoch."""
    assert not [p for p in output.rglob("*.tmp")], list(output.rglob("*.tmp"))
    assert not (run / "metrics.json").exists() and not (run / "model.pt").exists()
    json.loads((run / "config.json").read_text())
    assert json.loads((run / "checkpoints" / "progress.json").read_text())["epoch"] == epoch
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "masks.pt"):
        torch.load(run / name, weights_only=True)
    epochs = [line.split(",")[0] for line in (run / "logs.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(1, epoch + 1)]


@pytest.mark.slow
def test_a_rank_raising_fails_the_run_on_every_rank_and_a_rerun_resumes(tmp_path, plugin_path):
    output = tmp_path / "out"
    failed = subprocess.run(_launcher(output), capture_output=True, text=True, timeout=240,
                            env=_env(plugin_path, f"1:{FAULT_STEP}:raise"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr  # rank 1's is in error.txt
    message = ("rank 1 failed: RuntimeError: injected failure on rank 1 at training step "
               f"{FAULT_STEP}")
    assert f"error: {message}" in failed.stderr
    run = _run_dir(output)
    assert f"the run is marked failed in {run}" in failed.stderr
    assert "rerun the same command" in failed.stderr and "results:" not in failed.stdout
    status = json.loads((run / "status.json").read_text())
    assert status == {"status": "failed", "error": message, "failed_rank": 1}
    details = (run / "error.txt").read_text()
    assert "Traceback" in details and "injected failure on rank 1" in details
    _assert_committed_at_epoch(output, run, 1)

    again = subprocess.run(_launcher(output), capture_output=True, text=True, timeout=240,
                           env=_env(plugin_path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed after epoch 1" in again.stdout
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert not (run / "error.txt").exists()
    epochs = [line.split(",")[0] for line in (run / "logs.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


@pytest.mark.slow
def test_a_rank_killed_under_torchrun_fails_the_run_naming_that_rank(tmp_path, plugin_path):
    output = tmp_path / "out"
    killed = subprocess.run(_torchrun(output), capture_output=True, text=True, timeout=240,
                            env=_env(plugin_path, f"1:{FAULT_STEP}:kill"))
    assert killed.returncode != 0
    run = _run_dir(output)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["failed_rank"] == 1, status
    assert status["error"].startswith("rank 1 (pid ") and "ended without reporting" in (
        status["error"])
    assert f"error: {status['error']}" in killed.stderr
    _assert_committed_at_epoch(output, run, 1)


@pytest.mark.slow
def test_ctrl_c_to_the_whole_job_stays_interrupted(tmp_path, plugin_path):
    output = tmp_path / "out"
    command = [arg.replace("finetune.epochs=3", "finetune.epochs=40")
               for arg in _launcher(output)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=_env(plugin_path))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and job.poll() is None:
        found = list(output.glob("runs/*/checkpoints/progress.json"))
        if found and json.loads(found[0].read_text() or "{}").get("epoch", 0) >= 1:
            break
        time.sleep(0.2)
    assert job.poll() is None, job.communicate()
    job.send_signal(signal.SIGINT)  # Ctrl-C reaches the launcher (the ranks run apart)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stdout + stderr
    assert "interrupted: progress saved in" in stderr and "Traceback" not in stderr, stderr
    status = json.loads((_run_dir(output) / "status.json").read_text())
    assert status["status"] == "interrupted", status


# -- rank 0's verdict, with a real store and real processes, no training ----------------
def _board(rank: int = 0) -> _Board:
    return _Board(dist.HashStore(), rank, 2)


def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer exists
    return child.pid


def _peer(board: _Board, pid: int, outcome: dict | None = None) -> None:
    board.put("process/1", {"pid": pid, "host": socket.gethostname()})
    if outcome is not None:
        board.put("outcome/1", outcome)


def test_rank_zero_names_the_rank_that_raised():
    board = _board()
    _peer(board, os.getpid(), {"outcome": "failed", "error": "ValueError: bad batch",
                               "traceback": "Traceback ...ValueError: bad batch"})
    lost = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer")
    outcome = _decide(lost, board, 0)
    assert (outcome.status, outcome.rank) == ("failed", 1)
    assert outcome.error == "rank 1 failed: ValueError: bad batch"
    assert outcome.traceback.startswith("Traceback") and outcome.details() == {"failed_rank": 1}
    assert isinstance(outcome.exception, RankFailedError)
    assert board.get("outcome/0") == {"outcome": "lost"}


def test_rank_zero_tells_a_killed_rank_from_an_interrupted_job():
    board = _board()
    _peer(board, _ended_pid())  # ended without a word: killed
    outcome = _decide(KeyboardInterrupt(), board, 0)  # torchrun's SIGTERM after the death
    assert (outcome.status, outcome.rank) == ("failed", 1)
    assert "ended without reporting an error" in outcome.error

    board = _board()
    _peer(board, _ended_pid(), {"outcome": "interrupted"})  # Ctrl-C: every rank stopped
    outcome = _decide(KeyboardInterrupt(), board, 0)
    assert (outcome.status, outcome.rank, outcome.exception) == ("interrupted", None, None)

    board = _board()  # rank 0 lost contact because rank 1 was interrupted: interrupted too
    _peer(board, _ended_pid(), {"outcome": "interrupted"})
    outcome = _decide(RuntimeError("Connection reset by peer"), board, 0)
    assert outcome.status == "interrupted" and isinstance(outcome.exception, KeyboardInterrupt)


def test_rank_zero_that_loses_contact_with_a_live_silent_peer_fails(monkeypatch):
    monkeypatch.setattr(rank_failures, "PEER_WAIT_S", 0.2)
    board = _board()
    _peer(board, os.getpid())  # alive, says nothing
    outcome = _decide(RuntimeError("Connection closed by peer"), board, 0)
    assert (outcome.status, outcome.rank) == ("failed", None)
    assert outcome.error.startswith("lost contact with the other ranks: RuntimeError")


def test_a_rank_that_raises_records_its_error_for_rank_zero():
    board = _board(rank=1)
    try:
        raise ValueError("bad batch")
    except ValueError as error:
        outcome = _decide(error, board, 1)
    assert (outcome.status, outcome.rank) == ("failed", 1)
    recorded = board.get("outcome/1")
    assert recorded["outcome"] == "failed" and recorded["error"] == "ValueError: bad batch"
    assert "Traceback" in recorded["traceback"]
    interrupted = _decide(KeyboardInterrupt(), _board(rank=1), 1)
    assert interrupted.status == "interrupted" and interrupted.exception is None


def test_the_launcher_marks_a_run_failed_when_rank_zero_died_without_a_word(tmp_path, capsys):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    run_dir = RunDirectory(tmp_path / "runs" / "r")
    run_dir.prepare()
    run_dir.set_status("running")
    failures = {0: ProcessFailure(0, 11, -9, ""), 1: ProcessFailure(1, 12, -15, "")}
    assert launch_failed(failures, run_dir.path) == 1
    assert run_dir.status() == {
        "status": "failed", "failed_rank": 0,
        "error": "rank 0 ended without recording the outcome: rank 0 was killed by SIGKILL; "
                 "rank 1 was stopped with SIGTERM"}
    assert "the run is marked failed in" in capsys.readouterr().err
    # rank 0 recorded the outcome itself: left as it is, exit 2 for a user's error
    run_dir.set_status("failed", error="CheckpointError: cannot resume")
    user_error = {0: ProcessFailure(0, 11, 2, ""), 1: ProcessFailure(1, 12, -15, "")}
    assert launch_failed(user_error, run_dir.path) == 2
    assert run_dir.status()["error"] == "CheckpointError: cannot resume"
    run_dir.set_status("interrupted")
    assert launch_failed(failures, run_dir.path) == 130
    assert run_dir.status()["status"] == "interrupted"
    assert launch_failed({0: ProcessFailure(0, 11, 2, "")}, tmp_path / "runs" / "never") == 2
    assert not (tmp_path / "runs" / "never").exists()

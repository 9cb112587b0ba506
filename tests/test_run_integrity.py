"""Run-directory integrity: one writer, epochs committed atomically, signals, --force, timings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shrinkbench_core.cli import run_main
from shrinkbench_core.config import build_config
from shrinkbench_core.experiment import run_experiment, training
from shrinkbench_core.experiment.atomic import _atomic, atomic_write_json, deferred_signals
from shrinkbench_core.experiment.rundir import RunDirectory

ARGS = [
    "--strategy",
    "GlobalMagWeight",
    "--compression",
    "4",
    "-p",
    "model.hidden_sizes=[32]",
    "-p",
    "dense.epochs=1",
    "-p",
    "finetune.epochs=3",
    "-p",
    "metrics=[size,accuracy]",
    "--quiet",
]


def run_dir(output: Path) -> Path:
    (path,) = (output / "runs").iterdir()
    return path


def metrics_of(output: Path) -> dict:
    return json.loads((run_dir(output) / "metrics.json").read_text())


def deterministic(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k != "timings_seconds"}
    out["dense_source"] = {
        k: v for k, v in out["dense_source"].items() if k not in ("trained_now", "cache")
    }
    return out


def config_of(output: Path):
    return build_config(
        {
            "model": {"params": {"hidden_sizes": [32]}},
            "dense": {"epochs": 1},
            "finetune": {"epochs": 3},
            "metrics": ["size", "accuracy"],
            "output": str(output),
        }
    )


def interrupt(monkeypatch, call: int, error: type[BaseException] = KeyboardInterrupt) -> None:
    """Raise ``error`` at the start of the ``call``-th training epoch."""
    real = training.train_epoch
    calls = {"n": 0}

    def train_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error("stopped by the test")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", train_epoch)


def test_a_second_writer_is_refused_and_told_who_holds_the_run(tmp_path, capsys):
    config = config_of(tmp_path)
    from shrinkbench_core.experiment.naming import run_name
    from shrinkbench_core.experiment.resolve import resolve_config
    from shrinkbench_core.registry import get_registry

    name = run_name(resolve_config(config, get_registry()))
    holder = RunDirectory(tmp_path / "runs" / name)
    with holder.lock():  # this process holds it, as another invocation would
        assert run_main([*ARGS, "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"is being written by pid {os.getpid()} on" in err and "Traceback" not in err
        assert not (tmp_path / "runs" / name / "status.json").exists()
    assert run_main([*ARGS, "--output", str(tmp_path)]) == 0  # released: the run goes ahead


def test_resume_derives_everything_from_the_committed_epoch(tmp_path, monkeypatch):
    straight = run_experiment(config_of(tmp_path / "straight"), quiet=True)
    interrupt(monkeypatch, call=1 + 3)  # 1 dense epoch, then the 3rd fine-tuning epoch
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config_of(tmp_path / "killed"), quiet=True)
    monkeypatch.undo()
    path = run_dir(tmp_path / "killed")
    # a kill right after last.pt (epoch 2) was renamed into place: progress.json and
    # logs.csv still describe epoch 1
    progress = json.loads((path / "checkpoints" / "progress.json").read_text())
    assert progress["epoch"] == 2
    stale = {**progress, "epoch": 1, "logs": progress["logs"][:1]}
    atomic_write_json(path / "checkpoints" / "progress.json", stale)
    lines = (path / "logs.csv").read_text().splitlines()
    (path / "logs.csv").write_text("\n".join(lines[:2]) + "\n")
    resumed = run_experiment(config_of(tmp_path / "killed"), quiet=True)
    assert resumed.resumed_from_epoch == 2
    assert deterministic(resumed.metrics) == deterministic(straight.metrics)
    assert resumed.metrics["epochs"] == 3
    rows = (path / "logs.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]
    # phases of both segments are summed: dense was timed in the first one only
    timings = resumed.metrics["timings_seconds"]
    assert {"dense", "prune", "evaluate", "finetune", "total"} <= set(timings)
    assert timings["dense"] >= progress["timings"]["dense"] > 0
    assert timings["total"] > progress["timings"]["total"]


def test_force_keeps_a_complete_run_until_its_replacement_completes(tmp_path, monkeypatch):
    first = run_experiment(config_of(tmp_path), quiet=True)
    before = (first.path / "metrics.json").read_bytes()
    # the redo fails (in dense training): the complete run is put back as it was
    interrupt(monkeypatch, call=1, error=RuntimeError)
    (tmp_path / "dense").rename(tmp_path / "dense-aside")  # the redo must train, and fails
    with pytest.raises(RuntimeError):
        run_experiment(config_of(tmp_path), quiet=True, force=True)
    monkeypatch.undo()
    assert (first.path / "metrics.json").read_bytes() == before
    assert json.loads((first.path / "status.json").read_text())["status"] == "complete"
    assert not (tmp_path / ".replaced" / first.path.name).exists()

    # the redo is interrupted: both kept; rerunning resumes it and then drops the old run
    interrupt(monkeypatch, call=1 + 2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config_of(tmp_path), quiet=True, force=True)
    monkeypatch.undo()
    backup = tmp_path / ".replaced" / first.path.name
    assert (backup / "metrics.json").read_bytes() == before
    assert json.loads((first.path / "status.json").read_text())["status"] == "interrupted"
    from shrinkbench_core.results.collect import load_results

    assert len(load_results(tmp_path)) == 1  # the set-aside run is not listed twice
    again = run_experiment(config_of(tmp_path), quiet=True)
    assert again.resumed_from_epoch == 1 and not backup.exists()
    assert deterministic(again.metrics) == deterministic(first.metrics)


def test_signals_wait_for_the_file_being_written(tmp_path):
    target = tmp_path / "state.pt"
    reached = []

    def write(handle):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of torch.save
        time.sleep(0.05)
        torch.save({"w": torch.ones(1000)}, handle)
        reached.append(True)

    with pytest.raises(KeyboardInterrupt):
        _atomic(target, write)  # delivered once the file is in place
    assert reached and torch.equal(torch.load(target)["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        reached.append("after the signal")
    assert reached[-1] == "after the signal"


def test_atomic_files_follow_the_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        atomic_write_json(tmp_path / "shared.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664


SLOW = [*ARGS, "-p", "dataset.batch_size=16"]


def launch(output: Path) -> subprocess.Popen:
    args = SLOW
    code = "import sys; from shrinkbench_core.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def wait_for_epochs(output: Path, process: subprocess.Popen, epochs: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        logs = list(output.glob("runs/*/logs.csv"))
        if logs and len(logs[0].read_text().splitlines()) > epochs:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached fine-tuning epoch {epochs}")


@pytest.mark.slow
def test_sigterm_and_sigkill_leave_resumable_runs(tmp_path):
    args = SLOW
    assert run_main([*args, "--output", str(tmp_path / "straight")]) == 0
    reference = metrics_of(tmp_path / "straight")

    output = tmp_path / "terminated"
    process = launch(output)
    wait_for_epochs(output, process, 1)
    process.send_signal(signal.SIGTERM)  # what timeout, Slurm and Kubernetes send
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    path = run_dir(output)
    assert json.loads((path / "status.json").read_text())["status"] == "interrupted"
    assert run_main([*args, "--output", str(output)]) == 0
    assert deterministic(metrics_of(output)) == deterministic(reference)

    output = tmp_path / "killed"
    process = launch(output)
    wait_for_epochs(output, process, 2)
    process.kill()  # SIGKILL: no handler runs; the lock goes with the process
    process.communicate(timeout=60)
    assert run_main([*args, "--output", str(output)]) == 0
    assert deterministic(metrics_of(output)) == deterministic(reference)
    rows = (run_dir(output) / "logs.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]


def test_damaged_files_are_found_and_made_again(tmp_path, capsys):
    first = run_experiment(config_of(tmp_path), quiet=True)
    (weights,) = (tmp_path / "dense").glob("*/model.pt")
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, e.g. by a full disk
    (first.path / "metrics.json").write_text('{"digest": "')  # "complete" is checked, not trusted
    stale = first.path / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint, left by a killed writer")
    again = run_experiment(config_of(tmp_path), quiet=True)
    err = capsys.readouterr().err
    assert f"dense cache entry {weights.parent} is damaged" in err and "making it again" in err
    assert not again.already_complete and again.resumed_from_epoch == 3
    assert deterministic(again.metrics) == deterministic(first.metrics)
    assert json.loads((first.path / "metrics.json").read_text()) == again.metrics
    assert not stale.exists()
    (info,) = (tmp_path / "dense").glob("*/dense.json")
    info.write_text("{not json")
    other = config_of(tmp_path).model_copy(update={"compression": 2.0})
    assert run_experiment(other, quiet=True).metrics["dense"] == first.metrics["dense"]
    assert "is damaged (JSONDecodeError" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_one_clear_error_naming_it(tmp_path, monkeypatch, capsys):
    from shrinkbench_core.experiment.stages import evaluate

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "measure_best", stop)  # every epoch committed, then stopped
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config_of(tmp_path), quiet=True)
    monkeypatch.undo()
    path = run_dir(tmp_path)
    for name in ("last.pt", "best.pt"):
        checkpoint = path / "checkpoints" / name
        saved = checkpoint.read_bytes()
        checkpoint.write_bytes(saved[: len(saved) // 2])
        assert run_main([*ARGS, "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert str(checkpoint) in err and "--force" in err and "Traceback" not in err, err
        status = json.loads((path / "status.json").read_text())["status"]
        assert status == ("interrupted" if name == "last.pt" else "failed")
        checkpoint.write_bytes(saved)
    assert run_main([*ARGS, "--output", str(tmp_path)]) == 0

"""Runs that fail while running (issue 19, item 3): clearly marked failed, listed apart by
``shrinkbench results`` with their error, and redone cleanly by ``--force`` (or resumed by a
plain rerun from the last committed epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shrinkbench_core.cli import main, run_main
from shrinkbench_core.experiment import resolve, training

ARGS = [
    "--strategy", "GlobalMagWeight",
    "-p", "model.hidden_sizes=[16]",
    "-p", "dense.epochs=1",
    "-p", "finetune.epochs=3",
    "-p", "metrics=[size,accuracy]",
    "--quiet",
]


def args(compression: float, output: Path, *extra: str) -> list[str]:
    return [*ARGS, "--compression", str(compression), "--output", str(output), *extra]


def fail_at(monkeypatch, call: int) -> None:
    """The ``call``-th training epoch fails as a device running out of memory would."""
    real, calls = training.train_epoch, {"n": 0}

    def train_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(training, "train_epoch", train_epoch)


def status_of(path: Path) -> dict:
    return json.loads((path / "status.json").read_text())


def timeless(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in ("timings_seconds", "dense_source")}
    return json.loads(json.dumps(out))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The 4x run done in one go."""
    root = tmp_path_factory.mktemp("straight")
    assert run_main(args(4, root)) == 0
    (path,) = (root / "runs").iterdir()
    return json.loads((path / "metrics.json").read_text())


def failed_study(root: Path, monkeypatch) -> Path:
    """A complete 2x run and a 4x run that failed in its second fine-tuning epoch."""
    assert run_main(args(2, root)) == 0
    fail_at(monkeypatch, call=2)  # the dense model is cached: fine-tuning epochs 1, 2
    with pytest.raises(RuntimeError, match="out of memory"):
        run_main(args(4, root))
    monkeypatch.undo()
    (path,) = (root / "runs").glob("*-c4-*")
    return path


def test_a_run_failing_while_running_is_marked_and_listed_apart(tmp_path, monkeypatch, capsys):
    path = failed_study(tmp_path, monkeypatch)
    status = status_of(path)
    assert status["status"] == "failed"
    assert status["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not (path / "metrics.json").exists()
    capsys.readouterr()

    assert main(["results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table, _, listing = out.partition("failed runs (1):")
    assert "complete" in table and "failed" not in table and str(path) not in table
    assert "CUDA out of memory" in listing and str(path) in listing and "compression=4" in listing
    assert main(["results", str(tmp_path), "--status", "failed", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["path"] == str(path) and row["error"].startswith("RuntimeError: CUDA out of")
    assert main(["results", str(tmp_path), "--aggregate", "--format", "json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)  # a failed run never enters a mean
    assert group["compression"] == 2


def test_force_redoes_a_failed_run_cleanly(tmp_path, monkeypatch, capsys, reference):
    path = failed_study(tmp_path, monkeypatch)
    (path / "error.txt").write_text("Traceback ... (as a sweep worker records it)")
    assert run_main(args(4, tmp_path, "--force")) == 0
    assert status_of(path) == {"status": "complete"}  # no error left from the failure
    metrics = json.loads((path / "metrics.json").read_text())
    assert timeless(metrics) == timeless(reference)
    rows = (path / "logs.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]
    assert not (path / "error.txt").exists()
    assert not (tmp_path / ".replaced").exists() or not any((tmp_path / ".replaced").iterdir())
    capsys.readouterr()
    assert main(["results", str(tmp_path)]) == 0
    assert "failed runs" not in capsys.readouterr().out


def test_a_plain_rerun_resumes_a_failed_run_from_its_last_epoch(
    tmp_path, monkeypatch, capsys, reference
):
    path = failed_study(tmp_path, monkeypatch)
    (path / "error.txt").write_text("Traceback ... (as a sweep worker records it)")
    assert run_main(args(4, tmp_path)) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert status_of(path) == {"status": "complete"}
    assert not (path / "error.txt").exists()  # the old failure's details go with it
    assert timeless(json.loads((path / "metrics.json").read_text())) == timeless(reference)


def test_a_user_error_found_while_running_is_marked_failed_and_listed(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(resolve, "compression_problem", lambda *a: None)  # found only later
    argv = [a if a != "dense.epochs=1" else "dense.epochs=0" for a in args(1e6, tmp_path)]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "largest reachable compression" in err
    (path,) = (tmp_path / "runs").iterdir()
    assert err.strip().splitlines()[-1] == f"the run is marked failed in {path}"
    assert status_of(path)["status"] == "failed"
    assert main(["results", str(tmp_path)]) == 0
    assert "failed runs (1):" in capsys.readouterr().out

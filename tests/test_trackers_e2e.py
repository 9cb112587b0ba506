"""Trackers in real digits runs through ``shrinkbench-run``, read back with each library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_trackers_libraries import wandb_contents

from shrinkbench_core import cli

TINY = ["-p", "dense.epochs=2", "-p", "finetune.epochs=2", "-p", "metrics=[size,accuracy]"]


def run_dir(output: Path) -> Path:
    [path] = (output / "runs").iterdir()
    return path


def test_digits_run_logs_to_tensorboard(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "results"
    code = cli.run_main(["--quiet", "--output", str(output), *TINY, "-p", "trackers=[tensorboard]"])
    assert code == 0, capsys.readouterr().err
    path = run_dir(output)
    metrics = json.loads((path / "metrics.json").read_text())
    accumulator = EventAccumulator(str(path / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()

    def series(tag: str) -> list[tuple[int, float]]:
        return [(event.step, event.value) for event in accumulator.Scalars(tag)]

    assert [step for step, _ in series("dense/train_loss")] == [1, 2]
    assert [step for step, _ in series("finetune/train_loss")] == [1, 2]
    [(step, compression)] = series("pruning/compression")
    assert step == 1 and compression == pytest.approx(4.0, rel=0.01)
    stages = dict(series("stages/accuracy/test_top1"))
    assert set(stages) >= {0, 1, 2}  # dense, pruned, fine-tuned
    final = metrics["finetuned"]["accuracy"]["test_top1"]
    assert stages[2] == pytest.approx(final)
    assert series("final/test_top1") == [(0, pytest.approx(final))]
    assert "shrinkbench: warning" not in capsys.readouterr().err


def test_failing_tracker_is_reported_and_the_run_completes(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-home"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = (tmp_path / "mlruns").as_uri()
    trackers = (
        f"trackers=[{{name: tensorboard, params: {{log_dir: '{blocker}/tb'}}}}, "
        f"{{name: mlflow, params: {{tracking_uri: '{store}'}}}}, wandb]"
    )
    output = tmp_path / "results"
    code = cli.run_main(["--quiet", "--output", str(output), *TINY, "-p", trackers])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "shrinkbench: warning" in line]
    assert len(warnings) == 1
    assert "'tracker:tensorboard' failed in shrinkbench_" in warnings[0]
    assert "TrackerError: handling shrinkbench_run_start: NotADirectoryError" in warnings[0]
    path = run_dir(output)
    assert json.loads((path / "status.json").read_text())["status"] == "complete"
    metrics = json.loads((path / "metrics.json").read_text())
    assert (path / "logs.csv").read_text().count("\n") == 3  # header + 2 fine-tuning epochs

    client = MlflowClient(tracking_uri=store)
    [mlflow_run] = client.search_runs([client.get_experiment_by_name("shrinkbench").experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.metrics["finetuned/accuracy/test_top1"] == pytest.approx(
        metrics["finetuned"]["accuracy"]["test_top1"]
    )
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "dense/lr")] == [
        1,
        2,
    ]
    contents = wandb_contents(path)  # the offline run's own records
    assert contents["exit_code"] == 0
    assert contents["summary"]["finetuned/accuracy/test_top1"] == pytest.approx(
        metrics["finetuned"]["accuracy"]["test_top1"]
    )
    assert [row["dense/epoch"] for row in contents["history"] if "dense/train_loss" in row] == [
        1,
        2,
    ]

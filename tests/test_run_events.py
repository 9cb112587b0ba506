"""Lifecycle events of real digits runs, seen by a real plugin object on a real pluggy manager;
``logs.csv`` written by the built-in plugin from those events, across an interrupt."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shrinkbench_core.config import build_config
from shrinkbench_core.experiment import run_experiment, training
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.plugins import make_plugin_manager
from shrinkbench_core.registry import Registry


class Recorder:
    """Records every lifecycle event it receives, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @hookimpl
    def shrinkbench_run_start(self, run):
        self.events.append(("run_start", run.resumed, run.digest))

    @hookimpl
    def shrinkbench_run_end(self, run, status, metrics, error):
        self.events.append(("run_end", status, metrics, error))

    @hookimpl
    def shrinkbench_stage_end(self, run, stage, metrics):
        self.events.append(("stage_end", stage, metrics))

    @hookimpl
    def shrinkbench_epoch_end(self, run, stage, epoch, logs):
        self.events.append(("epoch_end", stage, epoch, dict(logs)))

    @hookimpl
    def shrinkbench_pruning_step(self, run, step, compression, summary, details):
        self.events.append(("pruning_step", step, compression, summary, details))

    def of(self, kind: str) -> list[tuple]:
        return [event for event in self.events if event[0] == kind]

    def outline(self) -> list[tuple]:
        """Kind and stage (or step) of every event, for order checks."""
        return [event[:2] if event[0] != "epoch_end" else event[:3] for event in self.events]


class Broken:
    """A plugin whose epoch hook fails: reported and disabled, never fatal."""

    calls = 0

    @hookimpl
    def shrinkbench_epoch_end(self, run, stage, epoch, logs):
        Broken.calls += 1
        raise OSError("store unwritable")


def registry_with(*plugins: tuple[str, object]) -> Registry:
    return Registry(make_plugin_manager(extra_plugins=plugins))


def config(output: Path, **fields) -> object:
    data = {
        "strategy": {"name": "GlobalMagWeight"},
        "compression": 4,
        "model": {"params": {"hidden_sizes": [32]}},
        "dense": {"epochs": 2},
        "finetune": {"epochs": 2},
        "metrics": ["size", "accuracy"],
        "output": str(output),
    }
    data.update(fields)
    return build_config(data)


def logs_csv(path: Path) -> list[dict]:
    with (path / "logs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_events_of_an_iterative_run_in_order_with_their_metrics(tmp_path, capsys):
    recorder = Recorder()
    registry = registry_with(("recorder", recorder), ("broken", Broken()))
    schedule = {"kind": "iterative", "rounds": 2, "epochs_per_round": 1}
    result = run_experiment(config(tmp_path, schedule=schedule), registry=registry, quiet=True)
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert recorder.outline() == [
        ("run_start", False),
        ("epoch_end", "dense", 1),
        ("epoch_end", "dense", 2),
        ("stage_end", "dense"),
        ("pruning_step", 1),
        ("epoch_end", "round1", 1),
        ("pruning_step", 2),
        ("stage_end", "pruned"),
        ("epoch_end", "finetune", 1),
        ("epoch_end", "finetune", 2),
        ("stage_end", "finetuned"),
        ("stage_end", "best"),
        ("run_end", "complete"),
    ]
    assert recorder.events[0][2] == metrics["digest"]
    # stage metrics are exactly those of metrics.json; run_end carries metrics.json
    stages = {event[1]: event[2] for event in recorder.of("stage_end")}
    for stage in ("dense", "pruned", "finetuned"):
        assert stages[stage] == metrics[stage]
    assert stages["best"] == metrics["best_validation"]
    assert recorder.of("run_end")[0][2] == metrics and recorder.of("run_end")[0][3] is None
    # each pruning step: the model's compression, the masks' table, what the schedule adds
    rounds = metrics["schedule"]["rounds"]
    for (_, step, compression, summary, details), entry in zip(
        recorder.of("pruning_step"), rounds, strict=True
    ):
        assert details == {"schedule": "iterative", "round": step, "target": entry["compression"]}
        assert compression == pytest.approx(entry["achieved"])
        assert summary["kept"].sum() > 0 and list(summary.columns)[:2] == ["parameter", "shape"]
    assert rounds[0]["logs"] == [
        {
            k: v
            for k, v in recorder.of("epoch_end")[2][3].items()
            if k in ("epoch", "lr", "train_loss", "train_top1")
        }
    ]
    # epoch logs: the logs.csv row plus the hookspec's names
    finetune = [event[3] for event in recorder.of("epoch_end") if event[1] == "finetune"]
    for logs in finetune:
        assert (
            logs["train_acc"] == logs["train_top1"] and logs["val_acc"] == logs["validation_top1"]
        )
        assert logs["val_loss"] == logs["validation_loss"] and logs["epoch_seconds"] > 0
    rows = logs_csv(result.path)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert "train_acc" not in rows[0] and float(rows[1]["train_loss"]) == finetune[1]["train_loss"]
    # the broken plugin was called once, reported, and the run completed anyway
    assert Broken.calls == 1
    assert "'broken' failed in shrinkbench_epoch_end" in capsys.readouterr().err


def interrupt(monkeypatch, call: int) -> None:
    """KeyboardInterrupt at the start of the ``call``-th training epoch."""
    real = training.train_epoch
    calls = {"n": 0}

    def train_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", train_epoch)


def test_interrupt_and_resume_events_and_a_complete_logs_csv(tmp_path, monkeypatch):
    cfg = config(tmp_path / "killed", finetune={"epochs": 3})
    straight = run_experiment(config(tmp_path / "straight", finetune={"epochs": 3}), quiet=True)

    first = Recorder()
    interrupt(monkeypatch, call=2 + 3)  # 2 dense epochs, then the 3rd fine-tuning epoch
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, registry=registry_with(("recorder", first)), quiet=True)
    monkeypatch.undo()
    assert first.outline()[-1] == ("run_end", "interrupted")
    assert [e[2] for e in first.of("epoch_end") if e[1] == "finetune"] == [1, 2]
    (path,) = (tmp_path / "killed" / "runs").iterdir()
    (path / "logs.csv").write_text((path / "logs.csv").read_text() + "3,0.1,9,9\n")  # stale

    second = Recorder()
    result = run_experiment(cfg, registry=registry_with(("recorder", second)), quiet=True)
    assert result.resumed_from_epoch == 2
    assert second.outline() == [
        ("run_start", True),
        ("epoch_end", "finetune", 3),
        ("stage_end", "finetuned"),
        ("stage_end", "best"),
        ("run_end", "complete"),
    ]
    rows, reference = logs_csv(path), logs_csv(straight.path)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == [
        {k: v for k, v in r.items() if k not in drop} for r in reference
    ]


def test_a_failed_run_ends_with_status_failed_and_the_error(tmp_path, monkeypatch):
    recorder = Recorder()

    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(training, "train_epoch", fail)
    with pytest.raises(RuntimeError):
        run_experiment(config(tmp_path), registry=registry_with(("recorder", recorder)))
    (_, status, metrics, error) = recorder.events[-1]
    assert (status, metrics, error) == ("failed", None, "RuntimeError: disk on fire")
    (path,) = (tmp_path / "runs").iterdir()
    assert json.loads((path / "status.json").read_text())["status"] == "failed"

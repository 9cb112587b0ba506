"""A line per training epoch on stderr, from the ``shrinkbench_epoch_end`` event (item 13)."""

from __future__ import annotations

from shrinkbench_core.builtin.epoch_lines import EpochLines, epoch_line
from shrinkbench_core.cli import run_main
from shrinkbench_core.lifecycle import RunEvents, RunInfo
from shrinkbench_core.plugins import make_plugin_manager

LOGS = {"train_loss": 0.41234, "train_acc": 0.872, "val_loss": 0.455, "val_acc": 0.851,
        "lr": 0.1, "epoch_seconds": 12.34}


def test_the_line_shows_the_epoch_s_figures():
    line = epoch_line("finetune", 3, LOGS, total=10)
    assert line == ("[finetune] epoch 3/10  train loss 0.4123  acc 87.20%  val loss 0.4550  "
                    "acc 85.10%  lr 0.1  12.3 s")
    # no validation split: its figures are left out, not printed as None
    assert epoch_line("dense", 1, {**LOGS, "val_loss": None, "val_acc": None}) == (
        "[dense] epoch 1  train loss 0.4123  acc 87.20%  lr 0.1  12.3 s"
    )


def test_the_built_in_manager_prints_through_the_run_events(tmp_path, capsys):
    manager = make_plugin_manager(load_entry_points=False)
    assert any(isinstance(p, EpochLines) for p in manager.get_plugins())
    config = {"finetune": {"epochs": 4}}
    logs = {"epoch": 2, **LOGS}  # the row logs.csv gets (the built-in plugin writes it too)
    loud = RunInfo(tmp_path, "run", "d" * 8, config)
    RunEvents(manager, loud).emit("shrinkbench_epoch_end", stage="finetune", epoch=2, logs=logs)
    assert "[finetune] epoch 2/4  train loss 0.4123" in capsys.readouterr().err
    quiet = RunInfo(tmp_path, "run", "d" * 8, config, extra={"quiet": True})
    RunEvents(manager, quiet).emit("shrinkbench_epoch_end", stage="finetune", epoch=2, logs=logs)
    assert "] epoch" not in capsys.readouterr().err


def test_a_run_prints_every_epoch_unless_quiet(tmp_path, capsys):
    args = ["-p", "model.hidden_sizes=[16]", "-p", "dense.epochs=2", "-p", "finetune.epochs=1",
            "-p", "metrics=[size,accuracy]"]
    assert run_main([*args, "--output", str(tmp_path / "loud")]) == 0
    err = capsys.readouterr().err
    assert "[dense] epoch 1/2" in err and "[dense] epoch 2/2" in err
    assert "[finetune] epoch 1/1" in err
    assert run_main([*args, "--output", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "] epoch " not in capsys.readouterr().err

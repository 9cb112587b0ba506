"""The static / set / rigl schedules in real runs on the embedded digits data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from shrinkbench_core.cli import main
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.registry import get_registry

FAST = ["-p", "dense.epochs=0", "-p", "finetune.epochs=3", "-p", "metrics=[size,accuracy]",
        "--compression", "10", "--quiet"]


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[dict] = []

    @hookimpl
    def shrinkbench_pruning_step(self, run, step, compression, summary, details):
        self.steps.append({"step": step, "kept": int(summary["kept"].sum()), **details})


def _run(tmp_path: Path, *args: str) -> tuple[Path, list[dict]]:
    recorder = _Recorder()
    manager = get_registry().manager
    manager.register(recorder, name="pruning-step-recorder")
    try:
        assert main(["run", "--output", str(tmp_path), *FAST, *args]) == 0
    finally:
        manager.unregister(recorder)
    (run,) = (tmp_path / "runs").iterdir()
    return run, recorder.steps


@pytest.mark.parametrize("kind", ["rigl", "set"])
def test_dynamic_schedules_move_masks_at_exact_sparsity_and_log_each_update(tmp_path, kind):
    run, steps = _run(tmp_path, "-p", f"schedule.kind={kind}",
                      "-p", "schedule.params.update_interval=4")
    metrics = json.loads((run / "metrics.json").read_text())
    updates = metrics["schedule"]["sparse_updates"]
    assert updates and all(u["global_step"] % 4 == 0 for u in updates)
    with (run / "logs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # drop fraction 0.3 decaying with a cosine to 0 at end_step = 75% of the training steps
    ends = {round(math.pi * u["global_step"] / math.acos(2 * u["drop_fraction"] / 0.3 - 1))
            for u in updates}
    (end,) = ends
    assert updates[-1]["global_step"] < end <= updates[-1]["global_step"] + 4
    assert sum(int(r["mask_changes"]) for r in rows) == sum(u["changed"] for u in updates) > 0
    # the lifecycle hook saw the initial mask, then every update with its changed count
    assert steps[0]["init"] == "random" and steps[0]["distribution"] == "erk"
    assert [s["changed"] for s in steps[1:]] == [u["changed"] for u in updates]
    assert len({s["kept"] for s in steps}) == 1  # the same number of weights after each update
    masks = torch.load(run / "masks.pt", weights_only=True)
    model = torch.load(run / "model.pt", weights_only=True)
    state = model.get("model", model) if isinstance(model, dict) else model
    assert sum(int(m.sum()) for m in masks.values()) == steps[0]["kept"]
    for name, mask in masks.items():
        assert torch.count_nonzero(state[name][~mask]) == 0
    assert metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(10, rel=0.02)


def test_static_holds_its_initial_mask(tmp_path):
    run, steps = _run(tmp_path, "-p", "schedule.kind=static",
                      "-p", "schedule.params.init=magnitude",
                      "-p", "schedule.params.distribution=uniform")
    assert len(steps) == 1 and steps[0]["init"] == "magnitude"
    with (run / "logs.csv").open() as handle:
        assert "mask_changes" not in next(csv.DictReader(handle))
    masks = torch.load(run / "masks.pt", weights_only=True)
    densities = [float(m.float().mean()) for m in masks.values()]
    assert max(densities) - min(densities) < 0.01  # uniform: every layer alike


def test_an_update_interval_beyond_training_is_refused_before_anything_runs(tmp_path, capsys):
    code = main(["run", "--output", str(tmp_path), *FAST, "-p", "schedule.kind=rigl",
                 "-p", "schedule.params.update_interval=100000"])
    assert code == 2
    assert "schedule.update_interval: 100000 steps leaves no mask update" in capsys.readouterr().err


class _InterruptAfterFirstEpoch:
    @hookimpl
    def shrinkbench_epoch_end(self, run, stage, epoch, logs):
        if stage == "finetune" and epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_set_run_resumes_to_the_uninterrupted_result(tmp_path):
    # SET: the regrowth generator's state must come back from the checkpoint too
    args = ["-p", "schedule.kind=set", "-p", "schedule.params.update_interval=4"]
    whole, _ = _run(tmp_path / "whole", *args)
    manager = get_registry().manager
    stopper = _InterruptAfterFirstEpoch()
    manager.register(stopper, name="interrupt-after-first-epoch")
    try:
        assert main(["run", "--output", str(tmp_path / "resumed"), *FAST, *args]) == 130
    finally:
        manager.unregister(stopper)
    resumed, _ = _run(tmp_path / "resumed", *args)
    assert whole.name == resumed.name
    first = json.loads((whole / "metrics.json").read_text())
    second = json.loads((resumed / "metrics.json").read_text())
    assert first["schedule"]["sparse_updates"] == second["schedule"]["sparse_updates"]
    assert first["finetuned"]["accuracy"] == second["finetuned"]["accuracy"]
    masks = torch.load(whole / "masks.pt", weights_only=True)
    masks_resumed = torch.load(resumed / "masks.pt", weights_only=True)
    assert all(torch.equal(masks[name], masks_resumed[name]) for name in masks)


@pytest.mark.parametrize("kind", ["static", "set", "rigl"])
def test_sparse_training_on_generated_cifar_with_a_cifar_resnet(tmp_path, kind):
    from datagen import write_cifar10

    write_cifar10(tmp_path / "data", n_train=96, n_test=32)
    args = ["--dataset", "cifar10", "--model", "resnet20", "--data-root", str(tmp_path / "data"),
            "-p", "dataset.validation_size=16", "-p", "dataset.batch_size=16",
            "-p", f"schedule.kind={kind}"]
    if kind != "static":
        args += ["-p", "schedule.params.update_interval=2"]
    run, steps = _run(tmp_path / "out", *args)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(10, rel=0.01)
    masks = torch.load(run / "masks.pt", weights_only=True)
    assert sum(int(m.sum()) for m in masks.values()) == steps[0]["kept"]
    if kind == "static":
        assert len(steps) == 1
    else:
        assert sum(s["changed"] for s in steps[1:]) > 0

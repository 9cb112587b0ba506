"""Schedules as registered components: the built-in three, and a third-party one installed
as a real plugin distribution that changes masks during training through the schedule
contract only (per-step callback with gradients, new masks held, events, checkpointing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shrinkbench_core.cli import main, run_main
from shrinkbench_core.pruning import load_masks
from shrinkbench_core.registry import get_registry

FAST = [
    "-p",
    "model.hidden_sizes=[32]",
    "-p",
    "dense.epochs=1",
    "-p",
    "finetune.epochs=2",
    "-p",
    "metrics=[size,accuracy]",
    "--quiet",
]

# A RigL-like sparse-training schedule: prune to the target with the run's strategy, then
# every `every` steps drop the `swap` smallest kept weights of each parameter and regrow
# the `swap` pruned ones with the largest gradient: constant sparsity, changing masks.
SCHEDULE_IMPL = """
import torch
from pydantic import BaseModel, ConfigDict, Field
from shrinkbench_core.experiment.schedule_api import Schedule, TrainingCallback


class SwapParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    every: int = Field(5, ge=1)
    swap: int = Field(3, ge=1)


class Swap(Schedule):
    during_training = True

    def training_callback(self, session, optimizer, masks):
        return SwapCallback(session, optimizer, masks, self.params)


class SwapCallback(TrainingCallback):
    def __init__(self, session, optimizer, masks, params):
        self.session, self.optimizer, self.params = session, optimizer, params
        self.masks = {name: mask.clone() for name, mask in masks.items()}
        self.holder = None
        self.updates = 0
        self.steps_seen = []

    def start(self, global_step, state):
        if state is not None:
            self.masks = {n: m.bool() for n, m in state["masks"].items()}
            self.updates = state["updates"]
        self.holder = self.session.hold(self.masks, self.optimizer)

    def after_step(self, step):
        self.steps_seen.append(step.global_step)
        if step.global_step % self.params.every:
            return
        params = dict(step.model.named_parameters())
        changed = 0
        new = {}
        for name, mask in self.masks.items():
            weight, grad = params[name].detach(), params[name].grad
            keep = mask.clone().reshape(-1)
            kept = keep.nonzero().squeeze(1)
            dropped = kept[weight.reshape(-1)[kept].abs().argsort()[: self.params.swap]]
            pruned = (~keep).nonzero().squeeze(1)
            grown = pruned[grad.reshape(-1)[pruned].abs().argsort(descending=True)[: len(dropped)]]
            keep[dropped] = False
            keep[grown] = True
            changed += len(grown)
            new[name] = keep.reshape(mask.shape)
        with torch.no_grad():
            for name, mask in new.items():
                params[name].mul_(mask)  # regrown connections start at zero
        self.holder.remove()
        self.masks = new
        self.holder = self.session.hold(self.masks, self.optimizer)
        self.updates += 1
        self.session.pruning_step(self.masks, global_step=step.global_step, changed=changed)

    def state_dict(self):
        return {"masks": {n: m.cpu() for n, m in self.masks.items()}, "updates": self.updates}

    def record(self):
        first = self.steps_seen[0] if self.steps_seen else None
        return {"updates": self.updates, "first_step": first}

    def close(self):
        if self.holder is not None:
            self.holder.remove()
"""

SCHEDULE_PLUGIN = """
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import ScheduleSpec
from sb_swap_impl import SwapParameters


@hookimpl
def shrinkbench_register_schedules():
    return [ScheduleSpec(name="swap", summary="Constant sparsity, masks swapped every N steps",
                         factory="sb_swap_impl:Swap", parameters=SwapParameters,
                         during_training=True)]
"""


@pytest.fixture
def swap_plugin(fake_dists):
    (fake_dists.root / "sb_swap_impl.py").write_text(SCHEDULE_IMPL)
    fake_dists.modules.append("sb_swap_impl")
    fake_dists.add("sb-swap", "sb_swap", SCHEDULE_PLUGIN)
    return fake_dists


def run_dir(output: Path) -> Path:
    (path,) = (output / "runs").iterdir()
    return path


def test_builtin_schedules_are_registered_and_listed(capsys):
    registry = get_registry()
    specs = {spec.name: spec for spec in registry.list("schedules")}
    assert {"oneshot", "iterative", "gradual"} <= set(specs)
    assert all(specs[name].plugin == "builtin" for name in ("oneshot", "iterative", "gradual"))
    assert specs["gradual"].during_training and not specs["iterative"].during_training
    assert set(specs["iterative"].parameters.model_fields) == {
        "rounds",
        "epochs_per_round",
        "rewind",
        "rewind_point",
    }
    assert main(["list", "schedules"]) == 0
    out = capsys.readouterr().out
    assert "iterative" in out and "gradual" in out and "rounds=3" in out


def test_a_plugin_schedule_runs_end_to_end_through_the_contract(swap_plugin, tmp_path, capsys):
    assert main(["list", "schedules", "swap"]) == 0
    assert "sb-swap" in capsys.readouterr().out
    args = ["--strategy", "GlobalMagWeight", "--compression", "4", *FAST]
    args += ["-p", "schedule.kind=swap", "-p", "schedule.params.every=4"]
    assert run_main([*args, "--output", str(tmp_path)]) == 0
    path = run_dir(tmp_path)
    assert path.name.startswith("digits-mlp-GlobalMagWeight-c4-s0-swap-")
    metrics = json.loads((path / "metrics.json").read_text())
    record = metrics["schedule"]
    assert record["kind"] == "swap" and record["label"] == "swap"
    assert record["settings"] == {"every": 4, "swap": 3}  # validated, defaults filled in
    steps = 2 * -(-1257 // 64)  # 2 epochs of the 1257 training digits, batches of 64
    assert record["updates"] == steps // 4 and record["first_step"] == 1
    config = json.loads((path / "config.json").read_text())
    assert config["config"]["schedule"]["params"] == {"every": 4, "swap": 3}

    # constant sparsity: the pruned stage (before training) and the end keep as many weights
    total = metrics["pruned"]["size"]["total_parameters"]
    assert metrics["pruned"]["size"]["nonzero_parameters"] == round(total / 4)
    masks = load_masks(path / "masks.pt")
    kept = sum(int(m.sum()) for m in masks.values())
    size = metrics["finetuned"]["size"]  # connections regrown at the last swap are still 0
    assert 0 <= kept - (size["prunable_parameters"] - size["pruned_parameters"]) <= 3 * 2
    state = torch.load(path / "model.pt", weights_only=True)
    for name, mask in masks.items():
        assert torch.count_nonzero(state[name][~mask]) == 0, name
    # ... yet the masks moved: they differ from a one-shot run's at the same compression
    oneshot = tmp_path / "oneshot"
    assert (
        run_main(
            ["--strategy", "GlobalMagWeight", "--compression", "4", *FAST, "--output", str(oneshot)]
        )
        == 0
    )
    initial = load_masks(run_dir(oneshot) / "masks.pt")
    assert sum(int(initial[n].sum()) for n in initial) == kept
    assert any(not torch.equal(initial[n], masks[n]) for n in masks)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (
            ["-p", "schedule.kind=swapp"],
            "schedule.kind: unknown schedule 'swapp'. Did you mean: swap",
        ),
        (
            ["-p", "schedule.kind=swap", "-p", "schedule.params.colour=red"],
            "schedule.params.colour: unknown field (allowed: every, swap)",
        ),
        (
            ["-p", "schedule.kind=swap", "-p", "schedule.params.every=0"],
            "schedule.params.every: Input should be greater than or equal to 1",
        ),
        (
            ["-p", "schedule.kind=swap", "-p", "schedule.rounds=2"],
            "schedule: `rounds` applies only to kind='iterative', not 'swap'",
        ),
        (
            ["-p", "schedule.kind=iterative", "-p", "schedule.params.every=2"],
            "`params` applies only to plugin schedules",
        ),
    ],
)
def test_plugin_schedule_settings_are_checked_before_anything_runs(
    swap_plugin, tmp_path, capsys, overrides, needle
):
    assert run_main(["--output", str(tmp_path), *FAST, *overrides]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "dense").exists()


def test_plugin_schedule_params_are_in_the_digest_builtin_digests_unchanged():
    from shrinkbench_core.config import build_config

    swap = build_config({"schedule": {"kind": "swap", "params": {"every": 4}}})
    other = build_config({"schedule": {"kind": "swap", "params": {"every": 8}}})
    assert swap.digest() != other.digest()
    # the digest this config had before plugin schedules (and `schedule.params`) existed
    iterative = build_config({"schedule": {"kind": "iterative", "rounds": 4, "rewind": "init"}})
    assert iterative.digest() == (
        "f47825092db22b64bec9f49ef187e2764a3067c5fc37fcc2e848cd2d1f6762f3"
    )

"""Pruning schedules end to end through `shrinkbench-run` on the embedded digits data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from shrinkbench_strategies.wanda import Wanda

from shrinkbench_core.cli import run_main
from shrinkbench_core.config import ExperimentConfig, build_config, config_digest
from shrinkbench_core.experiment import training
from shrinkbench_core.experiment.naming import run_name
from shrinkbench_core.experiment.resolve import resolve_config
from shrinkbench_core.experiment.runner import Experiment
from shrinkbench_core.experiment.schedules import (
    agp_pruning_steps,
    agp_sparsity,
    geometric_compressions,
)
from shrinkbench_core.pruning import load_masks
from shrinkbench_core.registry import get_registry

FAST = [
    "-p",
    "model.hidden_sizes=[128,128]",
    "-p",
    "dense.epochs=2",
    "-p",
    "metrics=[size,accuracy]",
    "--quiet",
]


def schedule(**fields: object) -> list[str]:
    return [arg for key, value in fields.items() for arg in ("-p", f"schedule.{key}={value}")]


def run_dir(output: Path) -> Path:
    (path,) = (output / "runs").iterdir()
    return path


def metrics_of(output: Path) -> dict:
    return json.loads((run_dir(output) / "metrics.json").read_text())


def deterministic(metrics: dict) -> dict:
    """metrics.json without wall-clock measurements and cache bookkeeping."""
    out = {k: v for k, v in metrics.items() if k != "timings_seconds"}
    out["dense_source"] = {
        k: v for k, v in out["dense_source"].items() if k not in ("trained_now", "cache")
    }
    return out


def experiment_of(path: Path) -> Experiment:
    config = build_config(json.loads((path / "config.json").read_text())["config"])
    return Experiment(resolve_config(config, get_registry()), quiet=True)


def nonzero(state: dict[str, torch.Tensor]) -> int:
    return sum(int(torch.count_nonzero(t)) for t in state.values())


# -- iterative -----------------------------------------------------------------------
def test_iterative_with_rewind_to_init_reaches_the_exact_target_and_records_rounds(tmp_path):
    args = ["--strategy", "GlobalMagWeight", "--compression", "8", "--output", str(tmp_path)]
    extra = ["-p", "finetune.epochs=0"]  # model.pt is then the model right after the last rewind
    extra += schedule(kind="iterative", rounds=3, rewind="init")
    assert run_main([*args, *FAST, *extra]) == 0
    path = run_dir(tmp_path)
    assert path.name.startswith("digits-mlp-GlobalMagWeight-c8-s0-iterative-3x-rewind-init-")
    metrics = metrics_of(tmp_path)
    record = metrics["schedule"]
    assert record["kind"] == "iterative" and record["label"] == "iterative-3x-rewind-init"
    assert record["settings"] == {
        "rounds": 3,
        "epochs_per_round": 1,
        "rewind": "init",
        "rewind_point": 0,
    }
    rounds = record["rounds"]
    total = metrics["pruned"]["size"]["total_parameters"]
    assert [r["compression"] for r in rounds] == pytest.approx(geometric_compressions(8, 3))
    for r in rounds:  # every round prunes to exactly its compression
        assert r["achieved"] == pytest.approx(total / round(total / r["compression"]), rel=1e-12)
    assert [len(r["logs"]) for r in rounds] == [1, 1, 0]  # epochs_per_round, none after the last
    assert all(r["rewound"] for r in rounds)
    assert metrics["pruned"]["size"]["nonzero_parameters"] == round(total / 8)
    assert metrics["compression"]["achieved"] == pytest.approx(total / round(total / 8))

    # rewinding restored the initial weights exactly on every unpruned entry
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    masks = load_masks(path / "masks.pt")
    experiment = experiment_of(path)
    initial = experiment.build_model(experiment.build_data()).state_dict()
    assert nonzero(state) == round(total / 8)
    for name, value in initial.items():
        if name in masks:
            assert torch.equal(state[name][masks[name]], value[masks[name]].cpu()), name
            assert torch.count_nonzero(state[name][~masks[name]]) == 0, name
        else:
            assert torch.equal(state[name], value.cpu()), name
    dense = torch.load(next((tmp_path / "dense").glob("*/model.pt")), weights_only=True)
    assert not torch.equal(dense["classifier.bias"], state["classifier.bias"])


def test_epoch_rewind_is_recorded_in_dense_training_and_replayed_identically(tmp_path):
    base = ["--strategy", "LayerMagWeight", "--compression", "4", *FAST, "-p", "finetune.epochs=0"]
    rewind = schedule(kind="iterative", rounds=2, rewind="epoch", rewind_point=1)
    # a: the dense model is trained by this run, which records epoch 1 on the way
    assert run_main([*base, *rewind, "--output", str(tmp_path / "a")]) == 0
    # b: a one-shot run caches the dense weights without it; the rewinding run replays epoch 1
    assert run_main([*base, "--output", str(tmp_path / "b")]) == 0
    assert not list((tmp_path / "b" / "dense").glob("*/rewind-*.pt"))
    assert run_main([*base, *rewind, "--output", str(tmp_path / "b")]) == 0
    (recorded_file,) = (tmp_path / "a" / "dense").glob("*/rewind-epoch1.pt")
    (replayed_file,) = (tmp_path / "b" / "dense").glob("*/rewind-epoch1.pt")
    recorded = torch.load(recorded_file, weights_only=True)
    replayed = torch.load(replayed_file, weights_only=True)
    assert recorded.keys() == replayed.keys()
    assert all(torch.equal(recorded[k], replayed[k]) for k in recorded)
    dense = torch.load(recorded_file.parent / "model.pt", weights_only=True)
    assert not torch.equal(recorded["classifier.weight"], dense["classifier.weight"])  # epoch 1

    (path_b,) = (p for p in (tmp_path / "b" / "runs").iterdir() if "iterative" in p.name)
    metrics_b = json.loads((path_b / "metrics.json").read_text())
    assert deterministic(metrics_of(tmp_path / "a")) == deterministic(metrics_b)
    state = torch.load(path_b / "model.pt", weights_only=True)
    masks = load_masks(path_b / "masks.pt")
    for name, value in state.items():
        expected = recorded[name] * masks[name] if name in masks else recorded[name]
        assert torch.equal(value, expected), name


def test_every_strategy_works_with_rounds_synflow_without_an_input_shape(tmp_path):
    """SynFlow gets the dataset's input shape from the runner (no `strategy.input_shape`)."""
    args = ["--strategy", "SynFlow", "--compression", "10", "--output", str(tmp_path), *FAST]
    args += ["-p", "finetune.epochs=0", "-p", "strategy.rounds=10"]
    assert run_main([*args, *schedule(kind="iterative", rounds=2, epochs_per_round=0)]) == 0
    metrics = metrics_of(tmp_path)
    total = metrics["pruned"]["size"]["total_parameters"]
    assert metrics["pruned"]["size"]["nonzero_parameters"] == round(total / 10)
    assert [r["logs"] for r in metrics["schedule"]["rounds"]] == [[], []]


# -- gradual -------------------------------------------------------------------------
def interrupt_training(monkeypatch, call: int, after_batches: int) -> None:
    """Raise KeyboardInterrupt in the ``call``-th training epoch after ``after_batches`` steps."""
    real = training.train_epoch
    calls = {"count": 0}

    def train_epoch(model, loader, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] != call:
            return real(model, loader, *args, **kwargs)

        def batches():
            for index, batch in enumerate(loader):
                if index == after_batches:
                    raise KeyboardInterrupt
                yield batch

        return real(model, batches(), *args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", train_epoch)


def test_gradual_follows_the_agp_schedule_and_resumes_after_an_interrupt(
    tmp_path, monkeypatch, capsys
):
    args = ["--strategy", "GlobalMagWeight", "--compression", "6", *FAST]
    args += ["-p", "finetune.epochs=4", "-p", "dataset.batch_size=32"]
    args += schedule(kind="gradual", start_step=5, frequency=15, initial_sparsity=0.1)
    assert run_main([*args, "--output", str(tmp_path / "straight")]) == 0
    reference = metrics_of(tmp_path / "straight")

    record = reference["schedule"]
    experiment = experiment_of(run_dir(tmp_path / "straight"))
    end = 4 * experiment.steps_per_epoch(experiment.build_data())  # every fine-tuning step
    assert end > 100
    assert record["label"] == "gradual-5-end-f15" and record["settings"]["end_step"] == end
    history = record["agp_history"]
    total = reference["pruned"]["size"]["total_parameters"]
    steps = agp_pruning_steps(5, end, 15)
    by_step = {h["step"]: h for h in history}
    assert history[0]["step"] == 5 and set(by_step) <= set(steps)
    kept = total
    for step in steps:  # the cubic formula, and the model within one weight of it
        scheduled = agp_sparsity(step, 1 - 1 / 6, 5, end, 15, 0.1)
        if step not in by_step:  # skipped: the model already had no more weights than that
            assert kept <= round(total * (1 - scheduled)), step
            continue
        assert by_step[step]["scheduled_sparsity"] == pytest.approx(scheduled)
        assert abs(by_step[step]["sparsity"] - scheduled) <= 0.5 / total
        kept = round(total * (1 - by_step[step]["sparsity"]))
    assert len(history) >= len(steps) - 1
    assert kept == round(total / 6) == reference["finetuned"]["size"]["nonzero_parameters"]
    # "pruned" is measured right after the first pruning step (step 5, sparsity 0.1)
    assert reference["pruned"]["size"]["nonzero_parameters"] == round(
        total / history[0]["compression"]
    )
    size = reference["finetuned"]["size"]
    masks = load_masks(run_dir(tmp_path / "straight") / "masks.pt")  # the final masks
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == size["prunable_parameters"] - size["pruned_parameters"]

    # interrupted in the 3rd fine-tuning epoch (2 dense epochs train first), then resumed
    interrupt_training(monkeypatch, call=2 + 3, after_batches=7)
    assert run_main([*args, "--output", str(tmp_path / "killed")]) == 130
    path = run_dir(tmp_path / "killed")
    assert json.loads((path / "status.json").read_text())["status"] == "interrupted"
    assert not (path / "metrics.json").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert run_main([*args, "--output", str(tmp_path / "killed")]) == 0
    assert "resumed after epoch 2" in capsys.readouterr().out
    assert deterministic(metrics_of(tmp_path / "killed")) == deterministic(reference)


# -- configuration -------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,needle",
    [
        (schedule(kind="cyclic"), "schedule.kind: unknown schedule 'cyclic'"),
        (schedule(frequency=10), "schedule: `frequency` applies only to kind='gradual'"),
        (schedule(kind="gradual", rounds=5), "schedule: `rounds` applies only to kind='iterative'"),
        (schedule(kind="iterative", colour="red"), "schedule.colour: unknown field"),
        (
            schedule(kind="iterative", rewind="epoch", rewind_point=9),
            "schedule.rewind_point: epoch 9 is after the last dense epoch (dense.epochs = 2)",
        ),
        (
            [
                *schedule(kind="iterative", rewind="iteration", rewind_point=3),
                *["-p", "dense.source=checkpoint", "-p", "dense.checkpoint=x.pt"],
            ],
            "schedule.rewind: rewinding to a dense iteration needs dense.source = 'train'",
        ),
        (
            schedule(kind="iterative", rewind="iteration", rewind_point=500),
            "schedule.rewind_point: iteration 500 is after the last dense optimizer step",
        ),
        (
            schedule(kind="gradual", end_step=5000),
            "schedule.end_step: gradual pruning runs from step 0 to 5000, but fine-tuning",
        ),
    ],
)
def test_invalid_schedules_are_field_problems_with_exit_code_2(tmp_path, capsys, overrides, needle):
    assert run_main(["--output", str(tmp_path), *FAST, *overrides]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "dense").exists()  # rejected before any training


def test_the_schedule_is_part_of_the_digest_and_the_run_name():
    def config(**schedule_fields):
        data = {"strategy": {"name": "GlobalMagWeight"}}
        if schedule_fields:
            data["schedule"] = schedule_fields
        return build_config(data)

    configs = [
        config(),
        config(kind="iterative"),
        config(kind="iterative", rounds=4),
        config(kind="iterative", rewind="init"),
        config(kind="gradual"),
        config(kind="gradual", frequency=10),
    ]
    assert len({c.digest() for c in configs}) == len(configs)
    assert len({c.dense_digest() for c in configs}) == 1  # every schedule prunes the same dense
    # one-shot runs keep the digests they had before schedules existed
    default = config()
    assert config(kind="oneshot").digest() == default.digest()
    assert default.digest() == config_digest(
        default.model_dump(
            mode="json",
            exclude={"output", "schedule", "trackers", "precision", "channels_last",
                     "calibration"},  # fields left out of the digest at their defaults
            context={"all_fields": True},
        )
    )
    assert ExperimentConfig().model_dump()["schedule"]["kind"] == "oneshot"
    registry = get_registry()
    names = [run_name(resolve_config(c, registry)) for c in (configs[0], configs[3], configs[5])]
    assert names[0].startswith("digits-mlp-GlobalMagWeight-c4-s0-") and "oneshot" not in names[0]
    assert "-s0-iterative-3x-rewind-init-" in names[1]
    assert "-s0-gradual-0-end-f10-" in names[2]


def test_default_oneshot_prunes_the_dense_weights_as_before(tmp_path):
    """One-shot = the strategy applied once to the cached dense weights; = one iterative round."""
    args = ["--strategy", "Wanda", "--compression", "5", *FAST, "-p", "finetune.epochs=1"]
    assert run_main([*args, "--output", str(tmp_path / "oneshot")]) == 0
    one = [*schedule(kind="iterative", rounds=1), "--output", str(tmp_path / "one")]
    assert run_main([*args, *one]) == 0
    oneshot, one_round = metrics_of(tmp_path / "oneshot"), metrics_of(tmp_path / "one")
    assert oneshot["schedule"] == {"kind": "oneshot", "label": "oneshot", "settings": {}}
    for metrics in (oneshot, one_round):
        del metrics["schedule"], metrics["digest"]
    assert deterministic(oneshot) == deterministic(one_round)

    path = run_dir(tmp_path / "oneshot")
    experiment = experiment_of(path)
    splits = experiment.build_data()
    model = experiment.build_model(splits)
    model.load_state_dict(
        torch.load(next((tmp_path / "oneshot" / "dense").glob("*/model.pt")), weights_only=True)
    )
    torch.manual_seed(experiment.seeds.pruning)
    expected = Wanda(
        model,
        5,
        calibration=experiment.calibration_batches(splits),
        classifier="classifier",
        seed=experiment.seeds.pruning,
    ).compute_masks()
    masks = load_masks(path / "masks.pt")
    assert masks.keys() == expected.keys()
    assert all(torch.equal(masks[name], expected[name].cpu()) for name in masks)

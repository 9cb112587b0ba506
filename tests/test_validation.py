"""Validation before anything runs: every problem at once, factories imported, the environment.

Each test runs the real CLI in-process with real (fake-distribution) plugins and
checks the three promises of a user error: one screen of ``field: problem``
lines, exit code 2, and nothing written.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from shrinkbench_core.cli import main, run_main
from shrinkbench_core.config import ExperimentConfig

MISSING = "not_installed_dependency_xyz"

# kind -> (spec class, extra spec fields, how the run selects it, field of the problem)
KINDS = {
    "strategy": (
        "StrategySpec",
        'scope="global"',
        ["--strategy", "BrokenThing"],
        "strategy.name",
    ),
    "dataset": (
        "DatasetSpec",
        "input_shape=(1, 8, 8), num_classes=10",
        ["--dataset", "BrokenThing"],
        "dataset.name",
    ),
    "model": ("ModelSpec", "", ["--model", "BrokenThing"], "model.name"),
    "metric": ("MetricSpec", 'unit="x"', ["-p", "metrics=[size,BrokenThing]"], "metrics[1]"),
    "schedule": ("ScheduleSpec", "", ["-p", "schedule.kind=BrokenThing"], "schedule.kind"),
    "tracker": ("TrackerSpec", "", ["-p", "trackers=[BrokenThing]"], "trackers[0]"),
}
HOOKS = {
    "strategy": "strategies",
    "dataset": "datasets",
    "model": "models",
    "metric": "metrics",
    "schedule": "schedules",
    "tracker": "trackers",
}


def install_component(fake_dists, kind: str, factory_source: str, attr: str = "thing") -> str:
    """A plugin registering one component called BrokenThing whose factory is ``attr``."""
    spec_class, extra, _, _ = KINDS[kind]
    module = f"sb_{kind}_impl"
    (fake_dists.root / f"{module}.py").write_text(textwrap.dedent(factory_source))
    fake_dists.modules.append(module)
    fields = f', {extra}' if extra else ""
    fake_dists.add(
        f"sb-broken-{kind}",
        f"sb_broken_{kind}",
        f"""
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import {spec_class}

@hookimpl
def shrinkbench_register_{HOOKS[kind]}():
    return [{spec_class}(name="BrokenThing", summary="test", factory="{module}:{attr}"{fields})]
""",
    )
    return module


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    code = run_main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


# -- 1. every factory is imported before anything runs ------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_factory_that_cannot_be_imported_is_one_line_before_anything_runs(
    kind, fake_dists, tmp_path, capsys
):
    module = install_component(fake_dists, kind, f"import {MISSING}\n")
    out = tmp_path / "out"
    code, err = run(capsys, *KINDS[kind][2], "--output", str(out))
    assert code == 2
    field = KINDS[kind][3]
    expected = (
        f"{field}: cannot import {module} (plugin sb-broken-{kind}): No module named '{MISSING}'"
    )
    assert [line.strip() for line in err[1:]] == [expected], err
    assert not any("Traceback" in line for line in err)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_factory_that_is_missing_from_its_module_is_reported(kind, fake_dists, tmp_path, capsys):
    module = install_component(fake_dists, kind, "other = 1\n")
    code, err = run(capsys, *KINDS[kind][2], "--output", str(tmp_path / "out"))
    assert code == 2
    assert f"{KINDS[kind][3]}: cannot import {module}:thing (plugin sb-broken-{kind})" in err[1]


@pytest.mark.parametrize("kind", ["dataset", "model", "metric", "schedule", "tracker"])
def test_a_factory_that_is_not_callable_is_reported(kind, fake_dists, tmp_path, capsys):
    install_component(fake_dists, kind, "thing = 42\n")
    code, err = run(capsys, *KINDS[kind][2], "--output", str(tmp_path / "out"))
    assert code == 2 and "is a int, not a callable" in err[1], err


def test_a_strategy_factory_must_be_a_strategy_subclass(fake_dists, tmp_path, capsys):
    install_component(fake_dists, "strategy", "class thing:\n    pass\n")
    code, err = run(capsys, "--strategy", "BrokenThing", "--output", str(tmp_path / "out"))
    assert code == 2
    assert "is not a subclass of shrinkbench_core.pruning.Strategy" in err[1]


# -- 2. every problem of a config or sweep file at once --------------------------------
FIELD_AND_COMPONENT_ERRORS = [
    "compression: must be >= 1",
    "foo: unknown field",
    "strategy.params.norm: unknown field",
    "model.params.hiddn: unknown field",
    "finetune.epochs: Input should be greater than or equal to 0",
    "metrics[1]: unknown metric 'nosuch'",
]


def assert_all_reported(err: list[str], expected: list[str], title: str) -> None:
    assert err[0] == f"error: {title}:", err
    text = "\n".join(err)
    for problem in expected:
        assert problem in text, (problem, text)


def test_flags_and_component_parameters_are_reported_in_one_round(tmp_path, capsys):
    code, err = run(
        capsys,
        "--compression", "0.5", "-p", "foo=1", "-p", "strategy.norm=l2", "-p", "model.hiddn=3",
        "-p", "finetune.epochs=-1", "-p", "metrics=[size,nosuch]", "-p", "bad",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert_all_reported(
        err, [*FIELD_AND_COMPONENT_ERRORS, "-p bad: expected key=value"], "invalid configuration"
    )
    assert not (tmp_path / "out").exists()


def test_a_config_file_is_reported_in_one_round_under_its_name(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_text(
        textwrap.dedent(
            """
            compression = 0.5
            foo = 1
            metrics = ["size", "nosuch"]
            [strategy]
            name = "GlobalMagWeight"
            params = {norm = "l2"}
            [model]
            params = {hiddn = 3}
            [finetune]
            epochs = -1
            """
        )
    )
    code, err = run(capsys, "--config", str(path), "--output", str(tmp_path / "out"))
    assert code == 2
    assert_all_reported(err, FIELD_AND_COMPONENT_ERRORS, f"invalid configuration {path}")


def test_a_sweep_file_is_reported_in_one_round_under_its_name(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(
        textwrap.dedent(
            """
            compressions = [0.5, 2]
            models = ["mlp", {name = "nosuchmodel"}]
            [[strategies]]
            name = "GlobalMagWeight"
            params = {norm = "l2"}
            [[strategies]]
            params = {}
            [shared]
            seed = 3
            finetune = {epochs = -1}
            metrics = ["size", "nosuch"]
            """
        )
    )
    code = main(["sweep", str(path), "--dry-run", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert_all_reported(
        err,
        [
            "compressions[0]: must be >= 1",
            "strategies[1].name: Field required",
            "shared: 'seed' is set by the sweep's 'seeds' list",
            "shared.finetune.epochs: Input should be greater than or equal to 0",
            "strategies[0].params.norm: unknown field",
            "models[1].name: unknown model 'nosuchmodel'",
            "shared.metrics[1]: unknown metric 'nosuch'",
        ],
        f"invalid sweep file {path}",
    )


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_sweep_compression_no_model_reaches_is_refused_on_any_executor(
    executor, tmp_path, capsys
):
    path = tmp_path / "study.toml"
    path.write_text('compressions = [2, 1000000]\n[[strategies]]\nname = "GlobalMagWeight"\n')
    code = main(["sweep", str(path), "--dry-run", "--executor", executor])
    err = capsys.readouterr().err
    assert code == 2 and "compressions[1]: 1e+06 cannot be reached by mlp" in err


def test_a_sweep_with_only_component_problems_keeps_the_file_name(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text('compressions = [2]\n[[strategies]]\nname = "NoSuchStrategy"\n')
    code = main(["sweep", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: invalid sweep file {path}:" in err
    assert "strategies[0].name: unknown strategy 'NoSuchStrategy'" in err


# -- 3. the environment is checked during validation -----------------------------------
def test_cuda_without_cuda_is_a_validation_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run(capsys, "--device", "cuda", "--output", str(tmp_path / "out"))
    assert code == 2
    assert err[1].strip().startswith("device: 'cuda' asked for, but CUDA is not available")
    assert not (tmp_path / "out").exists()


def test_a_cuda_index_beyond_the_devices_is_a_validation_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, err = run(capsys, "--device", "cuda:2", "--output", str(tmp_path / "out"))
    assert code == 2
    assert err[1].strip() == "device: 'cuda:2' does not exist: this machine has 2 CUDA device(s)"


def test_a_device_that_is_not_one_is_rejected(tmp_path, capsys):
    code, err = run(capsys, "--device", "cudax", "--output", str(tmp_path / "out"))
    assert code == 2 and "device: 'cudax' is not a device" in err[1]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--dataset", "mnist", "--model", "lenet300"], "dataset.params.root: MNIST not found"),
        (["--dataset", "cifar10", "--model", "resnet20"], "dataset.params.root: CIFAR-10 not"),
        (["--dataset", "cifar100", "--model", "resnet20"], "dataset.params.root: CIFAR-100 not"),
        (
            ["--dataset", "mnist", "--model", "lenet300", "-p", "dataset.validation_size=60000"],
            "dataset.params.validation_size: 60000 leaves no training examples",
        ),
        (
            ["-p", "dataset.validation_size=1500"],
            "dataset.params.validation_size: 1500 validation + 360 test examples leave none",
        ),
    ],
)  # fmt: skip
def test_missing_data_and_oversized_splits_are_validation_errors(
    argv, expected, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SHRINKBENCH_DATA", str(tmp_path / "empty"))
    code, err = run(capsys, *argv, "--output", str(tmp_path / "out"))
    assert code == 2
    assert any(line.strip().startswith(expected) for line in err), err
    assert not (tmp_path / "out").exists()


def test_a_dataset_plugin_check_is_run_during_validation(fake_dists, tmp_path, capsys):
    (fake_dists.root / "sb_checked_impl.py").write_text(
        "def build(params, *, seed):\n    raise AssertionError('never built')\n"
        "def check(params):\n    return ['root: nothing under ' + str(params.root)]\n"
    )
    fake_dists.modules.append("sb_checked_impl")
    fake_dists.add(
        "sb-checked",
        "sb_checked",
        """
from pydantic import BaseModel
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import DatasetSpec

class Params(BaseModel):
    root: str = "nowhere"

@hookimpl
def shrinkbench_register_datasets():
    return [DatasetSpec(name="checked", summary="t", factory="sb_checked_impl:build",
                        check="sb_checked_impl:check", parameters=Params,
                        input_shape=(1, 8, 8), num_classes=10)]
""",
    )
    code, err = run(capsys, "--dataset", "checked", "--output", str(tmp_path / "out"))
    assert code == 2 and err[1].strip() == "dataset.params.root: nothing under nowhere"


@pytest.mark.parametrize(
    "data",
    [
        {"model": {"name": "mlp"}},
        {"model": {"name": "lenet300"}},
        {"model": {"name": "mlp", "params": {"hidden_sizes": [32]}},
         "prunable": {"exclude": ["layers.0.*"]}},
    ],
)  # fmt: skip
def test_an_unreachable_compression_is_found_before_the_run_with_the_runners_figure(data):
    import re

    import torch

    from shrinkbench_core.errors import CompressionError, ConfigError
    from shrinkbench_core.experiment.resolve import validate_experiment
    from shrinkbench_core.pruning.compression import compression_budget
    from shrinkbench_core.pruning.prunable import find_classifier, prunable_parameters
    from shrinkbench_core.registry import get_registry

    with pytest.raises(ConfigError) as caught:
        validate_experiment({**data, "compression": 1e6}, get_registry())
    (line,) = [p for p in caught.value.problems if p.startswith("compression:")]
    largest = re.search(r"largest reachable compression is ([\d.]+)", line).group(1)
    # The same figure as the runner's own check on the real model:
    resolved = validate_experiment(data, get_registry())
    spec, config = resolved.model, resolved.config
    model = spec.load()(spec.parameters(**config.model.params), num_classes=10,
                        input_shape=(1, 8, 8))
    classifier = spec.classifier or find_classifier(model, torch.zeros(1, 1, 8, 8))
    prunable = prunable_parameters(model, config.prunable, classifier)
    with pytest.raises(CompressionError, match=f"largest reachable compression is {largest}"):
        compression_budget(model, prunable, 1e6)
    validate_experiment({**data, "compression": float(largest) * 0.99}, get_registry())


def test_a_problem_found_only_while_running_names_the_failed_run(tmp_path, capsys, monkeypatch):
    from shrinkbench_core.experiment import resolve

    monkeypatch.setattr(resolve, "compression_problem", lambda *args: None)  # found later
    code, err = run(
        capsys, "--compression", "1e6", "-p", "dense.epochs=0", "-p", "metrics=[size]",
        "-p", "model.hidden_sizes=[8]", "--quiet", "--output", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and "largest reachable compression" in err[0]
    (path,) = (tmp_path / "runs").iterdir()
    assert err[-1] == f"the run is marked failed in {path}"
    status = json.loads((path / "status.json").read_text())
    assert status["status"] == "failed" and "CompressionError" in status["error"]


# -- 9. values and paths at the edges ----------------------------------------------------
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--seed", str(2**64)], f"seed: {2**64} is out of range: a seed is between 0 and"),
        (["-p", "seeds.init=-1"], "seeds.init: -1 is out of range"),
        (["-p", "metrics=[size,flops,size]"], "metrics[2]: 'size' is already metrics[0]"),
        (["--compression", "4", "-p", "compression=8"], "compression: set twice on the command"),
        (["-p", "seed=1", "-p", "seed=2"], "seed: set twice on the command line"),
        (["--data-root", "a", "-p", "dataset.root=b"], "dataset.params.root: set twice"),
        (["-p", "metrics.memory.repeats=3"], "metrics.memory: not a configured metric"),
        (["-p", "metrics.latency.repetitions=3"], "metrics[3].params.repetitions: unknown field"),
    ],
)
def test_values_at_the_edges_are_clear_errors(argv, expected, tmp_path, capsys):
    code, err = run(capsys, *argv, "--output", str(tmp_path / "out"))
    assert code == 2
    assert any(line.strip().startswith(expected) for line in err), err
    assert not any("Traceback" in line for line in err)


def test_flags_override_the_config_file(tmp_path):
    from shrinkbench_core.cli import build_parser, experiment_config_from_args

    path = tmp_path / "exp.toml"
    path.write_text('compression = 8\n[strategy]\nname = "LayerMagWeight"\n')
    args = build_parser().parse_args(
        ["run", "--config", str(path), "--compression", "2", "-p", "strategy.name=RandomPruning"]
    )
    config = experiment_config_from_args(args)
    assert (config.compression, config.strategy.name) == (2, "RandomPruning")


def test_the_same_value_given_twice_is_not_a_conflict(tmp_path, capsys):
    from shrinkbench_core.cli import build_parser, experiment_config_from_args

    args = build_parser().parse_args(["run", "--compression", "8", "-p", "compression=8"])
    assert experiment_config_from_args(args).compression == 8


def test_paths_that_are_directories(tmp_path, capsys):
    code, err = run(capsys, "--config", str(tmp_path))
    assert code == 2 and f"config file {tmp_path} is a directory" in err[0]
    code, err = run(
        capsys, "-p", "dense.source=checkpoint", "-p", f"dense.checkpoint={tmp_path}",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and f"dense.checkpoint: {tmp_path} is a directory" in err[1]
    code, err = run(
        capsys, "-p", "dense.source=checkpoint", "-p", f"dense.checkpoint={tmp_path / 'no.pt'}",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "no.pt not found" in err[1]


# -- 13. the optimizer fields a run records, digests unchanged ---------------------------
# Digests computed by the code before this change (commit 6abafd8): they name existing runs.
PINNED_DIGESTS = [
    ({}, "0df79473f2f0a979a7f7994005dbfcb751c6b5e0fbb11188c00f1ed8fb2e1165"),
    (
        {"finetune": {"optimizer": {"name": "adamw", "lr": 0.001}}},
        "4fa4e9b39552e1f8a892e5570489968be5820266d159ce15c704a38783c2f8e4",
    ),
    (
        {
            "finetune": {"optimizer": {"name": "sgd", "momentum": 0.5}},
            "seed": 3,
            "metrics": ["size", "accuracy"],
        },
        "7bd3e16e0ef2d978a59a98aa1265601f4ff5277468f4cdbf477355f0f0352af7",
    ),
    (
        {"dense": {"optimizer": {"name": "adam"}}, "strategy": {"name": "LayerMagWeight"}},
        "d282d12ff7b41be2f26353ec26256877758ebb853648e2ddf7dce21fe08782d0",
    ),
]


@pytest.mark.parametrize("data, digest", PINNED_DIGESTS)
def test_digests_of_existing_configs_are_unchanged(data, digest):
    config = ExperimentConfig.model_validate(data)
    assert config.digest() == digest
    recorded = json.loads(json.dumps(config.model_dump(mode="json")))  # what config.json holds
    assert ExperimentConfig.model_validate(recorded).digest() == digest


@pytest.mark.parametrize("name, unused", [("sgd", {"betas"}), ("adam", {"momentum", "nesterov"}),
                                          ("adamw", {"momentum", "nesterov"})])
def test_recorded_optimizer_has_only_the_settings_it_uses(name, unused):
    optimizer = {"optimizer": {"name": name}}
    config = ExperimentConfig.model_validate({"finetune": optimizer, "dense": optimizer})
    recorded = config.model_dump(mode="json")
    full = config.model_dump(mode="json", context={"all_fields": True})
    for section in ("finetune", "dense"):
        assert not unused & set(recorded[section]["optimizer"])
        assert "lr" in recorded[section]["optimizer"]
        assert unused <= set(full[section]["optimizer"])
    # The digest still hashes the unused settings: changing one changes it.
    changed = next(iter(unused))
    value = (0.5, 0.5) if changed == "betas" else not optimizer["optimizer"].get(changed, True)
    other = ExperimentConfig.model_validate(
        {"finetune": {"optimizer": {"name": name, changed: value}}, "dense": optimizer}
    )
    assert other.digest() != config.digest()
    assert ExperimentConfig.model_validate(recorded).digest() == config.digest()


def test_an_unused_setting_changed_by_the_user_is_still_recorded():
    config = ExperimentConfig.model_validate(
        {"finetune": {"optimizer": {"name": "adamw", "momentum": 0.5}}}
    )
    recorded = config.model_dump(mode="json")
    assert recorded["finetune"]["optimizer"]["momentum"] == 0.5
    assert ExperimentConfig.model_validate(recorded).digest() == config.digest()

"""Components' ``config_defaults``: applied where the user set nothing, in a fixed precedence.

A real plugin (registered in a real pluggy manager) provides ``digits-tuned`` and
``mlp-tuned``: the built-in digits and mlp with experiment defaults. Every way a user
sets a field (config file, ``-p``, sweep shared/axes, the Python API) must win over them.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from pydantic import ValidationError

from shrinkbench_core.api import config_dict
from shrinkbench_core.cli import main
from shrinkbench_core.config import (
    ExperimentConfig,
    apply_config_defaults,
    build_config,
    config_default_problems,
    is_set,
)
from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment.resolve import resolve_config, validate_experiment
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.plugins import PluginSelection, make_plugin_manager
from shrinkbench_core.registry import Registry, reset_registry
from shrinkbench_core.specs import DatasetSpec, ModelSpec
from shrinkbench_core.sweep.config import expand_sweep, load_sweep_file

DATA_DEFAULTS = {
    "dense.epochs": 2,
    "finetune.epochs": 1,
    "dataset.batch_size": 16,
    "dataset.params.test_size": 100,
}
MODEL_DEFAULTS = {
    "dense.epochs": 3,  # wins over the dataset's 2
    "dense.optimizer.name": "adamw",
    "dense.optimizer.lr": 0.01,
    "model.params.hidden_sizes": [32],
    "metrics": ["size", "accuracy"],
}
BASE = {"dataset": {"name": "digits-tuned"}, "model": {"name": "mlp-tuned"}}


def _builtin() -> Registry:
    return Registry(make_plugin_manager(PluginSelection(), load_entry_points=False))


class TunedPlugin:
    """digits and mlp, each with config_defaults."""

    def __init__(self, data_defaults=DATA_DEFAULTS, model_defaults=MODEL_DEFAULTS) -> None:
        builtin = _builtin()
        skip = {"plugin", "distribution", "version", "name", "config_defaults"}
        self.data = {**builtin.get("datasets", "digits").model_dump(exclude=skip),
                     "name": "digits-tuned", "config_defaults": data_defaults}  # fmt: skip
        self.model = {**builtin.get("models", "mlp").model_dump(exclude=skip),
                      "name": "mlp-tuned", "config_defaults": model_defaults}  # fmt: skip

    @hookimpl
    def shrinkbench_register_datasets(self):
        return [DatasetSpec(**self.data)]

    @hookimpl
    def shrinkbench_register_models(self):
        return [ModelSpec(**self.model)]


@pytest.fixture
def registry():
    reg = Registry(
        make_plugin_manager(
            PluginSelection(), extra_plugins=[("tuned", TunedPlugin())]  # + GlobalMagWeight
        )
    )
    reset_registry(reg)
    yield reg
    reset_registry(None)


def resolved_config(registry, data) -> ExperimentConfig:
    return validate_experiment(data, registry, check_environment=False).config


# -- applied where unset, precedence ----------------------------------------------------
def test_defaults_fill_unset_fields_model_over_dataset_over_core(registry):
    config = resolved_config(registry, BASE)
    assert config.dense.epochs == 3  # model (3) > dataset (2) > core (15)
    assert config.finetune.epochs == 1  # only the dataset sets it
    assert config.dataset.batch_size == 16
    assert config.dense.optimizer.name == "adamw" and config.dense.optimizer.lr == 0.01
    assert config.dataset.params["test_size"] == 100
    assert config.model.params["hidden_sizes"] == [32]
    assert [m.name for m in config.metrics] == ["size", "accuracy"]
    assert config.compression == 4.0 and config.finetune.optimizer.name == "sgd"  # core's
    # the resolved values are ordinary values: resolving again changes nothing
    again = resolve_config(ExperimentConfig.model_validate(config.model_dump(mode="json")),
                           registry)  # fmt: skip
    assert again.config.digest() == config.digest()


def test_what_the_user_sets_wins_even_at_the_core_default(registry):
    config = resolved_config(
        registry,
        {**BASE, "dense": {"epochs": 15, "optimizer": {"lr": 0.05}},
         "dataset": {"name": "digits-tuned", "params": {"test_size": 360}}},
    )  # fmt: skip
    assert config.dense.epochs == 15 and config.dense.optimizer.lr == 0.05
    assert config.dense.optimizer.name == "adamw"  # not set by the user: the model's
    assert config.dataset.params["test_size"] == 360
    assert config.dataset.batch_size == 16


def test_config_file_and_flags_win_and_print_config_names_the_defaults(
    registry, tmp_path, capsys
):
    path = tmp_path / "exp.toml"
    path.write_text("[dense]\nepochs = 7\n[dataset]\nname = 'digits-tuned'\nbatch_size = 8\n")
    code = main(["run", "--config", str(path), "--model", "mlp-tuned", "-p", "finetune.epochs=0",
                 "-p", "model.hidden_sizes=[8]", "--print-config"])  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    config = printed["config"]
    assert config["dense"]["epochs"] == 7 and config["dataset"]["batch_size"] == 8  # file
    assert config["finetune"]["epochs"] == 0 and config["model"]["params"]["hidden_sizes"] == [8]
    assert config["dense"]["optimizer"]["name"] == "adamw"  # model default
    assert printed["derived"]["component_defaults"] == {
        "dataset.params.test_size": 100,
        "dense.optimizer.name": "adamw",
        "dense.optimizer.lr": 0.01,
        "metrics": ["size", "accuracy"],
    }


def test_sweep_shared_and_axes_win(registry, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            output = "{tmp_path / 'out'}"
            compressions = [2]
            datasets = [{{ name = "digits-tuned", batch_size = 32 }}]
            models = [{{ name = "mlp-tuned" }},
                      {{ name = "mlp-tuned", params = {{ hidden_sizes = [4] }} }}]
            strategies = ["GlobalMagWeight"]
            [shared.dense]
            epochs = 1
            """
        )
    )
    runs = expand_sweep(load_sweep_file(path), registry)
    configs = [run.config for run in runs]
    assert [c["model"]["params"]["hidden_sizes"] for c in configs] == [[32], [4]]
    for config in configs:
        assert config["dense"]["epochs"] == 1  # shared
        assert config["dataset"]["batch_size"] == 32  # axis
        assert config["finetune"]["epochs"] == 1  # dataset default
        assert config["dense"]["optimizer"]["name"] == "adamw"  # model default


def test_python_api_config_object_keeps_what_it_set(registry):
    given = ExperimentConfig(dataset={"name": "digits-tuned"}, model={"name": "mlp-tuned"},
                             dense={"optimizer": {"lr": 0.2}})  # fmt: skip
    data = config_dict(given, {"finetune": {"epochs": 4}})
    config = resolve_config(build_config(data), registry).config
    assert config.dense.optimizer.lr == 0.2 and config.finetune.epochs == 4  # user's
    assert config.dense.epochs == 3 and config.dense.optimizer.name == "adamw"  # defaults


@pytest.mark.slow
def test_python_api_run_uses_the_defaults(registry, tmp_path):
    import shrinkbench_core as sb

    result = sb.run(dataset="digits-tuned", model="mlp-tuned", quiet=True, compression=2,
                    output=str(tmp_path), dense={"epochs": 1}, finetune={"epochs": 0},
                    metrics=["size"])  # fmt: skip
    recorded = json.loads((result.path / "config.json").read_text())["config"]
    assert recorded["dense"]["epochs"] == 1 and recorded["finetune"]["epochs"] == 0
    assert recorded["dense"]["optimizer"]["name"] == "adamw"
    assert recorded["dataset"]["batch_size"] == 16 and recorded["metrics"] == ["size"]


# -- digests ------------------------------------------------------------------------------
# The resolved default experiment (digits, mlp, GlobalMagWeight), hashed by the code before
# config_defaults and the calibration section existed (commit 45e7dcf).
RESOLVED_DEFAULT_DIGEST = "4e18a5bf25a67a5d6ce585f86a391d7fd3bf0769a18180de7981850c002a83b9"


def test_components_without_defaults_hash_as_before(registry):
    config = ExperimentConfig.model_validate({"calibration_batches": 2})
    same, applied = apply_config_defaults(config, [{}, {}])
    assert same is config and applied == {}
    resolved = resolve_config(ExperimentConfig(), registry).config
    assert resolved.digest() == RESOLVED_DEFAULT_DIGEST


def test_calibration_section_is_hashed_only_when_set():
    plain = ExperimentConfig.model_validate({"calibration_batches": 8})
    assert "calibration" not in json.dumps(plain.digest())
    assert plain.digest() == ExperimentConfig.model_validate(
        {"calibration_batches": 8, "calibration": {}}
    ).digest()
    assert plain.digest() != ExperimentConfig.model_validate(
        {"calibration_batches": 8, "calibration": {"samples": 16}}
    ).digest()
    assert plain.dense_digest() == ExperimentConfig.model_validate(
        {"calibration_batches": 8, "calibration": {"samples": 16}}
    ).dense_digest()


def test_is_set_follows_what_was_given():
    config = ExperimentConfig.model_validate(
        {"dense": {"optimizer": {"lr": 0.1}}, "dataset": {"params": {"root": "x"}}}
    )
    assert is_set(config, "dense.optimizer.lr") and not is_set(config, "dense.optimizer.name")
    assert not is_set(config, "dense.epochs") and not is_set(config, "finetune.epochs")
    assert is_set(config, "dataset.params.root") and not is_set(config, "dataset.params.size")


# -- bad defaults are the plugin's error ------------------------------------------------
@pytest.mark.parametrize(
    "defaults, expected",
    [
        ({"dense.epoch": 1}, "dense.epoch: no field 'epoch' in dense (fields: "),
        ({"dense.optimizer": {"lr": 1}}, "name a field inside it, e.g. dense.optimizer.name"),
        ({"dense.epochs": -1}, "dense.epochs: Input should be greater than or equal to 0"),
        ({"model.name": "x"}, "model.name is the user's choice"),
        ({"strategy.params.nm": "2:4"}, "strategy is the user's choice"),
        ({"seed": 3}, "seed is the user's choice"),
        ({"dataset.params.root": "x"}, "a model may default only its own parameters"),
        ({"model.params.depth": 3}, "not a parameter of this model (allowed: hidden_sizes"),
        ({"model.params.hidden_sizes": "wide"}, "model.params.hidden_sizes: Input should be"),
        ({"compression.x": 1}, "compression has no fields"),
    ],
)
def test_bad_default_keys_and_values_are_named(defaults, expected):
    problems = config_default_problems(defaults, "model", _builtin().get("models", "mlp")
                                       .parameters)  # fmt: skip
    assert any(expected in line for line in problems), problems


def test_valid_defaults_have_no_problems():
    parameters = _builtin().get("models", "mlp").parameters
    assert config_default_problems(MODEL_DEFAULTS, "model", parameters) == []


def test_a_plugin_with_a_bad_default_is_reported_broken(capsys):
    plugin = TunedPlugin(model_defaults={"dense.epochz": 1})
    with pytest.raises(ValidationError, match="dense.epochz: no field 'epochz'"):
        plugin.shrinkbench_register_models()
    reg = Registry(make_plugin_manager(PluginSelection(), extra_plugins=[("tuned", plugin)],
                                       load_entry_points=False))  # fmt: skip
    (info,) = [p for p in reg.plugins() if p["name"] == "tuned"]
    assert info["status"] == "error" and "dense.epochz" in info["error"]
    assert "plugin 'tuned' failed to load" in capsys.readouterr().err
    with pytest.raises(Exception, match="mlp-tuned"):
        reg.get("models", "mlp-tuned")


def test_listing_shows_config_defaults(registry, capsys):
    assert main(["list", "models", "mlp-tuned"]) == 0
    out = capsys.readouterr().out
    assert "config defaults" in out and "dense.optimizer.name='adamw'" in out
    assert main(["list", "models", "mlp-tuned", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["config_defaults"] == MODEL_DEFAULTS


def test_a_default_that_conflicts_with_the_users_config_is_a_config_error():
    config = ExperimentConfig.model_validate({"compression": 2})
    with pytest.raises(ConfigError, match="from a component's config_defaults"):
        apply_config_defaults(config, [{"dense.optimizer.name": "rmsprop"}])

"""Tracker selection: the spec kind, the config field, checks before a run, missing libraries."""

from __future__ import annotations

import importlib.abc
import json
import subprocess
import sys
import textwrap

import pytest

from shrinkbench_core import cli
from shrinkbench_core.config import (
    ExperimentConfig,
    apply_override,
    build_config,
    parse_value,
    read_config_file,
)
from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment.resolve import resolve_config
from shrinkbench_core.registry import get_registry
from shrinkbench_core.specs import TrackerSpec
from shrinkbench_core.trackers import missing_modules, tracker_plugins, tracker_problems
from shrinkbench_core.trackers.base import Tracker

# Digests of these configs before the ``trackers`` field existed (recorded at 6abafd8).
OLD_DIGESTS = {
    "default": (
        "0df79473f2f0a979a7f7994005dbfcb751c6b5e0fbb11188c00f1ed8fb2e1165",
        "11bb3fdda6cd4155339373d68f2696b1212e8b67bcf88c0cba08bd8a57ed87a5",
    ),
    "iterative": (
        "5d0bcff1d62eee5275c0343e9d54e2d2881339a1e10b6f0b431b09bca9a49daf",
        "11bb3fdda6cd4155339373d68f2696b1212e8b67bcf88c0cba08bd8a57ed87a5",
    ),
}
CONFIGS = {
    "default": {},
    "iterative": {
        "strategy": {"name": "LayerMagWeight"},
        "compression": 8,
        "finetune": {"epochs": 2},
        "schedule": {"kind": "iterative", "rounds": 2},
    },
}


class BlockImports(importlib.abc.MetaPathFinder):
    """A meta-path finder that makes the named top-level modules unimportable."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def block(monkeypatch):
    """``block("wandb")``: the module cannot be found or imported for the test's duration."""

    def blocker(*names: str) -> None:
        for name in names:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setattr(sys, "meta_path", [BlockImports(*names), *sys.meta_path])

    return blocker


# -- registry and listing ---------------------------------------------------------------
def test_builtin_plugin_registers_three_trackers_with_their_extras():
    specs = {spec.name: spec for spec in get_registry().list("trackers")}
    assert set(specs) == {"tensorboard", "mlflow", "wandb"}
    for name, spec in specs.items():
        assert isinstance(spec, TrackerSpec)
        assert spec.plugin == "builtin"
        assert spec.requires == (name,)
        assert spec.extra == f"shrinkbench-core[{name}]"


def test_list_trackers_on_the_command_line(capsys):
    assert cli.main(["list", "trackers", "--json"]) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert listed["wandb"]["kind"] == "tracker"
    assert listed["wandb"]["extra"] == "shrinkbench-core[wandb]"
    assert "tracking_uri" in listed["mlflow"]["parameters"]
    assert cli.main(["list", "trackers", "tensor*"]) == 0
    out = capsys.readouterr().out
    assert "tensorboard" in out and "mlflow" not in out


def test_a_plugin_registers_its_own_tracker(fake_dists):
    fake_dists.add(
        "my-tracker",
        "my_tracker_plugin",
        """
        from shrinkbench_core.hookspecs import hookimpl
        from shrinkbench_core.trackers import Tracker

        class Printer(Tracker):
            def on_epoch(self, run, stage, epoch, logs):
                print(stage, epoch)

        @hookimpl
        def shrinkbench_register_trackers():
            factory = "my_tracker_plugin:Printer"
            return [{"name": "printer", "summary": "prints", "factory": factory}]
        """,
    )
    fake_dists.add(
        "bad-tracker",
        "bad_tracker_plugin",
        """
        from shrinkbench_core.hookspecs import hookimpl

        @hookimpl
        def shrinkbench_register_trackers():
            return [{"name": "mine", "summary": "x", "factory": "no colon"}]
        """,
    )
    registry = get_registry()
    assert registry.get("trackers", "printer").plugin == "my-tracker"
    [(name, plugin)] = tracker_plugins(build_config({"trackers": ["printer"]}), registry)
    assert name == "tracker:printer" and type(plugin).__name__ == "Printer"
    assert "mine" not in registry.names("trackers")
    info = registry.manager.infos["bad-tracker"]
    assert info.status == "error" and "factory" in info.error


# -- the config field ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["[tensorboard,mlflow]", "tensorboard,mlflow", "[tensorboard, {name: mlflow}]"],
)
def test_trackers_from_a_p_option(text):
    data: dict = {}
    apply_override(data, "trackers", parse_value(text))
    config = build_config(data)
    assert [t.name for t in config.trackers] == ["tensorboard", "mlflow"]


def test_trackers_with_parameters_from_a_config_file(tmp_path):
    path = tmp_path / "experiment.toml"
    path.write_text(
        textwrap.dedent(
            """
            trackers = ["tensorboard", {name = "mlflow", params = {experiment_name = "x"}}]
            """
        )
    )
    config = build_config(read_config_file(path))
    assert config.trackers[1].params == {"experiment_name": "x"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trackers_leave_digests_unchanged(name):
    digest, dense_digest = OLD_DIGESTS[name]
    plain = ExperimentConfig.model_validate(CONFIGS[name])
    tracked = ExperimentConfig.model_validate(
        {**CONFIGS[name], "trackers": ["tensorboard", {"name": "mlflow", "params": {"x": 1}}]}
    )
    assert plain.digest() == tracked.digest() == digest
    assert plain.dense_digest() == tracked.dense_digest() == dense_digest


def test_tracker_entries_must_be_names_or_tables():
    with pytest.raises(ConfigError) as error:
        build_config({"trackers": ["tensorboard", 3]})
    assert error.value.problems == [
        "trackers: each entry is a tracker name or a table {name, params}, not 3"
    ]
    with pytest.raises(ConfigError) as error:
        build_config({"trackers": [{"params": {}}]})
    assert error.value.problems[0].startswith("trackers[0].name:")


# -- checks before anything runs -------------------------------------------------------------
def test_tracker_problems_unknown_duplicate_and_bad_params():
    config = build_config(
        {
            "trackers": [
                "tensorbord",
                "tensorboard",
                "tensorboard",
                {"name": "mlflow", "params": {"tracking_url": "x"}},
                {"name": "wandb", "params": {"mode": "sometimes"}},
            ]
        }
    )
    problems = tracker_problems(config, get_registry())
    assert problems[0].startswith("trackers[0]: unknown tracker 'tensorbord'")
    assert "tensorboard" in problems[0]  # the candidate
    assert problems[1] == "trackers[2]: 'tensorboard' is selected twice; list it once"
    assert problems[2].startswith("trackers[3].params.tracking_url: unknown field (allowed: ")
    assert problems[3].startswith("trackers[4].params.mode:")
    assert len(problems) == 4
    with pytest.raises(ConfigError) as error:
        resolve_config(config, get_registry())
    assert "trackers[0]: unknown tracker" in str(error.value)


def test_missing_library_is_one_line_naming_the_extra(block):
    block("wandb")
    assert missing_modules(["wandb", "json"]) == ["wandb"]
    config = build_config({"trackers": ["tensorboard", "wandb"]})
    assert tracker_problems(config, get_registry()) == [
        "trackers: 'wandb' needs the wandb package: pip install 'shrinkbench-core[wandb]'"
    ]
    with pytest.raises(ConfigError):
        tracker_plugins(config, get_registry())


def test_missing_library_stops_the_cli_before_anything_runs(block, tmp_path, capsys):
    block("mlflow")
    output = tmp_path / "results"
    code = cli.run_main(["--quiet", "--output", str(output), "-p", "trackers=[tensorboard,mlflow]"])
    err = capsys.readouterr().err
    assert code == 2
    assert "trackers: 'mlflow' needs the mlflow package: pip install " in err
    assert "'shrinkbench-core[mlflow]'" in err
    assert "Traceback" not in err
    assert not output.exists()


def test_a_module_set_to_none_counts_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert missing_modules(["tensorboard"]) == ["tensorboard"]


# -- building the plugin objects ------------------------------------------------------------------
def test_tracker_plugins_builds_parameterized_objects():
    config = build_config(
        {"trackers": [{"name": "mlflow", "params": {"experiment_name": "e"}}, "tensorboard"]}
    )
    plugins = tracker_plugins(config, get_registry())
    assert [name for name, _ in plugins] == ["tracker:mlflow", "tracker:tensorboard"]
    assert all(isinstance(plugin, Tracker) for _, plugin in plugins)
    assert plugins[0][1].params.experiment_name == "e"
    assert plugins[1][1].params.flush_secs == 30  # the default filled in
    assert tracker_plugins(build_config({}), get_registry()) == []


def test_building_trackers_does_not_import_their_libraries():
    code = textwrap.dedent(
        """
        import sys
        from shrinkbench_core.config import build_config
        from shrinkbench_core.registry import get_registry
        from shrinkbench_core.trackers import tracker_plugins
        plugins = tracker_plugins(
            build_config({"trackers": ["tensorboard", "mlflow", "wandb"]}), get_registry()
        )
        assert len(plugins) == 3
        print(sorted(m for m in ("wandb", "mlflow", "tensorboard") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


# -- the README's lifecycle example ---------------------------------------------------------------
def test_readme_lifecycle_plugin_example(tmp_path):
    import re
    import types
    from pathlib import Path

    from shrinkbench_core.lifecycle import RunEvents, RunInfo
    from shrinkbench_core.plugins import make_plugin_manager

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    source = re.search(r"<!-- lifecycle-example -->\n```python\n(.*?)```", readme, re.S)[1]
    module = types.ModuleType("readme_lifecycle_example")
    exec(compile(source, "README.md", "exec"), module.__dict__)
    manager = make_plugin_manager(load_entry_points=False, extra_plugins=[("example", module)])
    assert manager.infos["example"].hooks == ["shrinkbench_epoch_end"]
    run = RunInfo(path=tmp_path, name="run", digest="d", config={})
    events = RunEvents(manager, run)
    for stage, epoch, val_acc in [
        ("dense", 1, 0.5),
        ("dense", 2, 0.75),
        ("dense", 3, 0.6),
        ("finetune", 1, 0.7),
        ("finetune", 2, None),
    ]:
        logs = {"epoch": epoch, "train_loss": 1.0, "val_acc": val_acc}
        events.emit("shrinkbench_epoch_end", stage=stage, epoch=epoch, logs=logs)
    assert not events.failed
    assert json.loads((tmp_path / "best_val_acc.json").read_text()) == {
        "dense": 0.75,
        "finetune": 0.7,
    }

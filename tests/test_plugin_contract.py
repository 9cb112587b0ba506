"""The plugin contract at its edges, and how plugin selection and listings speak to the user.

Real pluggy managers and real entry points of fake distributions (``fake_dists``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from shrinkbench_core.cli import main, run_main
from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment.resolve import validate_experiment
from shrinkbench_core.plugins import PluginSelection, make_plugin_manager
from shrinkbench_core.registry import Registry, get_registry, reset_registry
from shrinkbench_core.specs import StrategySpec


def registry() -> Registry:
    return Registry(make_plugin_manager(PluginSelection.from_environment()))


def plugin_error(reg: Registry, name: str) -> str:
    info = {p["name"]: p for p in reg.plugins()}[name]
    assert info["status"] == "error", info
    return info["error"]


# -- 4. contract gaps -------------------------------------------------------------------
def test_needs_gradients_implies_needs_data():
    spec = StrategySpec(name="G", summary="s", factory="m:G", scope="global", needs_gradients=True)
    assert spec.needs_data is True


@pytest.mark.parametrize("form", ["spec", "dict"])
def test_needs_gradients_without_data_is_refused_at_registration(form, fake_dists):
    fields = 'name="G", summary="s", factory="m:G", scope="global", needs_gradients=True, ' \
             "needs_data=False"
    item = f"StrategySpec({fields})" if form == "spec" else f"dict({fields})"
    fake_dists.add("sb-grad", "sb_grad", f"""
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec

@hookimpl
def shrinkbench_register_strategies():
    return [{item}]
""")
    error = plugin_error(registry(), "sb-grad")
    assert "needs_gradients=True needs needs_data=True" in error and "\n" not in error


@pytest.mark.parametrize("form", ["spec", "dict"])
def test_an_invalid_spec_is_one_clean_line_in_either_form(form, fake_dists, capsys):
    fields = 'name="Bad", summary="s", factory="m:Bad", scope="sideways"'
    item = f"StrategySpec({fields})" if form == "spec" else f"dict({fields})"
    fake_dists.add("sb-bad", "sb_bad", f"""
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec

@hookimpl
def shrinkbench_register_strategies():
    return [{item}]
""")
    error = plugin_error(registry(), "sb-bad")
    assert "\n" not in error and "pydantic" not in error, error
    assert "scope: Input should be 'global' or 'layerwise'" in error
    warnings = [line for line in capsys.readouterr().err.splitlines() if "sb-bad" in line]
    assert len(warnings) == 1


STRATEGY_WITH_PARAMETERS = """
from pydantic import BaseModel
from shrinkbench_core.pruning import Strategy

class ClassParams(BaseModel):
    norm: str = "l1"

class SpecParams(BaseModel):
    scale: float = 1.0

class Mine(Strategy):
    Parameters = ClassParams

    def model_masks(self):
        return self.keep_top({n: p.abs() for n, p in self.params().items()})
"""


def install_strategy(fake_dists, parameters: str) -> None:
    (fake_dists.root / "sb_params_impl.py").write_text(STRATEGY_WITH_PARAMETERS)
    fake_dists.modules.append("sb_params_impl")
    fake_dists.add("sb-params", "sb_params", f"""
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec
from sb_params_impl import {parameters}

@hookimpl
def shrinkbench_register_strategies():
    return [StrategySpec(name="Mine", summary="s", factory="sb_params_impl:Mine",
                         scope="global", parameters={parameters})]
""")


def test_spec_parameters_that_are_not_the_class_parameters_stop_before_the_run(
    fake_dists, tmp_path, capsys
):
    install_strategy(fake_dists, "SpecParams")
    code = run_main(["--strategy", "Mine", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out").exists()
    assert (
        "strategy.name: sb_params_impl:Mine (plugin sb-params): the spec's parameters "
        "(SpecParams) are not the class's Parameters (ClassParams)" in err
    )


def test_spec_parameters_equal_to_the_class_parameters_pass(fake_dists):
    install_strategy(fake_dists, "ClassParams")
    resolved = validate_experiment({"strategy": {"name": "Mine"}}, get_registry())
    assert resolved.config.strategy.params == {"norm": "l1"}


def test_a_broken_plugin_is_named_in_the_run_error(fake_dists, tmp_path, capsys):
    fake_dists.add("sb-broken", "sb_broken", "import not_a_module_anywhere\n")
    code = run_main(["--strategy", "MyMissing", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "strategy.name: unknown strategy 'MyMissing'" in err
    assert "plugin 'sb-broken' is broken and may provide it: ModuleNotFoundError" in err


# -- 4. metric parameters ----------------------------------------------------------------
def test_metric_parameters_from_a_file_are_validated_and_kept(tmp_path):
    resolved = validate_experiment(
        {"metrics": ["size", {"name": "latency", "params": {"repeats": 3, "warmup": 0}}]},
        get_registry(),
    )
    assert resolved.config.metric_params() == {"size": {}, "latency": {"repeats": 3, "warmup": 0}}
    recorded = resolved.config.model_dump(mode="json")["metrics"]
    assert recorded == ["size", {"name": "latency", "params": {"repeats": 3, "warmup": 0}}]


@pytest.mark.parametrize(
    "metrics, expected",
    [
        ([{"name": "latency", "params": {"repeats": 0}}], "metrics[0].params.repeats: Input"),
        ([{"name": "size", "params": {"x": 1}}], "metrics[0].params.x: unknown field (allowed:"),
        ([{"params": {}}], "metrics[0].name: Field required"),
    ],
)
def test_invalid_metric_parameters_are_reported(metrics, expected):
    with pytest.raises(ConfigError) as caught:
        validate_experiment({"metrics": metrics}, get_registry())
    assert any(line.startswith(expected) for line in caught.value.problems), caught.value


def test_metric_parameters_from_the_command_line(tmp_path):
    from shrinkbench_core.cli import build_parser, resolved_experiment_from_args

    args = build_parser().parse_args(
        ["run", "-p", "metrics.latency.repeats=4", "-p", "metrics.flops.params.per_layer=false"]
    )
    params = resolved_experiment_from_args(args).config.metric_params()
    assert params["latency"] == {"repeats": 4} and params["flops"] == {"per_layer": False}


METRIC_PLUGIN = """
from pydantic import BaseModel
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import MetricSpec

class EchoParams(BaseModel):
    factor: int = 1
    split: str = "test"

class PlainParams(BaseModel):
    factor: int = 1

def echo(context, params):
    return params.model_dump()

@hookimpl
def shrinkbench_register_metrics():
    return [MetricSpec(name="echo", summary="s", factory="sb_metric:echo", unit="x",
                       parameters=EchoParams),
            MetricSpec(name="plain", summary="s", factory="sb_metric:echo", unit="x",
                       parameters=PlainParams)]
"""


def test_the_evaluation_passes_each_metric_its_parameters(fake_dists):
    from shrinkbench_core.experiment.evaluation import evaluate_stage
    from shrinkbench_core.metrics import MetricContext

    fake_dists.add("sb-metric", "sb_metric", METRIC_PLUGIN)
    resolved = validate_experiment(
        {"metrics": [{"name": "echo", "params": {"factor": 3}}, {"name": "plain"}]},
        get_registry(),
    )
    context = MetricContext(
        model=torch.nn.Linear(2, 2), example_input=torch.zeros(1, 2),
        device=torch.device("cpu"), loaders={"test": [], "validation": []},
    )  # fmt: skip
    results = evaluate_stage(context, resolved.metrics, params=resolved.config.metric_params())
    assert results["echo"] == {
        "test_factor": 3, "test_split": "test", "validation_factor": 3,
        "validation_split": "validation",
    }  # fmt: skip
    assert results["plain"] == {"factor": 1}


# -- 5. plugin selection -------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["SHRINKBENCH_LOAD_PLUGINS", "SHRINKBENCH_DISABLE_PLUGINS"])
def test_a_selected_plugin_that_is_not_installed_is_warned(variable, monkeypatch, capsys):
    monkeypatch.setenv(variable, "nosuch")
    registry()
    err = capsys.readouterr().err
    assert f"{variable} names 'nosuch', which is not an installed plugin" in err
    assert "shrinkbench-strategies" in err  # what is installed


def test_no_strategy_plugin_loaded_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SHRINKBENCH_LOAD_PLUGINS", "")
    code = run_main(["--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown strategy 'GlobalMagWeight'. No loaded plugin registers any strategies." in err
    assert "The project's own are in shrinkbench-strategies (pip install it)." in err
    assert "not loaded because of SHRINKBENCH_LOAD_PLUGINS=: " in err
    assert "shrinkbench-strategies" in err


def test_an_empty_listing_names_the_plugins_the_environment_kept_out(monkeypatch, capsys):
    monkeypatch.setenv("SHRINKBENCH_LOAD_PLUGINS", "shrinkbench-cifar")
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert "no strategies registered" in out
    assert "not loaded because of SHRINKBENCH_LOAD_PLUGINS=shrinkbench-cifar: " in out
    assert "shrinkbench-strategies" in out


def test_a_disabled_plugin_is_named_when_its_component_is_asked_for(monkeypatch, capsys):
    monkeypatch.setenv("SHRINKBENCH_DISABLE_PLUGINS", "shrinkbench-cifar")
    code = run_main(["--dataset", "cifar10"])
    err = capsys.readouterr().err
    assert code == 2
    assert "not loaded because of SHRINKBENCH_DISABLE_PLUGINS=shrinkbench-cifar" in err


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["--strategy", "GlobalMagWeigt"], "Did you mean: GlobalMagWeight"),
        (["-p", "metrics=[sizes]"], "Did you mean: size?"),
        (["-p", "metrics=[zzz]"], "Available: accuracy, flops, latency"),
    ],
)
def test_an_unknown_name_lists_candidates_and_points_to_list(argv, hint, capsys):
    code = run_main(argv)
    err = capsys.readouterr().err
    assert code == 2 and hint in err and "Run `shrinkbench list " in err, err


# -- 13. small ones ----------------------------------------------------------------------
@pytest.mark.parametrize("n, m", [(2, 4), (1, 8)])
def test_an_nm_run_is_named_by_its_pattern(n, m):
    from shrinkbench_core.experiment.naming import run_name

    resolved = validate_experiment(
        {"strategy": {"name": "NMMagnitude", "params": {"n": n, "m": m}}, "compression": 4},
        get_registry(),
    )
    name = run_name(resolved)
    assert f"-NMMagnitude-{n}of{m}-s0-" in name and "-c4-" not in name


def test_list_is_not_cut_when_piped(capsys):
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    for spec in get_registry().specs("strategies"):
        assert spec.summary in out


@pytest.mark.parametrize("columns", [80, 120, 400])
def test_list_fits_the_terminal(columns, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["list", "strategies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    widest = max(len(line) for line in lines)
    longest_summary = max(len(s.summary) for s in get_registry().specs("strategies"))
    if columns == 400:
        assert "…" not in "\n".join(lines) and widest > 120
    else:
        assert widest <= columns
        assert widest > columns - 10  # the room is used, not a fixed 60 characters
    assert longest_summary > 60


def test_dry_run_columns_line_up(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(
        'compressions = [2, 16]\nseeds = [0, 10]\n[[strategies]]\nname = "GlobalMagWeight"\n'
        '[[strategies]]\nname = "RandomPruning"\n'
    )
    assert main(["sweep", str(path), "--dry-run", "--output", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == 8
    for marker in (" c=", " seed=", " [to run]", " digits-mlp-"):
        assert len({line.index(marker) for line in lines}) == 1, (marker, lines)


SHIPPED = (
    "shrinkbench-core",
    "shrinkbench-strategies",
    "shrinkbench-cifar",
    "shrinkbench-imagenet",
)


@pytest.mark.parametrize("kind", ["strategies", "datasets", "models", "metrics", "schedules"])
def test_every_shipped_component_keeps_the_contract(kind):
    from shrinkbench_core.factories import factory_problem

    specs = [s for s in get_registry().specs(kind) if s.distribution in SHIPPED]
    assert specs
    assert {s.name: factory_problem(s) for s in specs if factory_problem(s)} == {}


@pytest.mark.slow
def test_an_nm_run_on_the_cli_warns_in_one_line_and_is_named_by_the_pattern(tmp_path):
    argv = ["shrinkbench-run", "--strategy", "NMMagnitude", "--compression", "4", "--quiet",
            "--output", str(tmp_path), "-p", "dense.epochs=0", "-p", "finetune.epochs=0",
            "-p", "metrics=[size]", "-p", "model.hidden_sizes=[16]"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "N:M" in line]
    assert warnings and all(w.startswith("shrinkbench: warning: N:M 2:4 reaches") for w in warnings)
    assert "UserWarning" not in result.stderr and "warn(" not in result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert "-NMMagnitude-2of4-s0-" in run.name


def test_plugins_check_reports_every_broken_factory(fake_dists, monkeypatch, capsys):
    (fake_dists.root / "sb_half_impl.py").write_text("import not_installed_dependency_xyz\n")
    fake_dists.modules.append("sb_half_impl")
    fake_dists.add("sb-half", "sb_half", """
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import MetricSpec, StrategySpec

@hookimpl
def shrinkbench_register_strategies():
    return [StrategySpec(name="Fine", summary="s", scope="global",
                         factory="shrinkbench_strategies.magnitude:GlobalMagWeight"),
            StrategySpec(name="Half", summary="s", scope="global", factory="sb_half_impl:X")]

@hookimpl
def shrinkbench_register_metrics():
    return [MetricSpec(name="halfmetric", summary="s", unit="x", factory="sb_half_impl:m")]
""")
    monkeypatch.setenv("SHRINKBENCH_LOAD_PLUGINS", "sb-half")
    assert main(["plugins", "--check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    problem = "cannot import sb_half_impl (plugin sb-half): No module named"
    assert [line.split(":")[0] for line in lines[:-1]] == ["strategy Half", "metric halfmetric"]
    assert all(problem in line for line in lines[:-1])
    assert lines[-1].endswith("components checked, 2 problem(s)")
    monkeypatch.setenv("SHRINKBENCH_LOAD_PLUGINS", "shrinkbench-strategies")
    reset_registry()
    assert main(["plugins", "--check"]) == 0

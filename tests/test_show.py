"""``shrinkbench show`` (runs and components), ``shrinkbench-run --print-config`` and
``--version`` (issue 15, point 4)."""

from __future__ import annotations

import json

import pytest

import shrinkbench_core as sb
from shrinkbench_core import __version__
from shrinkbench_core.cli import main, run_main
from shrinkbench_core.config import ExperimentConfig

TINY = {"dense": {"epochs": 1}, "finetune": {"epochs": 2}, "metrics": ["size", "accuracy"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output = tmp_path_factory.mktemp("show-runs")
    return sb.run(TINY, compression=4, model={"name": "mlp", "hidden_sizes": [32]},
                  output=str(output), quiet=True)


def test_show_run_directory(run, capsys):
    assert main(["show", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {run.path}\nstatus: complete\nconfig:\n")
    assert '  model.params.hidden_sizes = [32]' in text
    assert '  finetune.epochs = 2' in text and '  dense.source = "train"' in text
    assert "(seeds used: init=0, data_order=1, augmentation=2, pruning=3)" in text
    for stage in ("dense", "pruned", "fine-tuned"):
        assert f"\n  {stage} " in text
    assert "per-layer sparsity:" in text and "features.1.weight  32x64" in text
    assert "(all masked)" in text
    assert "training:\n  finetune: 2 epochs, train loss " in text
    assert "validation top-1 last" in text


def test_show_run_json_matches_the_files(run, capsys):
    assert main(["show", str(run.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metrics"] == json.loads((run.path / "metrics.json").read_text())
    assert [row["parameter"] for row in info["masks"]] == ["features.1.weight"]
    assert len(info["logs"]) == 2 and info["status"]["status"] == "complete"


def test_show_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing")]) == 2
    assert "is not a run directory, nor one of: strategy" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert main(["show", "strategy"]) == 2
    assert "`show strategy` needs a NAME" in capsys.readouterr().err
    assert main(["show", "widget", "X"]) == 2
    assert "unknown kind 'widget'; choose one of: datasets, metrics" in capsys.readouterr().err
    assert main(["show", "strategy", "GlobalMagWieght"]) == 2
    assert "Did you mean: GlobalMagWeight" in capsys.readouterr().err


def test_show_strategy_lists_every_parameter_untruncated(capsys):
    assert main(["show", "strategy", "Wanda"]) == 0
    text = capsys.readouterr().out
    spec = sb.get_strategy("Wanda")
    assert text.startswith("strategy Wanda\n  summary:")
    assert "  reference:" in text and "Sun et al. 2023" in text
    for name, field in spec.Parameters.model_fields.items():
        assert f"\n  {name}: " in text
        if field.description:
            assert f"      {field.description}\n" in text + "\n"  # whole, never cut


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("schedule", "iterative", ["reference:        Frankle & Carbin 2019",
                                   "rounds: int, default 3"]),
        ("dataset", "digits", ["input shape:      1, 8, 8", "num classes:      10",
                               "validation_size: int, default 180"]),
        ("model", "mlp", ["classifier:       classifier",
                          "hidden_sizes: tuple[int, ...], default (1024, 1024)"]),
        ("metric", "latency", ["unit:             ms", "higher is better: no",
                               "warmup: int, default 3"]),
    ],
)
def test_show_other_kinds(capsys, kind, name, expected):
    assert main(["show", kind, name]) == 0
    text = capsys.readouterr().out
    for line in expected:
        assert line in text


def test_show_component_json(capsys):
    assert main(["show", "strategies", "GlobalChannelNorm", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["structure"] == "channel" and info["scope"] == "global"
    norm = next(row for row in info["parameters"] if row["name"] == "norm")
    assert norm == {"name": "norm", "type": "Literal['l1', 'l2']", "required": False,
                    "default": "l1", "description": "Norm scoring each output channel."}
    names = [row["name"] for row in info["parameters"]]
    assert names == list(sb.get_strategy("GlobalChannelNorm").Parameters.model_fields)


def test_print_config_resolves_everything_and_runs_nothing(tmp_path, capsys):
    code = run_main(["--print-config", "--strategy", "LayerMagWeight", "-p", "seed=3",
                     "-p", "schedule.kind=iterative", "--output", str(tmp_path)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    config = printed["config"]
    assert config["strategy"] == {"name": "LayerMagWeight", "params": {}}
    assert config["dataset"]["params"]["validation_size"] == 180  # component defaults filled
    assert config["dense"]["source"] == "train" and config["schedule"]["kind"] == "iterative"
    assert config["prunable"]["exclude_classifier"] is True
    assert printed["derived"]["seeds"] == {"init": 3, "data_order": 4, "augmentation": 5,
                                           "pruning": 6}
    assert printed["derived"]["digest"] == ExperimentConfig.model_validate(config).digest()
    assert printed["derived"]["run_dir"].startswith(str(tmp_path / "runs" / "digits-mlp-"))
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_print_config_reports_invalid_fields(capsys):
    assert run_main(["--print-config", "-p", "compression=0.5"]) == 2
    assert "compression: must be >= 1" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        run_main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"shrinkbench-run {__version__}"

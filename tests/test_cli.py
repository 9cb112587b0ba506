"""The `shrinkbench` CLI: plugin and component listings, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shrinkbench_core.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["shrinkbench", *args], capture_output=True, text=True, timeout=120)


def test_plugins_json_lists_the_three_plugins_and_builtin():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert {
        "builtin",
        "shrinkbench-strategies",
        "shrinkbench-cifar",
        "shrinkbench-imagenet",
    } <= set(plugins)
    for plugin in plugins.values():
        assert plugin["status"] == "ok", plugin
        assert set(plugin) == {"name", "distribution", "version", "status", "hooks", "error"}
    assert plugins["shrinkbench-strategies"]["hooks"] == ["shrinkbench_register_strategies"]


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "shrinkbench-cifar" in out and "status" in out


def test_list_strategies_json_has_parameters_with_defaults(capsys):
    assert main(["list", "strategies", "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert {"GlobalMagWeight", "LayerMagWeight", "RandomPruning"} <= set(listed)
    channel = listed["GlobalChannelNorm"]
    assert channel["parameters"]["norm"]["default"] == "l1"
    assert channel["plugin"] == "shrinkbench-strategies" and channel["summary"]
    assert channel["kind"] == "strategy" and channel["scope"] == "global"


def test_list_with_shell_pattern(capsys):
    assert main(["list", "strategies", "Layer*", "--json"]) == 0
    names = [s["name"] for s in json.loads(capsys.readouterr().out)]
    assert names and all(n.startswith("Layer") for n in names)
    assert main(["list", "datasets", "dig?ts"]) == 0
    assert "digits" in capsys.readouterr().out


def test_list_metrics_declares_unit_and_direction(capsys):
    assert main(["list", "metrics", "--json"]) == 0
    metrics = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"size", "flops", "accuracy", "latency", "memory"} <= set(metrics)
    assert metrics["accuracy"]["higher_is_better"] is True
    assert metrics["latency"]["higher_is_better"] is False
    assert all(m["unit"] for m in metrics.values())


@pytest.mark.parametrize(
    "argv", [["--help"], ["list", "strategies"], ["list", "models", "--json"], ["plugins"]]
)
def test_listing_and_help_do_not_import_torch(argv):
    code = (
        "import sys\nfrom shrinkbench_core.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'TORCH_FREE', file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert "TORCH_FREE" in result.stderr, result.stderr[-2000:]


def test_unknown_kind_is_an_argparse_error():
    result = run_cli("list", "widgets")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_help_does_not_need_torch():
    result = subprocess.run(
        ["shrinkbench-run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--strategy" in result.stdout

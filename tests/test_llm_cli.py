"""The LM plugin through the real CLI: one tiny end-to-end run, bad input, lazy listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("shrinkbench_llm")

TINY = [
    "--dataset", "tinyshakespeare", "--model", "tiny-gpt",
    "-p", "dataset.seqlen=32", "-p", "dataset.train_tokens=4096",
    "-p", "model.layers=2", "-p", "model.width=32", "-p", "model.heads=2",
    "-p", "model.max_positions=32", "-p", "calibration.samples=16", "-p", "dataset.batch_size=16",
    "-p", "metrics=[size,perplexity]", "-p", "device=cpu",
]  # fmt: skip
# The issue's command: dense training and fine-tuning come from tiny-gpt's config_defaults.
BRIEF = ["--strategy", "SparseGPT", "--compression", "2", "--dataset", "tinyshakespeare",
         "--model", "tiny-gpt", "-p", "metrics=[size,perplexity]"]  # fmt: skip


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["shrinkbench-run", "--quiet", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def print_config(capsys, *args: str) -> dict:
    from shrinkbench_core.cli import run_main

    assert run_main([*args, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_issue_command_uses_tiny_gpt_defaults(capsys):
    printed = print_config(capsys, *BRIEF)
    config = printed["config"]
    assert config["dense"]["epochs"] == 1 and config["finetune"]["epochs"] == 0
    assert config["dense"]["optimizer"]["name"] == "adamw"
    assert config["dataset"]["batch_size"] == 32 and config["metrics"] == ["size", "perplexity"]
    assert printed["derived"]["component_defaults"]["dense.optimizer.lr"] == 0.01
    assert "metrics" not in printed["derived"]["component_defaults"]  # the user set them
    # what the user sets wins over the model's defaults
    config = print_config(capsys, *BRIEF, "-p", "finetune.epochs=2", "-p", "dataset.batch_size=8")
    config = config["config"]
    assert config["finetune"]["epochs"] == 2 and config["dataset"]["batch_size"] == 8


@pytest.mark.slow
def test_sparsegpt_end_to_end_records_perplexity_and_sparsity(tmp_path):
    # the issue's command, made tiny; dense.* and finetune.* are tiny-gpt's defaults
    result = run(*BRIEF, *TINY, "--output", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "out" / "runs").glob("*")
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["dense"]["optimizer"]["name"] == "adamw" and config["finetune"]["epochs"] == 0
    assert config["strategy"]["params"]["samples"] == config["calibration"]["samples"] == 16
    metrics = json.loads((run_dir / "metrics.json").read_text())
    dense = metrics["dense"]["perplexity"]
    pruned = metrics["pruned"]["perplexity"]
    assert dense["test_seqlen"] == 32 and dense["test_tokenizer"]["kind"] == "char"
    assert 1 < dense["test_perplexity"] < 65  # better than uniform over 65 characters
    assert pruned["test_perplexity"] != dense["test_perplexity"]
    assert metrics["compression"]["achieved"] == pytest.approx(2.0, rel=1e-3)
    size = metrics["pruned"]["size"]
    # embeddings and the LM head stay dense, so the linear layers lose more than half
    fixed = size["total_parameters"] - size["prunable_parameters"]
    expected = 1 - (round(size["total_parameters"] / 2) - fixed) / size["prunable_parameters"]
    assert size["pruned_fraction"] == pytest.approx(expected) and expected > 0.5
    # results table: LM sparsity beside compression, perplexity per stage
    table = subprocess.run(["shrinkbench", "results", "out", "--format", "json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    (row,) = json.loads(table.stdout)
    assert row["sparsity"] == pytest.approx(size["pruned_fraction"])
    assert row["pruned_perplexity"] == pytest.approx(pruned["test_perplexity"])
    assert row["dense_perplexity"] == pytest.approx(dense["test_perplexity"])
    shown = subprocess.run(["shrinkbench", "results", "out"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120).stdout  # fmt: skip
    assert "sparsity" in shown and "pruned_perplexity" in shown
    plot = subprocess.run(
        ["shrinkbench", "plot", "out", "--x", "sparsity", "--y", "perplexity", "--stage",
         "pruned", "--out", "ppl.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "ppl.png").stat().st_size > 1000


def test_bad_input_is_one_screen_exit_2_before_anything_runs(tmp_path):
    args = [a.replace("model.max_positions=32", "model.max_positions=16") for a in TINY]
    result = run("--strategy", "WandaLM", *args, "--output", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "max_positions 16" in result.stderr
    assert not list((tmp_path / "out").glob("runs/*/metrics.json"))
    result = run("--strategy", "WandaLM", *TINY, "-p", "strategy.nm=2:5", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "multiple of m=5" in result.stderr


def test_listing_imports_neither_torch_modules_of_the_plugin_nor_transformers():
    code = (
        "import sys, shrinkbench_llm\n"
        "specs = shrinkbench_llm.shrinkbench_register_strategies()\n"
        "bad = [m for m in sys.modules if m.startswith(('transformers', 'datasets', "
        "'shrinkbench_llm.strategies', 'shrinkbench_llm.models'))]\n"
        "print(len(specs), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4 []"

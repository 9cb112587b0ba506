"""The results table (``shrinkbench results``) and tradeoff plots (``shrinkbench plot``).

Run directories are written in the runner's layout (config.json, status.json,
metrics.json) with known numbers, so every cell and every plotted point can be
checked exactly; tests/test_sweep.py checks both commands on a real sweep.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shrinkbench_core.cli import main
from shrinkbench_core.errors import UserError
from shrinkbench_core.plot import dense_reference, plot_tradeoff, save_figure, tradeoff_points
from shrinkbench_core.results import COLUMNS, load_results


def stage(top1: float, top5: float, compression: float = 1.0, speedup: float = 1.0,
          latency_ms: float | None = 0.5) -> dict:
    out = {
        "size": {"compression_ratio": compression, "total_parameters": 1000},
        "flops": {"theoretical_speedup": speedup, "macs": 900.0},
        "accuracy": {"test_top1": top1, "test_top5": top5, "validation_top1": top1 + 0.01},
    }
    if latency_ms is not None:
        out["latency"] = {"median_ms": latency_ms, "batch_size": 8}
    return out


def write_run(
    root: Path,
    strategy: str,
    compression: float,
    seed: int,
    finetuned: float = 0.8,
    dense: float = 0.9,
    bestval: float | None = 0.82,
    status: str = "complete",
    dataset: str = "digits",
    model: str = "mlp",
    strategy_params: dict | None = None,
    error: str | None = None,
    schedule: dict | None = None,
) -> Path:
    """A run directory as the runner writes it."""
    key = repr((strategy_params, dataset, model, schedule))
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    path = root / "runs" / f"{dataset}-{model}-{strategy}-c{compression:g}-s{seed}-{digest}"
    path.mkdir(parents=True)
    config = {
        "strategy": {"name": strategy, "params": strategy_params or {}},
        "compression": compression,
        "dataset": {"name": dataset, "params": {"validation_size": 180}, "batch_size": 64},
        "model": {"name": model, "params": {"hidden_sizes": [64, 64], "checkpoint": None}},
        "seed": seed,
    }
    if schedule is not None:
        config["schedule"] = schedule
    (path / "config.json").write_text(json.dumps({"digest": "d" * 64, "config": config}))
    (path / "status.json").write_text(json.dumps({"status": status, **({"error": error} if error
                                                                        else {})}))
    if status != "complete":
        return path
    metrics = {
        "digest": "d" * 64,
        "compression": {"requested": compression, "achieved": compression * 1.001},
        "theoretical_speedup": compression * 1.2,
        "dense": stage(dense, 0.99),
        "pruned": stage(finetuned - 0.2, 0.9, compression * 1.001, compression * 1.2),
        "finetuned": stage(finetuned, 0.95, compression * 1.001, compression * 1.2, 0.4),
        "epochs": 3,
    }
    # the fine-tuned model timed in turns with the dense one (the dense stage's 0.5 ms alone)
    metrics["finetuned"]["latency"].update(
        dense_median_ms=0.6, measured_speedup=1.5, measured_speedup_reliable=True
    )
    if bestval is not None:
        metrics["best_validation"] = {"epoch": 2, "accuracy": {"test_top1": bestval,
                                                               "test_top5": 0.97}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.fixture
def study(tmp_path) -> Path:
    """2 strategies x 2 compressions x 2 seeds on digits/mlp, one failed and one running run."""
    root = tmp_path / "study"
    for strategy, base in (("GlobalMagWeight", 0.8), ("RandomPruning", 0.6)):
        for compression in (2, 8):
            for seed in (0, 1):
                write_run(root, strategy, compression, seed,
                          finetuned=base - 0.1 * (compression == 8) + 0.02 * seed,
                          dense=0.9 + 0.02 * seed)
    write_run(root, "GlobalMagWeight", 64, 0, status="failed",
              error="CompressionError: largest reachable compression is 40")
    write_run(root, "GlobalMagWeight", 32, 0, status="running")
    return root


# -- results ----------------------------------------------------------------------
def test_one_row_per_run_with_every_column(study):
    table = load_results(study)
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 10
    assert table["status"].value_counts().to_dict() == {"complete": 8, "failed": 1, "running": 1}
    row = table[(table["strategy"] == "RandomPruning") & (table["compression"] == 8)
                & (table["seed"] == 1)].iloc[0]
    assert row["finetuned_top1"] == pytest.approx(0.52)
    assert row["bestval_top1"] == 0.82 and row["bestval_epoch"] == 2
    assert row["dense_top1"] == pytest.approx(0.92) and row["dense_top5"] == 0.99
    assert row["pruned_top1"] == pytest.approx(0.32)
    assert row["compression_achieved"] == pytest.approx(8.008)
    assert row["theoretical_speedup"] == pytest.approx(9.6)
    # both latencies and their ratio from the same paired timing, not the dense stage's 0.5 ms
    assert row["latency_ms"] == 0.4 and row["dense_latency_ms"] == 0.6
    assert row["measured_speedup"] == 1.5 and row["latency_batch_size"] == 8
    assert row["model_params"] == "hidden_sizes=[64,64]"  # unset (None) parameters left out
    assert Path(row["path"]).is_dir()
    failed = table[table["status"] == "failed"].iloc[0]
    assert failed["compression"] == 64 and "largest reachable" in failed["error"]
    assert pd.isna(failed["finetuned_top1"])
    # sorted by strategy, then compression, then seed
    complete = table[table["status"] == "complete"]
    assert complete["compression"].tolist() == [2, 2, 8, 8] * 2


def test_missing_keys_and_broken_files_give_empty_cells(tmp_path):
    root = tmp_path / "odd"
    path = write_run(root, "LayerMagWeight", 4, 0, bestval=None)
    metrics = json.loads((path / "metrics.json").read_text())
    for key in ("flops", "latency"):
        metrics["finetuned"].pop(key)
    del metrics["theoretical_speedup"], metrics["dense"]["accuracy"]["test_top5"]
    (path / "metrics.json").write_text(json.dumps(metrics))
    broken = write_run(root, "RandomPruning", 4, 0, status="interrupted")
    (broken / "config.json").write_text("{not json")
    bare = root / "runs" / "never-started"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"config": {"seed": 3}}))
    table = load_results(root).set_index("strategy", drop=False)
    row = table.loc["LayerMagWeight"]
    assert pd.isna(row["theoretical_speedup"]) and pd.isna(row["latency_ms"])
    assert pd.isna(row["bestval_top1"]) and pd.isna(row["dense_top5"])
    assert row["finetuned_top1"] == 0.8
    assert sorted(table["status"]) == ["complete", "damaged", "not started"]
    damaged = table[table["status"] == "damaged"].iloc[0]
    assert "config.json is not valid JSON" in damaged["error"] and "--force" in damaged["error"]


def test_a_single_run_directory_and_an_empty_folder(tmp_path):
    path = write_run(tmp_path / "one", "RandomPruning", 2, 0)
    assert len(load_results(path)) == 1
    (tmp_path / "empty").mkdir()
    empty = load_results(tmp_path / "empty")
    assert empty.empty and list(empty.columns) == list(COLUMNS)
    with pytest.raises(UserError, match="results directory not found"):
        load_results(tmp_path / "nowhere")


def test_results_formats(study, capsys):
    assert main(["results", str(study), "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert csv.shape == (10, len(COLUMNS))
    pd.testing.assert_series_equal(csv["finetuned_top1"], load_results(study)["finetuned_top1"])

    assert main(["results", str(study), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 10 and records[0]["strategy"] == "GlobalMagWeight"
    failed = next(r for r in records if r["status"] == "failed")
    assert failed["finetuned_top1"] is None and failed["seed"] == 0

    assert main(["results", str(study), "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| dataset | model | strategy |") and lines[1].startswith("|---|")
    table, failed = lines[:11], lines[11:]  # the failed run is listed apart, with its error
    assert all(line.count(" | ") == len(COLUMNS) - 1 for line in table[2:])
    assert failed[0] == "" and failed[1] == "failed runs (1):"
    assert "largest reachable compression is 40" in failed[2]

    assert main(["results", str(study), "--status", "complete"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 8 and "requested" in table[0] and "speedup" in table[0]

    assert main(["results", str(study / "missing")]) == 2
    assert "results directory not found" in capsys.readouterr().err


# -- plots ------------------------------------------------------------------------
def test_points_are_mean_and_std_over_seeds(study):
    points = tradeoff_points(load_results(study)).set_index(["series", "compression"])
    assert len(points) == 4  # failed and running runs are not drawn
    random_8 = points.loc[("RandomPruning", 8)]
    assert random_8["mean"] == pytest.approx(0.51)
    assert random_8["std"] == pytest.approx(pd.Series([0.5, 0.52]).std())
    assert random_8["seeds"] == 2 and random_8["x"] == pytest.approx(8.008)
    speed = tradeoff_points(load_results(study), x="speedup", metric="top5")
    assert speed["x"].max() == pytest.approx(9.6) and speed["mean"].eq(0.95).all()
    best = tradeoff_points(load_results(study), stage="bestval")
    assert best["mean"].eq(0.82).all() and best["std"].eq(0).all()
    dense = dense_reference(load_results(study)).iloc[0]
    assert dense["mean"] == pytest.approx(0.91) and dense["seeds"] == 2  # each seed once


def test_figure_has_a_panel_per_dataset_model_and_a_line_per_strategy(study, tmp_path):
    for strategy in ("GlobalMagWeight", "LayerChannelNorm"):
        for seed in (0, 1):
            write_run(study, strategy, 4, seed, dataset="cifar10", model="resnet56",
                      strategy_params={"norm": "l2"} if strategy == "LayerChannelNorm" else None)
    figure, summary = plot_tradeoff(load_results(study))
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert summary.panels == ["cifar10 / resnet56", "digits / mlp"] and len(axes) == 2
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("cifar10 / resnet56") and "over 2 seeds" in titles[1]
    labels = axes[1].get_legend_handles_labels()[1]
    assert labels == ["dense (2 seeds)", "GlobalMagWeight", "RandomPruning"]
    assert "LayerChannelNorm (norm=l2)" in axes[0].get_legend_handles_labels()[1]
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    dense_line = axes[1].lines[0]
    assert list(dense_line.get_ydata()) == pytest.approx([0.91, 0.91])
    png = save_figure(figure, tmp_path / "f.png")
    pdf = save_figure(figure, tmp_path / "sub" / "f.pdf")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    with pytest.raises(UserError, match=r"must end in \.png or \.pdf"):
        save_figure(figure, tmp_path / "f.jpg")


def test_schedules_are_told_apart_in_the_table_and_the_figure(tmp_path):
    root = tmp_path / "schedules"
    iterative = {"kind": "iterative", "rounds": 4, "epochs_per_round": 1, "rewind": "none",
                 "rewind_point": 0, "frequency": 100}
    for seed in (0, 1):
        write_run(root, "GlobalMagWeight", 8, seed, finetuned=0.7)  # before schedules existed
        write_run(root, "GlobalMagWeight", 8, seed, finetuned=0.75, schedule=iterative)
    table = load_results(root)
    assert sorted(set(table["schedule"])) == ["iterative(rounds=4)", "oneshot"]
    points = tradeoff_points(table).set_index("series")
    assert points.loc["GlobalMagWeight [iterative(rounds=4)]", "mean"] == pytest.approx(0.75)
    assert points.loc["GlobalMagWeight [oneshot]", "mean"] == pytest.approx(0.7)
    one_schedule = tradeoff_points(table[table["schedule"] == "oneshot"])
    assert one_schedule["series"].tolist() == ["GlobalMagWeight"]


def test_plot_command(study, tmp_path, capsys):
    assert main(["plot", str(study)]) == 0
    assert (study / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "1 panel(s), 2 strategies, 8 runs" in capsys.readouterr().out
    out = tmp_path / "speedup.pdf"
    assert main(["plot", str(study), "--x", "speedup", "--metric", "top5", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"%PDF"
    assert main(["plot", str(study), "--out", str(tmp_path / "x.svg")]) == 2
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    empty = tmp_path / "empty"
    write_run(empty, "RandomPruning", 2, 0, status="failed")
    assert main(["plot", str(empty)]) == 2
    assert "no complete run" in capsys.readouterr().err


def test_survey_overlay_draws_the_literature_for_a_known_pair(study, capsys):
    for seed in (0, 1):
        write_run(study, "GlobalMagWeight", 4, seed, dataset="cifar10", model="resnet56")
    assert main(["plot", str(study), "--survey", "--out", str(study / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "digits / mlp: the survey has no results" in out
    count = int(out.split("cifar10 / resnet56: ")[1].split()[0])
    assert count > 0


def test_commands_do_not_import_heavy_modules_at_startup():
    code = (
        "import sys\nfrom shrinkbench_core.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'ray') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

"""``shrinkbench results --aggregate/--columns``: the table a paper reports (issue 19, item 11)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from test_results_plot import write_run

from shrinkbench_core.cli import main
from shrinkbench_core.experiment.summary import _fmt
from shrinkbench_core.results import aggregate_results, load_results
from shrinkbench_core.results.formats import format_value


@pytest.fixture
def seeds(tmp_path):
    root = tmp_path / "study"
    for seed, top1 in ((0, 0.80), (1, 0.84), (2, 0.82)):
        write_run(root, "GlobalMagWeight", 4, seed, finetuned=top1)
    write_run(root, "GlobalMagWeight", 8, 0, finetuned=0.7)
    write_run(root, "GlobalMagWeight", 16, 0, status="failed", error="CompressionError: too far")
    write_run(root, "GlobalMagWeight", 4, 3, status="running")
    return root


def test_mean_and_std_over_seeds_per_configuration(seeds):
    table = aggregate_results(load_results(seeds))
    assert table["compression"].tolist() == [4, 8]  # the failed and running runs left out
    four = table.iloc[0]
    assert four["seeds"] == 3
    assert four["finetuned_top1_mean"] == pytest.approx(0.82)
    assert four["finetuned_top1_std"] == pytest.approx(0.02)  # sample std of .80, .84, .82
    assert four["measured_speedup_mean"] == pytest.approx(1.5)
    assert pd.isna(table.iloc[1]["finetuned_top1_std"])  # one seed: no spread
    assert {"strategy", "schedule", "dataset", "model"} <= set(table.columns)


def test_no_complete_run_gives_an_empty_table_with_columns(tmp_path):
    write_run(tmp_path, "GlobalMagWeight", 4, 0, status="failed")
    table = aggregate_results(load_results(tmp_path))
    assert table.empty and "finetuned_top1_mean" in table.columns and "seeds" in table.columns


def test_aggregate_table_formats_like_the_run_summary_and_lists_failures_apart(seeds, capsys):
    assert main(["results", str(seeds), "--aggregate"]) == 0
    out = capsys.readouterr().out
    assert "82.00 ± 2.00%" in out and "70.00%" in out
    assert "failed runs (1):" in out and "CompressionError: too far" in out
    table_part = out.split("failed runs")[0]
    assert "too far" not in table_part
    assert format_value("finetuned_top1", 0.91234) == _fmt(0.91234, "pct") == "91.23%"
    assert format_value("measured_speedup", 1.5) == _fmt(1.5, "x") == "1.50x"


def test_columns_selection_and_unknown_columns(seeds, capsys):
    assert main(["results", str(seeds), "--format", "csv",
                 "--columns", "strategy,compression,finetuned_top1,measured_speedup"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv.columns) == ["strategy", "compression", "finetuned_top1", "measured_speedup"]
    assert len(csv) == 6  # one row per run, failed and running included
    assert main(["results", str(seeds), "--aggregate", "--format", "json",
                 "--columns", "compression,seeds,finetuned_top1"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert list(records[0]) == ["compression", "seeds", "finetuned_top1_mean", "finetuned_top1_std"]
    assert main(["results", str(seeds), "--columns", "compression,top1"]) == 2
    err = capsys.readouterr().err
    assert "unknown column(s) top1" in err and "finetuned_top1" in err


def test_an_unsupported_measured_speedup_is_marked_as_in_the_run_summary(tmp_path, capsys):
    path = write_run(tmp_path, "GlobalMagWeight", 4, 0)
    metrics = json.loads((path / "metrics.json").read_text())
    metrics["finetuned"]["latency"]["measured_speedup_reliable"] = False
    (path / "metrics.json").write_text(json.dumps(metrics))
    assert load_results(tmp_path).iloc[0]["measured_speedup_reliable"] == False  # noqa: E712
    assert main(["results", str(tmp_path)]) == 0
    assert "1.50x?" in capsys.readouterr().out


def test_latency_columns_never_mix_stages(tmp_path):
    path = write_run(tmp_path, "GlobalMagWeight", 4, 0)
    metrics = json.loads((path / "metrics.json").read_text())
    for key in ("dense_median_ms", "measured_speedup", "measured_speedup_reliable"):
        metrics["finetuned"]["latency"].pop(key)  # a run from before the pairing
    (path / "metrics.json").write_text(json.dumps(metrics))
    row = load_results(tmp_path).iloc[0]
    assert row["latency_ms"] == 0.4
    assert pd.isna(row["dense_latency_ms"]) and pd.isna(row["measured_speedup"])

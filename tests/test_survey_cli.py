"""``shrinkbench survey ...`` end to end, and the overlay of real runs on the literature."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
from collections import Counter
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from shrinkbench_core.errors import UserError
from shrinkbench_core.survey.cli import add_parser
from shrinkbench_core.survey.load import DATA_DIR, load_results
from shrinkbench_core.survey.names import MAPPING_ENV, survey_pair_for
from shrinkbench_core.survey.plot import overlay_survey


@pytest.fixture(autouse=True)
def _no_user_mapping(monkeypatch):
    monkeypatch.delenv(MAPPING_ENV, raising=False)


def survey(capsys, *argv: str) -> str:
    """Run ``shrinkbench survey ARGV`` through the parser this module adds; return stdout."""
    parser = argparse.ArgumentParser(prog="shrinkbench")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["survey", *argv])
    assert args.handler(args) == 0
    return capsys.readouterr().out


def raw_results() -> list[dict[str, str]]:
    with (DATA_DIR / "results.csv").open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def test_pairs_json_ranks_by_the_files_counts(capsys):
    pairs = json.loads(survey(capsys, "pairs", "--format", "json"))
    counts = Counter((r["Dataset"], r["Model"]) for r in raw_results())
    assert {(p["dataset"], p["model"]): p["results"] for p in pairs} == dict(counts)
    assert [p["results"] for p in pairs] == sorted(counts.values(), reverse=True)
    assert (pairs[0]["dataset"], pairs[0]["model"]) == counts.most_common(1)[0][0]


def test_pairs_filtered_by_our_dataset_name(capsys):
    text = survey(capsys, "pairs", "--dataset", "cifar10", "--min-results", "10")
    rows = [line.split() for line in text.splitlines()[2:-1]]
    assert [row[:3] for row in rows] == [
        ["CIFAR-10", "ResNet-56", "32"],
        ["CIFAR-10", "ResNet-110", "14"],
        ["CIFAR-10", "VGG-Torch-CIFAR10", "10"],
    ]


def test_results_csv_for_one_pair(capsys):
    text = survey(capsys, "results", "--dataset", "cifar10", "--model", "resnet56",
                  "--format", "csv", "--all-columns")  # fmt: skip
    table = pd.read_csv(StringIO(text), dtype={"result_id": str})
    expected = {
        r["Name"] for r in raw_results() if (r["Dataset"], r["Model"]) == ("CIFAR-10", "ResNet-56")
    }
    assert set(table["result_id"]) == expected
    assert {"compression_from", "speedup_from", "issues", "notes"} <= set(table.columns)
    assert table["top1"].dropna().between(0, 1).all()


def test_results_of_one_paper_markdown(capsys):
    text = survey(capsys, "results", "--paper", "Learning-Compression", "--format", "markdown")
    lines = text.splitlines()
    assert lines[0].startswith("| result_id | paper |")
    assert len(lines) == 2 + sum(r["Paper"] == "learning-compression" for r in raw_results())


def test_papers_listing(capsys):
    papers = json.loads(survey(capsys, "papers", "--format", "json"))
    assert len(papers) == 81
    with (DATA_DIR / "papers.csv").open(newline="", encoding="utf-8-sig") as handle:
        raw = {row["Name"]: row for row in csv.DictReader(handle)}
    for paper in papers:
        row = raw[paper["paper"]]
        assert paper["year"] == int(row["Date"].split("-")[0])
        assert paper["venue"] == row["Venue"]
    assert sum(p["results"] for p in papers) == 551
    both = json.loads(survey(capsys, "papers", "--source", "all", "--format", "json"))
    assert sum(p["results"] for p in both) == 551 + 1008  # State of Sparsity runs included
    text = survey(capsys, "papers", "--dataset", "ImageNet", "--model", "resnet50")
    assert "thinet-channel-norms" in text and "learning-compression" not in text


def test_issues_listing(capsys):
    text = survey(capsys, "issues", "--kind", "implausible", "--format", "csv")
    table = pd.read_csv(StringIO(text), dtype={"result_id": str})
    assert sorted(table["result_id"]) == ["281", "582", "583"]
    text = survey(capsys, "issues", "--model", "resnet50", "--kind", "contradictory")
    assert "365" in text and "525" in text


def test_plot_writes_default_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = survey(capsys, "plot", "--dataset", "cifar10", "--model", "resnet56")
    out = tmp_path / "survey-cifar10-resnet56.png"
    assert out.stat().st_size > 10_000
    assert f"wrote {out.name}" in text and "compression:" in text and "speedup:" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pairs", "--dataset", "cifar11"], "no dataset called 'cifar11'"),
        (["results", "--model", "resnet57"], "did you mean"),
        (["results", "--paper", "no-such-paper"], "no paper called"),
        (["pairs", "--min-results", "0"], "at least 1"),
        (["plot", "--dataset", "mnist", "--model", "lenet5", "--out", "x.jpg"], ".png or .pdf"),
        ([], "choose a survey command"),
    ],
)
def test_user_mistakes_are_user_errors(capsys, argv, message):
    parser = argparse.ArgumentParser(prog="shrinkbench")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["survey", *argv])
    with pytest.raises(UserError, match=message):
        args.handler(args)


# --------------------------------------------------------------------------- installed CLI


def _installed_cli() -> str:
    executable = shutil.which("shrinkbench")
    if executable is None:
        pytest.skip("the shrinkbench script is not installed")
    helptext = subprocess.run([executable, "--help"], capture_output=True, text=True).stdout
    if "survey" not in helptext:
        pytest.skip("`shrinkbench survey` is not wired into the CLI")
    return executable


def test_installed_cli_lists_pairs_and_plots(tmp_path):
    executable = _installed_cli()
    done = subprocess.run(
        [executable, "survey", "pairs", "--dataset", "ImageNet", "--format", "csv"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    table = pd.read_csv(StringIO(done.stdout))
    assert table.loc[0, ["dataset", "model", "results"]].tolist() == ["ImageNet", "VGG-16", 61]
    out = tmp_path / "rn50.pdf"
    done = subprocess.run(
        [executable, "survey", "plot", "--dataset", "imagenet", "--model", "resnet50",
         "--source", "all", "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.read_bytes()[:5] == b"%PDF-"
    assert "1051 results" in done.stdout


def test_installed_cli_reports_user_errors_without_traceback():
    executable = _installed_cli()
    done = subprocess.run(
        [executable, "survey", "results", "--dataset", "cifar11"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "no dataset called 'cifar11'" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- overlay on real runs


def _run_metrics(root: Path) -> pd.DataFrame:
    """One row per run directory, in the columns the results table uses."""
    rows = []
    for metrics_file in sorted(root.glob("runs/*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        config = json.loads((metrics_file.parent / "config.json").read_text())["config"]
        rows.append(
            {
                "dataset": config["dataset"]["name"],
                "model": config["model"]["name"],
                "strategy": config["strategy"]["name"],
                "compression_achieved": metrics["compression"]["achieved"],
                "speedup": metrics["theoretical_speedup"],
                "finetuned_top1": metrics["finetuned"]["accuracy"]["test_top1"],
            }
        )
    return pd.DataFrame(rows)


def test_overlay_of_real_digits_runs_mapped_to_a_survey_pair(tmp_path, monkeypatch):
    from shrinkbench_core.cli import main

    for compression in ("2", "4"):
        code = main(
            ["run", "--strategy", "GlobalMagWeight", "--compression", compression, "--quiet",
             "--output", str(tmp_path / "results"), "-p", "dense.epochs=1",
             "-p", "finetune.epochs=1", "-p", "model.hidden_sizes=[32]",
             "-p", 'metrics=["size","flops","accuracy"]']
        )  # fmt: skip
        assert code == 0
    ours = _run_metrics(tmp_path / "results")
    assert len(ours) == 2 and set(ours["dataset"]) == {"digits"}
    dataset, model = ours.loc[0, "dataset"], ours.loc[0, "model"]
    assert survey_pair_for(dataset, model) is None  # no literature for digits/mlp by name

    monkeypatch.setenv(MAPPING_ENV, json.dumps({"pairs": {"digits:mlp": "CIFAR-10:ResNet-56"}}))
    literature = load_results().query("dataset == 'CIFAR-10' and model == 'ResNet-56'")
    for x in ("compression_achieved", "speedup"):
        figure = Figure()
        ax = figure.subplots()
        ax.plot(ours[x], ours["finetuned_top1"], "o-", color="tab:red", label="ours: digits/mlp")
        drawn = overlay_survey(ax, dataset, model, x=x, metric="finetuned_top1")
        column = "compression" if x == "compression_achieved" else x
        assert drawn == literature.dropna(subset=[column, "top1"]).shape[0] > 0
        labels = ax.get_legend_handles_labels()[1]
        assert labels[0] == "ours: digits/mlp" and labels[1].startswith("Literature: ")
        assert len(labels) > 2  # one entry per paper
        xs = [value for line in ax.get_lines() for value in line.get_xdata()]
        assert len(xs) == drawn + 2
        ax.legend()
        figure.savefig(tmp_path / f"overlay-{x}.png")
        assert (tmp_path / f"overlay-{x}.png").stat().st_size > 5_000

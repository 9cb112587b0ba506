"""The literature survey as data: counts, conversions, reported problems, names, plots."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from shrinkbench_core.errors import UserError
from shrinkbench_core.survey.formatting import render
from shrinkbench_core.survey.load import DATA_DIR, load_issues, load_papers, load_results
from shrinkbench_core.survey.names import (
    MAPPING_ENV,
    NameMapping,
    normalize,
    parse_pair,
    survey_pair_for,
    user_mapping,
)
from shrinkbench_core.survey.plot import overlay_survey, plot_pair
from shrinkbench_core.survey.query import most_reported_pair, pairs_table, papers_table

SOS_DIR = DATA_DIR / "state_of_sparsity_resnet50"


@pytest.fixture(autouse=True)
def _no_user_mapping(monkeypatch):
    monkeypatch.delenv(MAPPING_ENV, raising=False)


def raw_rows(path: Path) -> list[dict[str, str]]:
    """The export read independently of the loader."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def result(result_id: str) -> pd.Series:
    table = load_results("all").set_index("result_id")
    return table.loc[result_id]


# --------------------------------------------------------------------------- shipped data


def test_shipped_data_has_licences_and_provenance():
    assert "MIT License" in (DATA_DIR / "LICENSE").read_text()
    assert "Apache License" in (SOS_DIR / "LICENSE").read_text()
    provenance = (DATA_DIR / "PROVENANCE.md").read_text()
    for name in ("results.csv", "papers.csv", "JJGO/shrinkbench", "google-research"):
        assert name in provenance


def test_paper_and_result_counts_match_the_files():
    raw_papers = raw_rows(DATA_DIR / "papers.csv")
    raw_results = raw_rows(DATA_DIR / "results.csv")
    assert (len(raw_papers), len(raw_results)) == (81, 551)  # the issue's numbers
    papers, results = load_papers(), load_results()
    assert len(papers) == len(raw_papers)
    assert sorted(results["result_id"]) == sorted(r["Name"] for r in raw_results)
    assert results["result_id"].is_unique
    per_paper = Counter(r["Paper"] for r in raw_results)
    assert dict(zip(papers["paper"], papers["results"], strict=True)) == {
        p: per_paper[p] + (1008 if p == "google-state-of-sparsity" else 0) for p in papers["paper"]
    }


def test_state_of_sparsity_counts_match_the_files():
    files = ["magnitude_pruning", "random_pruning", "l0_regularization", "variational_dropout"]
    expected = sum(len(raw_rows(SOS_DIR / f"rn50_{name}.csv")) for name in files)
    runs = load_results("state-of-sparsity")
    assert len(runs) == expected == 1008
    assert len(load_results("all")) == 551 + 1008
    assert set(zip(runs["dataset"], runs["model"], strict=True)) == {("ImageNet", "ResNet-50")}


def test_pairs_are_ranked_by_the_counts_in_the_file():
    raw = raw_rows(DATA_DIR / "results.csv")
    results_per_pair = Counter((r["Dataset"], r["Model"]) for r in raw)
    papers_per_pair: dict[tuple[str, str], set[str]] = {}
    for r in raw:
        papers_per_pair.setdefault((r["Dataset"], r["Model"]), set()).add(r["Paper"])
    table = pairs_table(load_results())
    assert len(table) == len(results_per_pair)
    for row in table.itertuples():
        assert row.results == results_per_pair[(row.dataset, row.model)]
        assert row.papers == len(papers_per_pair[(row.dataset, row.model)])
    assert table["results"].is_monotonic_decreasing
    top = max(results_per_pair.values())
    assert table.loc[0, "results"] == top
    assert (table.loc[0, "dataset"], table.loc[0, "model"]) in {
        pair for pair, n in results_per_pair.items() if n == top
    }


def test_papers_table_filters_by_pair():
    table = papers_table(load_papers(), load_results(), dataset="cifar10", model="resnet56")
    raw = raw_rows(DATA_DIR / "results.csv")
    expected = {r["Paper"] for r in raw if (r["Dataset"], r["Model"]) == ("CIFAR-10", "ResNet-56")}
    assert set(table["paper"]) == expected
    assert table["results"].sum() == 32


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("result_id", "field", "expected", "how"),
    [
        # savedParams 60% -> 1 / (1 - 0.6)
        ("328", "compression", 2.5, "1 / (1 - savedParams)"),
        ("328", "top1", 0.9355, "Top1"),
        # keptParams 61.5%, keptFLOPS 69.9%
        ("90", "compression", 1 / 0.615, "1 / keptParams"),
        ("90", "speedup", 1 / 0.699, "1 / keptFLOPS"),
        # 0.460 M original / 0.0693 M remaining; Err1 7.32%
        ("286", "compression", 0.460 / 0.0693, "OrigMParams / MParams"),
        ("286", "top1", 1 - 0.0732, "1 - Err1"),
        # 0.142 GFLOPs original / 0.0555 remaining; Err1 7.06%, OrigErr1 6.10%
        ("558", "speedup", 0.142 / 0.0555, "OrigGFLOPS / GFLOPS"),
        ("558", "orig_top1", 1 - 0.0610, None),
        # keptParams 11% (Han et al.: "1/9 of its original size"); Err5 19.70%
        ("262", "compression", 1 / 0.11, "1 / keptParams"),
        ("262", "top5", 1 - 0.1970, "1 - Err5"),
        # "34.6%" speed-up in the paper, recorded as old/new FLOPS 1.346: as reported
        ("237", "speedup", 1.346, "old/new FLOPS"),
        # MParams 0.39 with savedParams 53.7%, GFLOPS with savedFLOPS 54.8%
        ("64", "compression", 1 / (1 - 0.537), "1 / (1 - savedParams)"),
        ("64", "speedup", 1 / (1 - 0.548), "1 / (1 - savedFLOPS)"),
        ("64", "orig_top1", 0.9358 - 0.0054, None),  # Top1 - dTop1
        # absolute counts (60.9 / 19.6) agree with savedParams 67.8% (3.106) within rounding
        ("322", "compression", 60.9 / 19.6, "OrigMParams / MParams"),
        # ratios as reported; top-1 from OrigTop1 93.80% + dTop1 -0.31%
        ("362", "compression", 1.97, "old/new Nparam"),
        ("362", "speedup", 1.99, "old/new FLOPS"),
        ("362", "top1", 0.9380 - 0.0031, "OrigTop1 + dTop1"),
    ],
)
def test_hand_checked_values(result_id, field, expected, how):
    row = result(result_id)
    assert row[field] == pytest.approx(expected, rel=1e-9)
    if how is not None:
        assert row[f"{field}_from"] == how


def test_derived_flags_name_computed_values_only():
    reported = result("237")  # speedup read as a ratio, accuracy from error rates
    assert "speedup" not in reported["derived_fields"].split(";")
    assert "top1" in reported["derived_fields"].split(";")
    direct = result("432")  # Top1, Top5, OrigTop1 all reported, savedParams 50%
    assert direct["derived_fields"].split(";") == ["delta_top1", "compression"]
    assert bool(direct["derived"])
    table = load_results()
    assert (table["derived"] == table["derived_fields"].notna()).all()


def test_values_are_fractions_and_ratios():
    table = load_results("all")
    for column in ("top1", "top5", "orig_top1", "orig_top5"):
        values = table[column].dropna()
        assert ((values >= 0) & (values <= 1)).all(), column
    for column in ("compression", "speedup"):
        assert (table[column].dropna() > 0).all()
    assert table["top1"].notna().sum() > 100


def test_contradictory_accuracy_is_dropped_and_reported():
    # Err1 23.60% says 76.40%, OrigTop1 76.01% + dTop1 -1.06% says 74.95%
    row = result("365")
    for field in ("top1", "orig_top1", "delta_top1", "top5", "orig_top5", "delta_top5"):
        assert math.isnan(row[field]), field
    assert row["compression"] == pytest.approx(1 / 0.7)
    issues = load_issues()
    found = issues[(issues["result_id"] == "365") & (issues["field"] == "top1")]
    assert found["kind"].tolist() == ["contradictory"]
    assert "0.764" in found["detail"].iloc[0] and "0.7495" in found["detail"].iloc[0]


def test_baseline_far_from_other_papers_is_implausible():
    # zhang-accel-very-deep wrote VGG-16's 10.1% top-5 *error* as OrigTop5
    for result_id in ("281", "582", "583"):
        row = result(result_id)
        assert math.isnan(row["orig_top5"]) and math.isnan(row["top5"])
        assert row["speedup"] > 1  # the rest of the row is still used
    assert result("582")["delta_top5"] == pytest.approx(-0.003)
    issues = load_issues()
    flagged = issues[(issues["kind"] == "implausible") & (issues["field"] == "orig_top5")]
    assert sorted(flagged["result_id"]) == ["281", "582", "583"]


def test_missing_values_say_what_is_missing():
    row = result("21")  # MParams 0.77 without the original count
    assert math.isnan(row["compression"])
    issues = load_issues()
    detail = issues[(issues["result_id"] == "21") & (issues["field"] == "compression")]
    assert detail["kind"].tolist() == ["missing"]
    assert detail["detail"].iloc[0] == "MParams reported without OrigMParams"
    nothing = issues[(issues["result_id"] == "320") & (issues["field"] == "accuracy")]
    assert nothing["kind"].tolist() == ["missing"]


def _edited_copy(tmp_path: Path, edits: dict[tuple[str, str], str]) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(DATA_DIR, folder)
    rows = raw_rows(folder / "results.csv")
    for row in rows:
        for (result_id, column), text in edits.items():
            if row["Name"] == result_id:
                row[column] = text
    with (folder / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_unparseable_and_out_of_range_cells_are_reported_not_guessed(tmp_path):
    folder = _edited_copy(
        tmp_path,
        {
            ("328", "Top1"): "93.55",  # a percentage column without '%'
            ("90", "keptParams"): "about 60%",
            ("286", "Err1"): "120%",
            ("64", "MParams"): "0.39%",  # a count with a percent sign
        },
    )
    table = load_results(data_dir=folder).set_index("result_id")
    assert math.isnan(table.loc["328", "top1"])
    assert math.isnan(table.loc["90", "compression"])
    assert math.isnan(table.loc["286", "top1"])
    # the damaged MParams no longer counts, savedParams alone still gives the ratio
    assert table.loc["64", "compression"] == pytest.approx(1 / (1 - 0.537))
    issues = load_issues(data_dir=folder)
    kinds = {
        (r.result_id, r.field): r.kind
        for r in issues.itertuples()
        if r.kind in ("unparseable", "implausible")
    }
    assert kinds[("328", "Top1")] == "unparseable"
    assert kinds[("90", "keptParams")] == "unparseable"
    assert kinds[("286", "Err1")] == "implausible"
    assert kinds[("64", "MParams")] == "unparseable"
    assert not load_issues().query("kind == 'unparseable'").shape[0]  # the shipped data parses


def test_state_of_sparsity_conversions():
    baselines = [float(r["Accuracy"]) for r in raw_rows(SOS_DIR / "rn50_baselines.csv")]
    first = raw_rows(SOS_DIR / "rn50_magnitude_pruning.csv")[0]
    row = result("sos-magnitude-1")
    assert row["method"] == "Magnitude"
    assert row["top1"] == pytest.approx(float(first["accuracy"]))
    assert row["compression"] == pytest.approx(1 / (1 - float(first["Sparsity"])))
    assert row["orig_top1"] == pytest.approx(sum(baselines) / len(baselines) / 100)
    assert row["orig_top1"] == pytest.approx(0.7669, abs=1e-4)  # what row 50 of the survey says
    assert math.isnan(row["speedup"])
    assert set(row["derived_fields"].split(";")) == {"orig_top1", "delta_top1", "compression"}
    vd = raw_rows(SOS_DIR / "rn50_variational_dropout.csv")[0]
    sparsity = float(vd["global sparsity"])
    assert result("sos-vd-1")["compression"] == pytest.approx(1 / (1 - sparsity))


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (("cifar10", "resnet56"), ("CIFAR-10", "ResNet-56")),
        (("imagenet", "resnet50"), ("ImageNet", "ResNet-50")),
        (("imagenet", "vgg16"), ("ImageNet", "VGG-16")),
        (("imagenet", "mobilenet_v2"), ("ImageNet", "MobileNet-v2")),
        (("mnist", "lenet300"), ("MNIST", "LeNet-300-100")),
        (("cifar10", "vgg_bn_drop"), ("CIFAR-10", "VGG-Torch-CIFAR10")),
        (("shrinkbench_cifar:cifar10", "shrinkbench_cifar:resnet110"), ("CIFAR-10", "ResNet-110")),
        (("CIFAR-10", "ResNet-56"), ("CIFAR-10", "ResNet-56")),
    ],
)
def test_our_names_map_to_survey_pairs(ours, theirs):
    assert survey_pair_for(*ours) == theirs


def test_unmatched_names_give_no_pair():
    assert survey_pair_for("digits", "mlp") is None
    assert survey_pair_for("cifar10", "lenet5") is None  # both names exist, the pair does not


def test_survey_names_are_unambiguous_after_normalization():
    table = load_results("all")
    for column in ("dataset", "model"):
        names = set(table[column])
        assert len({normalize(n) for n in names}) == len(names)


def test_user_mapping_from_env_inline_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv(MAPPING_ENV, json.dumps({"pairs": {"digits:mlp": "CIFAR-10:ResNet-56"}}))
    assert survey_pair_for("digits", "mlp") == ("CIFAR-10", "ResNet-56")
    path = tmp_path / "names.json"
    path.write_text(json.dumps({"datasets": {"digits": "MNIST"}, "models": {"mlp": "fc300-100"}}))
    monkeypatch.setenv(MAPPING_ENV, str(path))
    assert survey_pair_for("digits", "mlp") == ("MNIST", "fc300-100")
    explicit = NameMapping(pairs={"digits:mlp": "mnist:lenet-300-100"})
    assert survey_pair_for("digits", "mlp", mapping=explicit) == ("MNIST", "LeNet-300-100")


@pytest.mark.parametrize(
    "value",
    ['{"pairs": {"digits:mlp": "CIFAR-10"}}', '{"colours": {}}', "{not json", "/no/such/file.json"],
)
def test_bad_user_mappings_are_user_errors(value):
    with pytest.raises(UserError):
        user_mapping(value)


def test_explicit_pair_unknown_to_the_survey_is_a_user_error():
    mapping = NameMapping(pairs={"digits:mlp": "CIFAR-10:LeNet-5"})
    with pytest.raises(UserError, match="no results for CIFAR-10:LeNet-5"):
        survey_pair_for("digits", "mlp", mapping=mapping)
    with pytest.raises(UserError, match="DATASET:MODEL"):
        parse_pair("CIFAR-10")


# --------------------------------------------------------------------------- plots


@pytest.mark.parametrize("dataset", ["CIFAR-10", "ImageNet"])
def test_plot_writes_figure_for_most_reported_pair(tmp_path, dataset):
    pair = most_reported_pair(load_results(), dataset)
    out = tmp_path / f"{normalize(pair[1])}.png"
    summary = plot_pair(*pair, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pair_results = load_results().query("dataset == @pair[0] and model == @pair[1]")
    for x in ("compression", "speedup"):
        expected = pair_results.dropna(subset=[x, "top1"]).shape[0]
        assert summary.points[x] == expected
        assert summary.missing[x] == len(pair_results) - expected
    assert summary.points["compression"] + summary.points["speedup"] > 0


def test_plot_pdf_delta_and_bad_suffix(tmp_path):
    out = tmp_path / "sub" / "vgg.pdf"
    summary = plot_pair("imagenet", "vgg16", out, metric="top5", delta=True)
    assert out.read_bytes()[:5] == b"%PDF-"
    assert summary.points["speedup"] > 0
    with pytest.raises(UserError, match=".png or .pdf"):
        plot_pair("imagenet", "vgg16", tmp_path / "vgg.jpg")


def test_plot_without_any_point_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="none of the"):
        plot_pair("MNIST", "LeNet-5-Caffe", tmp_path / "lenet.png")
    assert not (tmp_path / "lenet.png").exists()


def test_overlay_draws_the_pairs_points_on_existing_axes():
    figure = Figure()
    ax = figure.subplots()
    ours = ax.plot([2.0, 4.0], [0.93, 0.92], "o-", label="ours")[0]
    drawn = overlay_survey(ax, "cifar10", "resnet56", x="compression_achieved",
                           metric="finetuned_top1")  # fmt: skip
    expected = load_results().query("dataset == 'CIFAR-10' and model == 'ResNet-56'")
    assert drawn == expected.dropna(subset=["compression", "top1"]).shape[0] > 0
    literature = [line for line in ax.get_lines() if line is not ours]
    assert sum(len(line.get_xdata()) for line in literature) == drawn
    # one legend entry per (paper, method), each in its own muted style
    entries = [t for t in ax.get_legend_handles_labels()[1] if t.startswith("Literature: ")]
    drawn_series = expected.dropna(subset=["compression", "top1"])
    assert len(entries) == len(set(drawn_series["paper"] + drawn_series["method"].fillna(""))) > 1
    assert len({(line.get_marker(), line.get_color()) for line in literature}) > 1
    assert overlay_survey(ax, "digits", "mlp") == 0
    assert overlay_survey(ax, "digits", "mlp", pair="CIFAR-10:ResNet-56", x="speedup") > 0
    with pytest.raises(UserError):
        overlay_survey(ax, "cifar10", "resnet56", x="latency")


# --------------------------------------------------------------------------- output


def test_render_formats_round_trip():
    table = pairs_table(load_results()).head(5)
    assert len(json.loads(render(table, "json"))) == 5
    from io import StringIO

    assert (
        pd.read_csv(StringIO(render(table, "csv")))["results"].tolist() == table["results"].tolist()
    )
    markdown = render(table, "markdown").splitlines()
    assert markdown[0].startswith("| dataset | model |") and len(markdown) == 7
    text = render(table, "table")
    assert text.splitlines()[2].startswith("ImageNet") and text.endswith("(5 rows)")
    with pytest.raises(UserError):
        render(table, "xml")


def test_survey_queries_do_not_import_torch():
    code = (
        "import sys, argparse\n"
        "from shrinkbench_core.survey.cli import add_parser\n"
        "p = argparse.ArgumentParser(); add_parser(p.add_subparsers())\n"
        "for argv in (['survey', 'pairs'], ['survey', 'papers'], ['survey', 'results']):\n"
        "    a = p.parse_args(argv); a.handler(a)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_cli_choices_match_the_library():
    from shrinkbench_core.survey import cli, formatting, load
    from shrinkbench_core.survey.values import Kind

    assert cli.SOURCES == load.SOURCES
    assert cli.FORMATS == formatting.FORMATS
    assert tuple(kind.value for kind in Kind) == cli.KINDS

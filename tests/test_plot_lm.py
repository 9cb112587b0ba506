"""``shrinkbench plot DIR --x sparsity --y perplexity``: the language-model figure.

Run directories are written in the runner's layout with known perplexities, as an LM
sweep leaves them (the sparsity a strategy parameter, 2:4 beside 50% unstructured); the
committed LM sweep files are checked to expand into the runs the README's findings need.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba

from shrinkbench_core.plot import plot_tradeoff, tradeoff_points
from shrinkbench_core.plot.tradeoff import dodge, split_params, strategy_labels
from shrinkbench_core.results import load_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {"MagnitudeLM": {"groups": "layer"}, "SparseGPT": {"blocksize": 128, "percdamp": 0.01}}


def write_lm_run(root: Path, strategy: str, params: dict, seed: int, pruned: float,
                 dense: float, sparsity: float) -> None:
    """A complete LM run directory: perplexity per stage, sparsity of the prunable layers."""
    params = {**DEFAULTS.get(strategy, {}), **params}
    name = f"tinyshakespeare-tiny-gpt-{strategy}-{json.dumps(params, sort_keys=True)}-s{seed}"
    path = root / "runs" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path.mkdir(parents=True)
    config = {
        "strategy": {"name": strategy, "params": params}, "compression": 1.5, "seed": seed,
        "dataset": {"name": "tinyshakespeare", "params": {"seqlen": 64}},
        "model": {"name": "tiny-gpt", "params": {"layers": 2, "width": 64}},
    }
    (path / "config.json").write_text(json.dumps({"digest": "d" * 64, "config": config}))
    (path / "status.json").write_text(json.dumps({"status": "complete"}))

    def stage(ppl: float, fraction: float) -> dict:
        size = {"compression_ratio": 1 / (1 - 0.9 * fraction), "pruned_fraction": fraction}
        return {"size": size, "perplexity": {"test_perplexity": ppl}}

    metrics = {
        "digest": "d" * 64, "compression": {"requested": 1.5, "achieved": 1 / (1 - sparsity)},
        "dense": stage(dense, 0.0), "pruned": stage(pruned, sparsity),
        "finetuned": stage(pruned, sparsity),
    }
    (path / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def lm_study(tmp_path) -> Path:
    """Magnitude and SparseGPT at 50%, 2:4 and 70%, OWL at 70%; 2 seeds (dense 10 and 12)."""
    root = tmp_path / "lm"
    for seed, dense in ((0, 10.0), (1, 12.0)):
        for strategy, base in (("MagnitudeLM", 14.0), ("SparseGPT", 11.0)):
            write_lm_run(root, strategy, {"sparsity": 0.5}, seed, base + seed, dense, 0.5)
            write_lm_run(root, strategy, {"nm": "2:4"}, seed, base + 1 + seed, dense, 0.5)
            write_lm_run(root, strategy, {"sparsity": 0.7}, seed, 2 * base + seed, dense, 0.7)
        write_lm_run(root, "OWL", {"sparsity": 0.7, "base": "wanda", "lamda": 0.08}, seed,
                     20.0 + 2 * seed, dense, 0.7)
    return root


def test_parameter_cells_split_at_top_level_commas_only():
    assert split_params("a=1,b=[1,2],c={d=3,e=4}") == ["a=1", "b=[1,2]", "c={d=3,e=4}"]
    assert split_params("") == []


def test_legend_names_keep_only_the_parameters_that_tell_a_strategys_series_apart():
    names = ["SparseGPT", "SparseGPT", "SparseGPT", "OWL", "Lonely"]
    params = ["blocksize=128,percdamp=0.01,sparsity=0.5", "blocksize=128,nm=2:4,percdamp=0.01",
              "blocksize=128,percdamp=0.01,sparsity=0.7", "base=wanda,lamda=0.08,sparsity=0.7",
              "norm=l2"]  # fmt: skip
    assert strategy_labels(names, params, x="sparsity") == [
        "SparseGPT", "SparseGPT (nm=2:4)", "SparseGPT",
        "OWL (base=wanda,lamda=0.08)", "Lonely (norm=l2)",
    ]  # fmt: skip
    # on the compression axis the sparsity is a parameter like any other
    assert strategy_labels(names, params)[:3] == [
        "SparseGPT (sparsity=0.5)", "SparseGPT (nm=2:4)", "SparseGPT (sparsity=0.7)",
    ]  # fmt: skip


def test_a_strategys_sparsities_form_one_line_and_two_to_four_another(lm_study):
    points = tradeoff_points(load_results(lm_study), x="sparsity", metric="perplexity",
                             stage="pruned").set_index(["series", "x"])  # fmt: skip
    assert sorted(set(points.index.get_level_values("series"))) == [
        "MagnitudeLM", "MagnitudeLM (nm=2:4)", "OWL (base=wanda,lamda=0.08)",
        "SparseGPT", "SparseGPT (nm=2:4)",
    ]  # fmt: skip
    assert len(points) == 7  # 2 + 1 + 1 + 2 + 1 points, each over 2 seeds
    assert points["seeds"].eq(2).all()
    magnitude_70 = points.loc[("MagnitudeLM", 0.7)]
    assert magnitude_70["mean"] == pytest.approx(28.5)
    assert magnitude_70["std"] == pytest.approx(2**-0.5)
    assert points.loc[("SparseGPT (nm=2:4)", 0.5), "mean"] == pytest.approx(12.5)
    assert points.loc[("OWL (base=wanda,lamda=0.08)", 0.7), "mean"] == pytest.approx(21.0)


def test_points_at_one_x_are_drawn_side_by_side_and_a_lone_point_stays():
    import pandas as pd

    points = pd.DataFrame({"series": ["b", "a", "c", "a", "b"],
                           "x": [0.5, 0.5, 0.5, 0.7, 0.9]})  # fmt: skip
    drawn = dodge(points, log=False)
    # a, b, c at 0.5 in name order, centred on 0.5; 0.7 and 0.9 alone
    assert drawn[1] < drawn[0] < drawn[2]
    assert drawn[0] == pytest.approx(0.5) and drawn[1] + drawn[2] == pytest.approx(1.0)
    assert drawn[3] == 0.7 and drawn[4] == 0.9
    assert drawn[2] - drawn[0] == pytest.approx(0.012 * 0.5)  # 1.2% of the 0.5 minimum span
    logged = dodge(pd.DataFrame({"series": ["a", "b"], "x": [4.0, 4.0]}), log=True)
    assert logged[0] < 4.0 < logged[1] and logged[0] * logged[1] == pytest.approx(16.0)


def test_lm_figure_tells_patterns_apart_against_the_dense_line(lm_study):
    figure, summary = plot_tradeoff(load_results(lm_study), x="sparsity", metric="perplexity",
                                    stage="pruned")  # fmt: skip
    (ax,) = [ax for ax in figure.axes if ax.get_visible()]
    assert summary.runs == 14 and len(summary.strategies) == 5
    bars = {c.get_label(): c.lines[0] for c in ax.containers}
    # 2:4 hollow, unstructured filled, both in the strategy's colour
    solid, hollow = bars["SparseGPT"], bars["SparseGPT (nm=2:4)"]
    assert to_rgba(hollow.get_markerfacecolor()) == to_rgba("white")
    assert to_rgba(solid.get_markerfacecolor()) == to_rgba(solid.get_color())
    assert to_rgba(hollow.get_color()) == to_rgba(solid.get_color())
    assert to_rgba(bars["MagnitudeLM"].get_color()) != to_rgba(solid.get_color())
    # the four points at 50% are drawn apart, in legend order; the line joins 50% and 70%
    at_half = [bars[name].get_xdata()[0] for name in
               ("MagnitudeLM", "MagnitudeLM (nm=2:4)", "SparseGPT", "SparseGPT (nm=2:4)")]
    assert at_half == sorted(at_half) and len(set(at_half)) == 4
    assert sum(at_half) / 4 == pytest.approx(0.5)
    assert len(solid.get_xdata()) == 2
    assert "side by side" in ax.get_xlabel()
    dense = ax.lines[0]
    assert dense.get_label() == "dense (2 seeds)"
    assert list(dense.get_ydata()) == pytest.approx([11.0, 11.0])
    # log perplexity axis, plain numbers (no 1.2x10^1)
    assert ax.get_yscale() == "log"
    labels = ax.yaxis.get_major_formatter().format_ticks([10.0, 12.0, 30.0])
    assert labels == ["10", "12", "30"]
    # five lines: the legend inside the panel; seven: beside it, in a wider figure
    assert figure.get_figwidth() == pytest.approx(5.2)
    for seed in (0, 1):
        for params in ({"sparsity": 0.5}, {"nm": "2:4"}):
            write_lm_run(lm_study, "WandaLM", params, seed, 12.0, 10.0 + 2 * seed, 0.5)
    figure, _ = plot_tradeoff(load_results(lm_study), x="sparsity", metric="perplexity",
                              stage="pruned")  # fmt: skip
    (ax,) = [ax for ax in figure.axes if ax.get_visible()]
    assert figure.get_figwidth() == pytest.approx(7.8) and len(ax.containers) == 7
    figure.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 > ax.get_window_extent().x1


@pytest.mark.parametrize("name, output, width, layers",
                         [("sweep_llm.toml", "results/llm-study", 64, 2),
                          ("sweep_llm_4x128.toml", "results/llm-study-4x128", 128, 4)])
def test_committed_lm_sweeps_expand_into_the_findings_runs(name, output, width, layers):
    from shrinkbench_core.registry import get_registry
    from shrinkbench_core.sweep.config import expand_sweep, load_sweep_file

    sweep = load_sweep_file(ROOT / "examples" / name)
    runs = expand_sweep(sweep, get_registry())
    assert sweep.output == output and len(runs) == 33
    assert len({run.dense_digest for run in runs}) == 3  # one dense model per seed
    settings = set()
    for run in runs:
        config = run.config
        assert config["finetune"]["epochs"] == 0 and config["model"]["params"]["width"] == width
        assert config["model"]["params"]["layers"] == layers
        assert {"size", "perplexity"} <= set(map(str, config["metrics"]))
        params = config["strategy"]["params"]
        settings.add((config["strategy"]["name"], params.get("sparsity"), params.get("nm"),
                      params.get("base"), config["seed"]))  # fmt: skip
    expected = {
        (strategy, sparsity, nm, None, seed)
        for strategy in ("MagnitudeLM", "WandaLM", "SparseGPT")
        for sparsity, nm in ((0.5, None), (None, "2:4"), (0.7, None))
        for seed in (0, 1, 2)
    } | {("OWL", 0.7, None, base, seed) for base in ("wanda", "sparsegpt") for seed in (0, 1, 2)}
    assert settings == expected

"""Tradeoff curves: accuracy against compression ratio or theoretical speedup.

One panel per (dataset, model), one line per strategy (with its parameters),
each point the mean over seeds with the standard deviation as error bar, on a
log-2 x axis, and the dense model's accuracy as a reference line: the figures
the ShrinkBench paper asks every pruning paper to show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shrinkbench_core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

X_CHOICES = {
    "compression": "compression_achieved", "speedup": "theoretical_speedup", "sparsity": "sparsity",
}
X_LABELS = {
    "compression": "Compression ratio (all / nonzero parameters)",
    "speedup": "Theoretical speedup (dense / nonzero multiply-adds)",
    "sparsity": "Sparsity of the prunable layers (embeddings, LM head excluded)",
}
METRICS = ("top1", "top5", "perplexity")
STAGES = {"finetuned": "after fine-tuning", "bestval": "best validation epoch",
          "pruned": "before fine-tuning"}
SUFFIXES = (".png", ".pdf")
LEGEND_INSIDE = 6  # more lines than this in a panel: the legend goes beside it


@dataclass
class TradeoffSummary:
    """What a figure shows: its panels, strategies and number of runs drawn."""

    path: Path | None
    panels: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    runs: int = 0
    survey_points: dict[str, int] = field(default_factory=dict)


def split_params(params: str) -> list[str]:
    """``key=value`` items of a results table's parameter cell (commas inside [] or {} kept)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(params):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(params[start:i])
            start = i + 1
    items.append(params[start:])
    return [item for item in items if item]


def strategy_labels(names: list[str], params: list[str], x: str = "compression") -> list[str]:
    """Legend names: the strategy and the parameters that tell its series apart.

    With ``x="sparsity"`` the ``sparsity`` parameter is the x axis, not part of
    the name. When a strategy has several parameter sets, the parameters all of
    them share are left out (``SparseGPT`` and ``SparseGPT (nm=2:4)``); a
    strategy with one parameter set keeps all of them.
    """
    kept = [
        [item for item in split_params(p) if not (x == "sparsity" and item.startswith("sparsity="))]
        for p in params
    ]
    sets: dict[str, set[tuple[str, ...]]] = {}
    for name, items in zip(names, kept, strict=True):
        sets.setdefault(name, set()).add(tuple(items))
    shared = {
        name: set.intersection(*map(set, variants)) if len(variants) > 1 else set()
        for name, variants in sets.items()
    }
    labels = []
    for name, items in zip(names, kept, strict=True):
        shown = ",".join(item for item in items if item not in shared[name])
        labels.append(f"{name} ({shown})" if shown else name)
    return labels


def with_labels(frame: pd.DataFrame, x: str = "compression") -> pd.DataFrame:
    """Add ``panel`` (dataset / model) and ``series`` (strategy + parameters) columns.

    A model's parameters join the panel name only when one (dataset, model)
    was run with several parameter sets; the pruning schedule joins the series
    name only when the runs used several schedules; the strategy's parameters
    are those of :func:`strategy_labels`.
    """
    frame = frame.copy()
    schedules = frame["schedule"].fillna("oneshot") if "schedule" in frame else None
    several = schedules is not None and schedules.nunique() > 1
    labels = strategy_labels(
        list(frame["strategy"]), list(frame["strategy_params"].fillna("")), x
    )
    frame["series"] = [
        label + (f" [{schedule}]" if several else "")
        for label, schedule in zip(
            labels, schedules if schedules is not None else [""] * len(frame), strict=True
        )
    ]
    variants = frame.groupby(["dataset", "model"])["model_params"].transform("nunique")
    frame["panel"] = [
        f"{d} / {m}" + (f" ({p})" if n > 1 and p else "")
        for d, m, p, n in zip(
            frame["dataset"], frame["model"], frame["model_params"].fillna(""), variants,
            strict=True,
        )
    ]
    return frame


def tradeoff_points(
    frame: pd.DataFrame, x: str = "compression", metric: str = "top1", stage: str = "finetuned"
) -> pd.DataFrame:
    """The points of the figure: one per (panel, strategy and parameters, requested compression).

    Columns: ``panel``, ``series``, ``strategy``, ``compression`` (requested), ``x`` (mean
    over seeds of the achieved compression, theoretical speedup or sparsity),
    ``mean`` and ``std`` of the metric over seeds (sample standard deviation;
    0 for a single seed) and ``seeds`` (how many). Only complete runs count.
    With ``x="sparsity"`` a series joins a strategy's runs at several
    ``sparsity`` parameters into one line.
    """
    x_column, y_column = _columns(x, metric, stage)
    runs = with_labels(frame[frame["status"] == "complete"], x)
    runs = runs.dropna(subset=[y_column])
    runs = runs.assign(x=runs[x_column].fillna(runs["compression"]) if x == "compression"
                       else runs[x_column], params=runs["strategy_params"].fillna(""))
    runs = runs.dropna(subset=["x"])
    grouped = runs.groupby(["panel", "series", "strategy", "compression", "params"], sort=True)
    points = grouped.agg(
        x=("x", "mean"), mean=(y_column, "mean"), std=(y_column, "std"), seeds=(y_column, "size")
    ).reset_index().drop(columns="params")
    points["std"] = points["std"].fillna(0.0)
    return points


def dodge(points: pd.DataFrame, log: bool, width: float = 0.012) -> list[float]:
    """x positions that draw points sharing an x value side by side (in series order).

    Points of different series whose x agree to 1e-6 (relative) are spread
    over ``width`` of the panel's x span per point (in log2 units on a log
    axis); a lone point keeps its x.
    """
    xs = [math.log2(v) if log else float(v) for v in points["x"]]
    span = max(max(xs) - min(xs), 1.0 if log else 0.5)
    key = [float(f"{v:.6g}") for v in points["x"]]
    members: dict[float, list[str]] = {}
    for k, name in zip(key, points["series"], strict=True):
        members.setdefault(k, [])
        if name not in members[k]:
            members[k].append(name)
    shifted = []
    for value, k, name in zip(xs, key, points["series"], strict=True):
        names = sorted(members[k])
        offset = (names.index(name) - (len(names) - 1) / 2) * width * span
        shifted.append(2 ** (value + offset) if log else value + offset)
    return shifted


def dense_reference(frame: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Dense accuracy per panel: mean and std over seeds (each seed's dense model counted once)."""
    column = f"dense_{metric}"
    runs = with_labels(frame[frame["status"] == "complete"]).dropna(subset=[column])
    per_seed = runs.groupby(["panel", "seed"], sort=True)[column].first().reset_index()
    reference = per_seed.groupby("panel")[column].agg(["mean", "std", "size"]).reset_index()
    reference["std"] = reference["std"].fillna(0.0)
    return reference.rename(columns={"size": "seeds"})


def _columns(x: str, metric: str, stage: str) -> tuple[str, str]:
    if x not in X_CHOICES:
        raise UserError(f"unknown x axis {x!r}; choose one of {', '.join(X_CHOICES)}")
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if metric == "perplexity" and stage == "bestval":
        raise UserError("perplexity is measured after pruning and fine-tuning, not at the best "
                        "validation epoch; use --stage pruned or finetuned")
    return X_CHOICES[x], f"{stage}_{metric}"


def plot_tradeoff(
    frame: pd.DataFrame,
    x: str = "compression",
    metric: str = "top1",
    stage: str = "finetuned",
    survey: bool = False,
) -> tuple[Figure, TradeoffSummary]:
    """Draw the tradeoff figure of a results table (:func:`shrinkbench_core.results.load_results`).

    With ``survey`` the literature's results for each (dataset, model) are
    drawn underneath (:func:`shrinkbench_core.survey.plot.overlay_survey`).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

    points = tradeoff_points(frame, x, metric, stage)
    if points.empty:
        raise UserError(
            f"no complete run reports {stage}_{metric} and {X_CHOICES[x]}; "
            "check `shrinkbench results DIR` for the runs' status"
        )
    reference = dense_reference(frame, metric).set_index("panel")
    panels = sorted(points["panel"].unique())
    series = sorted(points["series"].unique())
    # one colour per strategy, one marker per parameter set (a strategy's variants side by side)
    names = sorted(points["strategy"].unique())
    hue = {name: colormaps["tab10"](i % 10) for i, name in enumerate(names)}
    colors = dict(zip(points["series"], points["strategy"].map(hue), strict=True))
    markers = dict(zip(series, "osD^v<>pPhX*" * (len(series) // 12 + 1), strict=False))
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    # many lines: the legend goes beside the panel, which widens the figure
    outside = points.groupby("panel")["series"].nunique().max() > LEGEND_INSIDE
    width = 5.2 + (2.6 if outside else 0.0)
    figure = Figure(figsize=(width * columns, 4.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    summary = TradeoffSummary(None, panels, series, int(points["seeds"].sum()))
    for ax, panel in zip(axes, panels, strict=False):
        panel_points = points[points["panel"] == panel].copy()
        panel_points["drawn_x"] = dodge(panel_points, log=x != "sparsity")
        if survey:
            dataset, model = _panel_names(frame, panel)
            summary.survey_points[panel] = _overlay_survey(ax, dataset, model, x, metric)
        low = (panel_points["mean"] - panel_points["std"]).min()
        high = (panel_points["mean"] + panel_points["std"]).max()
        if panel in reference.index:
            dense = reference.loc[panel]
            ax.axhline(dense["mean"], color="0.2", linestyle="--", linewidth=1, zorder=1,
                       label=f"dense ({int(dense['seeds'])} seeds)")
            if dense["std"] > 0:
                ax.axhspan(dense["mean"] - dense["std"], dense["mean"] + dense["std"],
                           color="0.5", alpha=0.15, linewidth=0, zorder=0)
            low = min(low, dense["mean"] - dense["std"])
            high = max(high, dense["mean"] + dense["std"])
        for name, group in panel_points.groupby("series", sort=True):
            group = group.sort_values("x")
            ax.errorbar(
                group["drawn_x"], group["mean"], yerr=group["std"], label=name,
                color=colors[name], marker=markers[name], markersize=5, linewidth=1.4,
                capsize=3, zorder=3,
                # N:M patterns hollow, so 2:4 stands apart from 50% unstructured
                markerfacecolor="white" if "nm=" in name else colors[name],
            )
        if x == "sparsity":  # a fraction, linear axis
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        else:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(LogLocator(base=2))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        dodged = bool((panel_points["drawn_x"] != panel_points["x"]).any())
        ax.set_xlabel(X_LABELS[x] + ("\n(points at the same value drawn side by side)"
                                     if dodged else ""))
        if metric == "perplexity":  # lower is better, spans orders of magnitude
            _perplexity_axis(ax, low, high)
            ax.set_ylabel(f"Test perplexity ({STAGES[stage]})")
        else:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
            ax.set_ylabel(f"Test top-{metric[-1]} accuracy ({STAGES[stage]})")
        seeds = sorted(set(panel_points["seeds"]))
        ax.set_title(f"{panel}  (mean ± std over {'/'.join(map(str, seeds))} seeds)",
                     fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
        if outside:
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return figure, summary


def _perplexity_axis(ax, low: float, high: float) -> None:
    """Log y axis with plain numbers; within a decade, about six readable ticks."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    if low > 0 and high / low < 10:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.yaxis.set_minor_locator(NullLocator())


def _panel_names(frame: pd.DataFrame, panel: str) -> tuple[str, str]:
    labelled = with_labels(frame)
    row = labelled[labelled["panel"] == panel].iloc[0]
    return str(row["dataset"]), str(row["model"])


def _overlay_survey(ax, dataset: str, model: str, x: str, metric: str) -> int:
    try:
        from shrinkbench_core.survey.plot import overlay_survey
    except ImportError as error:
        raise UserError(f"--survey needs the survey module, unavailable here: {error}") from None
    return overlay_survey(ax, dataset, model, x=x, metric=metric)


def save_figure(figure: Figure, out: str | Path) -> Path:
    """Save as PNG or PDF, chosen by the suffix of ``out``."""
    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"figure file {str(path)!r} must end in {' or '.join(SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path

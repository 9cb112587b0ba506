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


@dataclass
class TradeoffSummary:
    """What a figure shows: its panels, strategies and number of runs drawn."""

    path: Path | None
    panels: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    runs: int = 0
    survey_points: dict[str, int] = field(default_factory=dict)


def _strategy_label(name: str, params: str) -> str:
    return f"{name} ({params})" if params else name


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``panel`` (dataset / model) and ``series`` (strategy + parameters) columns.

    A model's parameters join the panel name only when one (dataset, model)
    was run with several parameter sets; the pruning schedule joins the series
    name only when the runs used several schedules.
    """
    frame = frame.copy()
    schedules = frame["schedule"].fillna("oneshot") if "schedule" in frame else None
    several = schedules is not None and schedules.nunique() > 1
    frame["series"] = [
        _strategy_label(name, params) + (f" [{schedule}]" if several else "")
        for name, params, schedule in zip(
            frame["strategy"], frame["strategy_params"].fillna(""),
            schedules if schedules is not None else [""] * len(frame), strict=True,
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
    """The points of the figure: one per (panel, strategy, requested compression).

    Columns: ``panel``, ``series``, ``compression`` (requested), ``x`` (mean
    over seeds of the achieved compression or theoretical speedup), ``mean``
    and ``std`` of the accuracy over seeds (sample standard deviation; 0 for a
    single seed) and ``seeds`` (how many). Only complete runs count.
    """
    x_column, y_column = _columns(x, metric, stage)
    runs = with_labels(frame[frame["status"] == "complete"])
    runs = runs.dropna(subset=[y_column])
    runs = runs.assign(x=runs[x_column].fillna(runs["compression"]) if x == "compression"
                       else runs[x_column])
    runs = runs.dropna(subset=["x"])
    grouped = runs.groupby(["panel", "series", "compression"], sort=True)
    points = grouped.agg(
        x=("x", "mean"), mean=(y_column, "mean"), std=(y_column, "std"), seeds=(y_column, "size")
    ).reset_index()
    points["std"] = points["std"].fillna(0.0)
    return points


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
    colors = {name: colormaps["tab10"](i % 10) for i, name in enumerate(series)}
    markers = dict(zip(series, "osD^v<>pPhX*" * (len(series) // 12 + 1), strict=False))
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5.2 * columns, 4.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    summary = TradeoffSummary(None, panels, series, int(points["seeds"].sum()))
    for ax, panel in zip(axes, panels, strict=False):
        panel_points = points[points["panel"] == panel]
        if survey:
            dataset, model = _panel_names(frame, panel)
            summary.survey_points[panel] = _overlay_survey(ax, dataset, model, x, metric)
        if panel in reference.index:
            dense = reference.loc[panel]
            ax.axhline(dense["mean"], color="0.2", linestyle="--", linewidth=1, zorder=1,
                       label=f"dense ({int(dense['seeds'])} seeds)")
            if dense["std"] > 0:
                ax.axhspan(dense["mean"] - dense["std"], dense["mean"] + dense["std"],
                           color="0.5", alpha=0.15, linewidth=0, zorder=0)
        for name, group in panel_points.groupby("series", sort=True):
            group = group.sort_values("x")
            ax.errorbar(
                group["x"], group["mean"], yerr=group["std"], label=name, color=colors[name],
                marker=markers[name], markersize=4, linewidth=1.4, capsize=3, zorder=3,
            )
        if x == "sparsity":  # a fraction, linear axis
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        else:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(LogLocator(base=2))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xlabel(X_LABELS[x])
        if metric == "perplexity":  # lower is better, spans orders of magnitude
            ax.set_yscale("log")
            ax.set_ylabel(f"Test perplexity ({STAGES[stage]})")
        else:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
            ax.set_ylabel(f"Test top-{metric[-1]} accuracy ({STAGES[stage]})")
        seeds = sorted(set(panel_points["seeds"]))
        ax.set_title(f"{panel}  (mean ± std over {'/'.join(map(str, seeds))} seeds)",
                     fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return figure, summary


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

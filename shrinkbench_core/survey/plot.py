"""Figures of the literature: accuracy against compression and speedup for one pair.

:func:`plot_pair` draws the survey on its own (``shrinkbench survey plot``);
:func:`overlay_survey` adds the literature to an existing Axes, under one's own
results (``shrinkbench plot DIR --survey``). Points of one (paper, method) are
joined by a line in order of x. Only results that report both the x quantity
and the accuracy are drawn; the rest are counted in :class:`PlotSummary`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from shrinkbench_core.errors import UserError
from shrinkbench_core.survey.load import load_results
from shrinkbench_core.survey.names import (
    NameMapping,
    check_pair,
    parse_pair,
    survey_dataset_name,
    survey_model_name,
    survey_pair_for,
)
from shrinkbench_core.survey.query import filter_results

X_LABELS = {
    "compression": "Compression ratio (original / remaining parameters)",
    "speedup": "Theoretical speedup (original / remaining FLOPs)",
}
#: Names other tables use for the same x quantities (e.g. the results table of our runs).
X_ALIASES = {
    "compression": "compression",
    "compression_achieved": "compression",
    "compression_ratio": "compression",
    "speedup": "speedup",
    "theoretical_speedup": "speedup",
}
METRICS = ("top1", "top5", "delta_top1", "delta_top5")
FIGURE_SUFFIXES = (".png", ".pdf")
_MARKERS = "osD^v<>pPhX*"


def x_column(x: str) -> str:
    """The survey column for an x quantity (``compression``, ``compression_achieved``, ...)."""
    if x not in X_ALIASES:
        raise UserError(f"unknown x quantity {x!r}; choose one of {', '.join(X_ALIASES)}")
    return X_ALIASES[x]


def metric_column(metric: str) -> str:
    """The survey column for a metric (``top1``, ``finetuned_top1``, ``delta_top5``, ...)."""
    name = metric.removeprefix("finetuned_").removeprefix("pruned_")
    if name not in METRICS:
        raise UserError(f"unknown accuracy metric {metric!r}; choose one of {', '.join(METRICS)}")
    return name


def y_label(metric: str) -> str:
    """Axis label of an accuracy column."""
    k = metric[-1]
    return f"Change in top-{k} accuracy" if metric.startswith("delta") else f"Top-{k} accuracy"


def series_labels(results: pd.DataFrame) -> pd.Series:
    """One label per result naming its series: ``paper`` or ``paper (method)``."""
    method = results["method"].map(lambda m: f" ({m})" if isinstance(m, str) and m else "")
    return (results["paper"] + method).rename("series")


Style = tuple[tuple[float, ...], str]


def series_styles(results: pd.DataFrame) -> dict[str, Style]:
    """A (colour, marker) per series, the same in every panel of one figure."""
    palette = itertools.cycle(colormaps["tab20"](i) for i in range(20))
    markers = itertools.cycle(_MARKERS)
    return {name: (next(palette), next(markers)) for name in sorted(set(series_labels(results)))}


def plottable(results: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Results that report both ``x`` and ``y``."""
    return results.dropna(subset=[x, y])


def draw_literature(
    ax: Axes,
    results: pd.DataFrame,
    x: str,
    y: str,
    *,
    styles: dict[str, Style] | None = None,
    label: str = "",
) -> int:
    """Draw one line with markers per (paper, method); returns the number of points.

    With ``styles`` (see :func:`series_styles`) each series gets its colour,
    marker and legend entry; without (for overlays), every series is drawn muted
    behind other artists, in its own grey shade and marker, with its own legend
    entry ``label`` + series name, so each paper can be told apart.
    """
    points = plottable(results, x, y)
    muted = styles is None
    for index, (name, group) in enumerate(points.groupby(series_labels(points), sort=True)):
        group = group.sort_values(x)
        # a hyperparameter sweep (several points per x, or State of Sparsity's
        # runs) is a cloud, not a curve: markers only
        sweep = (group["source"] != "survey").any() or not group[x].is_unique
        curve = len(group) > 1 and not sweep
        shade = str(round(0.2 + 0.45 * (index % 4) / 3, 2))  # four greys, 0.2 to 0.65
        style = {
            "marker": _MARKERS[index % len(_MARKERS)] if muted else styles[name][1],
            "markersize": 4 if muted else 5,
            "linewidth": 0.6 if muted else 1.0,
            "linestyle": ("--" if muted else "-") if curve else "none",
            "alpha": 0.55 if muted else 0.9,
            "color": shade if muted else styles[name][0],
            "zorder": 1 if muted else 2,
            "label": f"{label}{name}" if muted else name,
        }
        ax.plot(group[x].to_numpy(), group[y].to_numpy(), **style)
    return len(points)


#: Ratios spanning at least this factor get a log-2 x axis; narrower ranges stay linear.
LOG_SPAN = 8.0
#: Top-1 below this is a run that failed to train (chance on ImageNet is 0.1%).
DIVERGED = 0.1


def above_accuracy(results: pd.DataFrame, min_accuracy: float | None, metric: str) -> pd.DataFrame:
    """Results whose absolute top-1/top-5 (``metric``'s k) is at least ``min_accuracy``.

    Results that do not report that accuracy are kept (they may still report a
    change in accuracy). ``None`` keeps everything.
    """
    if min_accuracy is None:
        return results
    column = "top5" if metric.endswith("5") else "top1"
    return results[results[column].isna() | (results[column] >= min_accuracy)]


def format_axes(ax: Axes, x: str, y: str, values: pd.Series) -> None:
    """Label the axes; log-2 x when ``values`` span a wide range; accuracy in percent."""
    values = values.dropna()
    if len(values) and values.max() >= LOG_SPAN * values.min() > 0:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(y_label(y))
    ax.grid(True, which="major", alpha=0.3)


@dataclass
class PlotSummary:
    """What :func:`plot_pair` drew and what it could not."""

    path: Path
    dataset: str
    model: str
    results: int
    papers: int
    points: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    hidden: int = 0  # results below ``min_accuracy``
    diverged: int = 0  # results drawn with top-1 below DIVERGED (when not hidden)

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"wrote {self.path}: {self.dataset} / {self.model}, {self.results} results "
                 f"from {self.papers} papers"]  # fmt: skip
        for x, count in self.points.items():
            lines.append(
                f"  {x}: {count} points drawn; {self.missing[x]} results lack {x} or accuracy "
                "(`shrinkbench survey issues` says why)"
            )
        if self.hidden:
            lines.append(f"  {self.hidden} results below --min-accuracy left out")
        if self.diverged:
            lines.append(
                f"  note: {self.diverged} results have top-1 below {DIVERGED:.0%} (runs that "
                f"diverged, e.g. State of Sparsity's); hide them with --min-accuracy {DIVERGED:g}"
            )
        return "\n".join(lines)


def _check_out(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"figure file {str(path)!r} must end in {' or '.join(FIGURE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def plot_pair(
    dataset: str,
    model: str,
    out: str | Path,
    *,
    metric: str = "top1",
    delta: bool = False,
    source: str = "survey",
    min_accuracy: float | None = None,
) -> PlotSummary:
    """Save accuracy vs compression and vs speedup of the literature for one pair.

    ``dataset``/``model`` may be ours (``cifar10``, ``resnet56``) or the
    survey's. ``delta`` plots the change in accuracy instead of its value
    (comparable across papers whose baselines differ). ``min_accuracy`` leaves
    out results whose top-k accuracy is below it (e.g. ``0.1`` hides runs that
    diverged). PNG or PDF by suffix.
    """
    path = _check_out(out)
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise UserError(f"min accuracy must be a fraction in [0, 1], got {min_accuracy}")
    y = metric_column(("delta_" if delta else "") + metric_column(metric).removeprefix("delta_"))
    every = filter_results(load_results(source), dataset=dataset, model=model)
    if every.empty:
        raise UserError(f"the survey has no results for {dataset} / {model}")
    results = above_accuracy(every, min_accuracy, y).reset_index(drop=True)
    if results.empty:
        raise UserError(
            f"no result for {dataset} / {model} reaches --min-accuracy {min_accuracy:g}"
        )
    survey_dataset, survey_model = results.loc[0, "dataset"], results.loc[0, "model"]
    summary = PlotSummary(
        path, survey_dataset, survey_model, len(results), results["paper"].nunique(),
        hidden=len(every) - len(results), diverged=int((results["top1"] < DIVERGED).sum()),
    )
    figure = Figure(figsize=(14, 5.5), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    styles = series_styles(results)
    for ax, x in zip(axes, ("compression", "speedup"), strict=True):
        drawn = draw_literature(ax, results, x, y, styles=styles)
        summary.points[x] = drawn
        summary.missing[x] = len(results) - drawn
        format_axes(ax, x, y, plottable(results, x, y)[x])
        if not drawn:
            ax.text(0.5, 0.5, f"no result reports both {x} and {y}", ha="center",
                    transform=ax.transAxes)  # fmt: skip
    axes[1].set_ylabel("")
    if not any(summary.points.values()):
        raise UserError(
            f"none of the {len(results)} results for {survey_dataset} / {survey_model} reports "
            f"{y} together with compression or speedup; try --metric top5 or --delta, or see "
            "`shrinkbench survey issues`"
        )
    handles, labels = axes[0].get_legend_handles_labels()
    more_handles, more_labels = axes[1].get_legend_handles_labels()
    legend = dict(zip(labels + more_labels, handles + more_handles, strict=True))
    figure.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize="small")
    figure.suptitle(
        f"{survey_dataset} / {survey_model}: {len(results)} results from "
        f"{summary.papers} papers (source: {source})"
    )
    figure.savefig(path, dpi=150)
    return summary


def resolve_pair(pair: str | tuple[str, str], source: str = "survey") -> tuple[str, str]:
    """A user-given survey pair (``"CIFAR-10:ResNet-56"`` or a tuple) in the survey's spelling."""
    dataset, model = parse_pair(pair) if isinstance(pair, str) else pair
    results = load_results(source)
    wanted = (
        survey_dataset_name(dataset, results["dataset"]) or dataset,
        survey_model_name(model, results["model"]) or model,
    )
    return check_pair(wanted, zip(results["dataset"], results["model"], strict=True))


def overlay_survey(
    ax: Axes,
    dataset: str,
    model: str,
    x: str = "compression",
    metric: str = "top1",
    *,
    pair: str | tuple[str, str] | None = None,
    source: str = "survey",
    mapping: NameMapping | None = None,
    min_accuracy: float | None = None,
) -> int:
    """Draw the literature's points for our (dataset, model) on ``ax``; returns how many.

    Names are mapped with :func:`~shrinkbench_core.survey.names.survey_pair_for`
    (``mapping`` or ``$SHRINKBENCH_SURVEY_NAMES``); ``pair`` (``"CIFAR-10:ResNet-56"``)
    overrides the mapping. Returns 0 when the pair has no survey results.
    ``x`` accepts ``compression``/``compression_achieved``/``speedup``;
    ``metric`` accepts ``top1``/``top5`` (optionally ``finetuned_`` prefixed)
    or ``delta_top1``/``delta_top5``. Each (paper, method) gets its own muted style
    and legend entry ``Literature: paper (method)``; ``min_accuracy`` as for
    :func:`plot_pair`. Axis scales are left to the caller.
    """
    x, y = x_column(x), metric_column(metric)
    survey = resolve_pair(pair, source) if pair is not None else None
    if survey is None:
        survey = survey_pair_for(dataset, model, mapping=mapping, source=source)
    if survey is None:
        return 0
    results = load_results(source)
    results = results[(results["dataset"] == survey[0]) & (results["model"] == survey[1])]
    results = above_accuracy(results, min_accuracy, y)
    return draw_literature(ax, results, x, y, label="Literature: ")

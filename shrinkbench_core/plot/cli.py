"""``shrinkbench plot DIR``: accuracy vs compression or theoretical speedup, per (dataset, model).

Importing this module is cheap (argparse only); pandas and matplotlib are
imported when the command runs, torch never.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plot`` to the ``shrinkbench`` parser."""
    parser = subparsers.add_parser(
        "plot",
        help="tradeoff curves of the runs under DIR (PNG or PDF)",
        description="Accuracy against compression ratio or theoretical speedup: one panel per "
        "(dataset, model), one line per strategy, mean and standard deviation over seeds, "
        "log-2 x axis, the dense accuracy as a reference line. Only complete runs are drawn; "
        "damaged ones are named on stderr. With --x sparsity a strategy's runs at several "
        "'sparsity' parameters form one line; N:M patterns (nm=2:4) are hollow markers in the "
        "strategy's colour; points at the same x are drawn side by side.",
    )
    parser.add_argument("dir", help="a sweep's output folder (or any folder of run directories)")
    parser.add_argument("--x", choices=("compression", "speedup", "sparsity"),
                        default="compression",
                        help="x axis: achieved compression ratio (default), theoretical speedup "
                        "or sparsity of the prunable layers (LM papers' axis)")
    parser.add_argument("--metric", "--y", dest="metric", choices=("top1", "top5", "perplexity"),
                        default="top1",
                        help="y axis: test accuracy (default top1) or test perplexity (log "
                        "scale; language models)")
    parser.add_argument("--stage", choices=("finetuned", "bestval", "pruned"), default="finetuned",
                        help="accuracy after the final fine-tuning epoch (default), at the epoch "
                        "with the best validation accuracy, or right after pruning")
    parser.add_argument("--out", help="figure file, .png or .pdf (default: DIR/tradeoff.png)")
    parser.add_argument("--survey", action="store_true",
                        help="draw the literature's results for the same (dataset, model) "
                        "underneath (from `shrinkbench survey`)")
    parser.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw and save the tradeoff figure."""
    from shrinkbench_core.plot.tradeoff import plot_tradeoff, save_figure
    from shrinkbench_core.results.collect import load_results

    frame = load_results(args.dir)
    damaged = frame[frame["status"] == "damaged"]
    for path, error in zip(damaged["path"], damaged["error"], strict=True):
        print(f"shrinkbench: note: skipped damaged run {path}: {error}", file=sys.stderr)
    figure, summary = plot_tradeoff(frame, x=args.x, metric=args.metric, stage=args.stage,
                                    survey=args.survey)
    path = save_figure(figure, args.out or Path(args.dir) / "tradeoff.png")
    print(f"wrote {path}: {len(summary.panels)} panel(s), {len(summary.strategies)} strategies, "
          f"{summary.runs} runs")
    for panel, count in summary.survey_points.items():
        print(f"  {panel}: {count} literature points" if count else
              f"  {panel}: the survey has no results for this (dataset, model)")
    return 0

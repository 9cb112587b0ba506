"""``shrinkbench survey``: the survey's papers, results, pairs and issues; plots of one pair.

Importing this module is cheap (argparse only); pandas and matplotlib are
imported when a command runs, torch never.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from shrinkbench_core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "json")
SOURCES = ("survey", "state-of-sparsity", "all")
KINDS = ("missing", "contradictory", "unparseable", "implausible")

_SOURCE_HELP = (
    "survey: the 551 results of the 81 papers (default); state-of-sparsity: Gale et al.'s "
    "1008 ImageNet ResNet-50 runs; all: both"
)
_NAME_HELP = "{} name, ours (e.g. {}) or the survey's (e.g. {})"


def _add_common(parser: argparse.ArgumentParser, *, columns: bool = False) -> None:
    parser.add_argument("--dataset", help=_NAME_HELP.format("dataset", "cifar10", "CIFAR-10"))
    parser.add_argument("--model", help=_NAME_HELP.format("model", "resnet56", "ResNet-56"))
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--source", choices=SOURCES, default="survey", help=_SOURCE_HELP)
    if columns:
        parser.add_argument(
            "--all-columns", action="store_true", help="every column, not the compact view"
        )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``survey`` and its commands to the ``shrinkbench`` parser."""
    survey = subparsers.add_parser(
        "survey",
        help="the literature survey: papers, results, pairs, issues, plots",
        description=(
            "Query the 81-paper pruning survey of 'What is the State of Neural Network "
            "Pruning?' (Blalock et al., MLSys 2020) and plot where a (dataset, model) pair stands."
        ),
    )
    survey.set_defaults(handler=_no_command)
    commands = survey.add_subparsers(dest="survey_command", metavar="COMMAND")

    papers = commands.add_parser("papers", help="list the surveyed papers")
    _add_common(papers, columns=True)
    papers.set_defaults(handler=papers_command)

    results = commands.add_parser("results", help="list reported results (one row each)")
    _add_common(results, columns=True)
    results.add_argument("--paper", help="only this paper (its short survey name)")
    results.set_defaults(handler=results_command)

    pairs = commands.add_parser(
        "pairs", help="(dataset, model) pairs ranked by how many results report them"
    )
    _add_common(pairs)
    pairs.add_argument("--min-results", type=int, default=1, metavar="N",
                       help="only pairs with at least N results")  # fmt: skip
    pairs.set_defaults(handler=pairs_command)

    issues = commands.add_parser(
        "issues", help="values the data cannot support (missing, contradictory, ...)"
    )
    _add_common(issues)
    issues.add_argument("--paper", help="only this paper (its short survey name)")
    issues.add_argument("--kind", choices=KINDS, help="only this kind of problem")
    issues.set_defaults(handler=issues_command)

    plot = commands.add_parser(
        "plot", help="accuracy vs compression and vs speedup of the literature for one pair"
    )
    plot.add_argument("--dataset", required=True,
                      help=_NAME_HELP.format("dataset", "cifar10", "CIFAR-10"))  # fmt: skip
    plot.add_argument("--model", required=True,
                      help=_NAME_HELP.format("model", "resnet56", "ResNet-56"))  # fmt: skip
    plot.add_argument("--metric", choices=("top1", "top5"), default="top1",
                      help="accuracy plotted (default: top1)")  # fmt: skip
    plot.add_argument("--delta", action="store_true",
                      help="plot the change from each paper's own baseline accuracy")  # fmt: skip
    plot.add_argument("--source", choices=SOURCES, default="survey", help=_SOURCE_HELP)
    plot.add_argument("--min-accuracy", type=float, metavar="FRACTION",
                      help="leave out results whose top-k accuracy is below this fraction, e.g. "
                      "0.1 hides the runs that diverged (317 of State of Sparsity's 1008 "
                      "ImageNet/ResNet-50 runs end below 10%% top-1, 308 below 1%%)")  # fmt: skip
    plot.add_argument("--out", help="figure file, .png or .pdf "
                      "(default: survey-DATASET-MODEL.png in the current directory)")  # fmt: skip
    plot.set_defaults(handler=plot_command)


def _no_command(args: argparse.Namespace) -> int:
    raise UserError("choose a survey command: papers, results, pairs, issues or plot")


def _print(table: pd.DataFrame, fmt: str) -> None:
    from shrinkbench_core.survey.formatting import render

    print(render(table, fmt))


def papers_command(args: argparse.Namespace) -> int:
    """``shrinkbench survey papers``."""
    from shrinkbench_core.survey.load import load_papers, load_results
    from shrinkbench_core.survey.query import PAPER_VIEW, papers_table

    table = papers_table(load_papers(), load_results(args.source), args.dataset, args.model)
    if not args.all_columns:
        # the readable table stays narrow; machine formats also get datasets and models
        extra = [] if args.format == "table" else ["datasets", "models"]
        table = table[PAPER_VIEW + extra]
    _print(table, args.format)
    return 0


def results_command(args: argparse.Namespace) -> int:
    """``shrinkbench survey results``."""
    from shrinkbench_core.survey.load import load_papers, load_results
    from shrinkbench_core.survey.query import RESULT_VIEW, filter_results, resolve_paper

    paper = resolve_paper(args.paper, load_papers()) if args.paper else None
    table = filter_results(load_results(args.source), args.dataset, args.model, paper)
    _print(table if args.all_columns else table[RESULT_VIEW], args.format)
    return 0


def pairs_command(args: argparse.Namespace) -> int:
    """``shrinkbench survey pairs``."""
    from shrinkbench_core.survey.load import load_results
    from shrinkbench_core.survey.query import pairs_table

    if args.min_results < 1:
        raise UserError(f"--min-results must be at least 1, got {args.min_results}")
    table = pairs_table(load_results(args.source), args.dataset, args.model, args.min_results)
    _print(table, args.format)
    return 0


def issues_command(args: argparse.Namespace) -> int:
    """``shrinkbench survey issues``."""
    from shrinkbench_core.survey.load import load_issues, load_papers, load_results
    from shrinkbench_core.survey.query import resolve_dataset, resolve_model, resolve_paper

    results = load_results(args.source)
    table = load_issues(args.source)
    if args.dataset:
        table = table[table["dataset"] == resolve_dataset(args.dataset, results)]
    if args.model:
        table = table[table["model"] == resolve_model(args.model, results)]
    if args.paper:
        table = table[table["paper"] == resolve_paper(args.paper, load_papers())]
    if args.kind:
        table = table[table["kind"] == args.kind]
    _print(table.reset_index(drop=True), args.format)
    return 0


def plot_command(args: argparse.Namespace) -> int:
    """``shrinkbench survey plot``."""
    from shrinkbench_core.survey.load import load_results
    from shrinkbench_core.survey.names import normalize
    from shrinkbench_core.survey.plot import plot_pair
    from shrinkbench_core.survey.query import resolve_dataset, resolve_model

    results = load_results(args.source)
    dataset = resolve_dataset(args.dataset, results)
    model = resolve_model(args.model, results)
    default = f"survey-{normalize(dataset)}-{normalize(model)}.png"
    out = Path(args.out) if args.out else Path(default)
    summary = plot_pair(
        dataset, model, out, metric=args.metric, delta=args.delta, source=args.source,
        min_accuracy=args.min_accuracy,
    )
    print(summary.describe())
    return 0

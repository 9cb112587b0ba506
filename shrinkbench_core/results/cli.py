"""``shrinkbench results DIR``: one row per run, as a table, CSV, Markdown or JSON.

Importing this module is cheap (argparse only); pandas is imported when the
command runs, torch never.
"""

from __future__ import annotations

import argparse

FORMATS = ("table", "csv", "markdown", "json")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``results`` to the ``shrinkbench`` parser."""
    parser = subparsers.add_parser(
        "results",
        help="collect run directories into one table (one row per run)",
        description="One row per run under DIR: dataset, model, strategy, seed, compression "
        "(requested and achieved), theoretical speedup, dense / pruned / fine-tuned test "
        "accuracy (final epoch, and the epoch with the best validation accuracy), measured "
        "speedup and latency (dense and pruned timed in turns), status and path. The terminal "
        "table shows the main columns, csv, markdown and json all of them (or --columns); "
        "table and markdown format cells as the run summary does and list failed runs with "
        "their error under the table, and damaged runs (an unreadable config.json, "
        "status.json or metrics.json) with the file and what to do.",
    )
    parser.add_argument("dir", help="a sweep's output folder, a run directory, or a folder of them")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table)")
    parser.add_argument("--status", help="only runs with this status (complete, failed, ...)")
    parser.add_argument(
        "--aggregate", action="store_true",
        help="one row per (dataset, model, strategy, schedule, compression) over the complete "
        "runs: mean ± std over seeds and the number of seeds (csv/json: _mean and _std columns)",
    )
    parser.add_argument(
        "--columns", metavar="A,B,...",
        help="comma-separated columns to show, in this order (with --aggregate, a name such as "
        "finetuned_top1 selects its mean and std); an unknown name lists the available ones",
    )
    parser.set_defaults(handler=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    """Print the results table of DIR."""
    from shrinkbench_core.results.collect import load_results
    from shrinkbench_core.results.formats import render

    frame = load_results(args.dir)
    if args.status:
        frame = frame[frame["status"] == args.status]
    if frame.empty and args.format == "table":
        print(f"no runs found under {args.dir}")
        return 0
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    aggregated = None
    if args.aggregate:
        from shrinkbench_core.results.aggregate import aggregate_results

        aggregated = aggregate_results(frame)
    print(render(frame, args.format, columns=columns, aggregated=aggregated))
    return 0

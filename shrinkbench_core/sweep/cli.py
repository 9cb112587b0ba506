"""``shrinkbench sweep FILE``: run a grid of experiments locally or on Ray.

Importing this module is cheap (argparse only): torch and the executors are
imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

EXAMPLE = """\
example sweep file (TOML; YAML and JSON work the same):

  output = "results/digits-study"
  compressions = [1, 2, 4, 8, 16, 32, 64]
  seeds = [0, 1]
  datasets = ["digits"]            # or [{name = "cifar10", params = {root = "data"}}]
  models = ["mlp"]
  [[strategies]]
  name = "GlobalMagWeight"
  [[strategies]]
  name = "LayerChannelNorm"
  params = {norm = "l2"}
  [shared]                         # any experiment field, shared by every run
  finetune = {epochs = 3}

Completed runs are skipped and interrupted ones resume, so rerunning the same
command finishes a sweep. Exit code: 0 all runs complete, 1 some failed,
2 invalid sweep file, 130 interrupted.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep`` to the ``shrinkbench`` parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of experiments (strategies x compressions x seeds x models x datasets)",
        description="Run every experiment of a sweep file that is not complete yet.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="sweep file (.toml, .yaml, .yml or .json)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local process pool (default) or Ray")
    parser.add_argument("--workers", type=int,
                        help="runs at once (local default 1; ray default: all cores of a local "
                        "instance, or as many as the cluster schedules)")
    parser.add_argument("--address",
                        help="address of an existing Ray cluster (e.g. 10.0.0.1:6379 or auto); "
                        "without it a local Ray instance is started for the sweep")
    parser.add_argument("--threads", type=int,
                        help="torch threads per run (default: cores / workers)")
    parser.add_argument("--output", help="root folder of the run directories "
                        "(overrides the sweep file's 'output')")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the expanded runs and their state; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; failures only")
    parser.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Validate the sweep, then run it (or print it with ``--dry-run``)."""
    from shrinkbench_core.errors import UserError
    from shrinkbench_core.sweep.config import expand_sweep, load_sweep_file
    from shrinkbench_core.sweep.driver import describe_plan, run_sweep

    if args.address and args.executor != "ray":
        raise UserError("--address is only used with --executor ray")
    sweep = load_sweep_file(args.file)
    if args.dry_run:
        from shrinkbench_core.registry import get_registry

        runs = expand_sweep(
            sweep, get_registry(), args.output, check_environment=args.executor == "local"
        )
        print(describe_plan(runs))
        return 0
    summary = run_sweep(
        sweep,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        threads=args.threads,
        output=args.output,
        quiet=args.quiet,
    )
    print(f"sweep {'interrupted' if summary.interrupted else 'finished'} in "
          f"{summary.seconds:.0f} s: {summary.line()}")
    print(f"results: {summary.output}  (shrinkbench results {summary.output})")
    if summary.interrupted:
        print("rerun the same command to resume", file=sys.stderr)
    return summary.exit_code

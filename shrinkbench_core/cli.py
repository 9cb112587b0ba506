"""Command-line interface: ``shrinkbench`` and ``shrinkbench-run``.

Listing commands and ``--help`` never import torch. A user's mistake is shown
as a short message with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from shrinkbench_core import __version__
from shrinkbench_core.errors import UserError

KIND_CHOICES = ("strategies", "datasets", "models", "metrics", "schedules", "trackers")
# Sub-commands contributed by other core modules: each has add_parser(subparsers).
EXTRA_COMMANDS = (
    "shrinkbench_core.sweep.cli",
    "shrinkbench_core.results.cli",
    "shrinkbench_core.plot.cli",
    "shrinkbench_core.survey.cli",
    "shrinkbench_core.exporting.cli",
    "shrinkbench_core.inspect.cli",
)


def _guard(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from shrinkbench_core.errors import show_shrinkbench_warnings

    show_shrinkbench_warnings()  # ShrinkBench warnings as one line each, no source line
    try:
        return handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


# -- plugins / list -------------------------------------------------------------
def _registry():
    from shrinkbench_core.registry import get_registry

    return get_registry()


def cmd_plugins(args: argparse.Namespace) -> int:
    """Show every plugin: name, distribution, version, hooks, status and error."""
    if getattr(args, "check", False):
        return check_plugins()
    plugins = _registry().plugins()
    if args.json:
        print(json.dumps(plugins, indent=2))
        return 0
    rows = [
        [
            p["name"],
            p["distribution"] or "-",
            p["version"] or "-",
            p["status"],
            ", ".join(h.removeprefix("shrinkbench_register_") for h in p["hooks"]) or "-",
        ]
        for p in plugins
    ]
    print(format_table(["plugin", "distribution", "version", "status", "registers"], rows))
    for plugin in plugins:
        if plugin["error"]:
            print(f"  {plugin['name']}: {plugin['error']}")
    return 0


def check_plugins() -> int:
    """Import every registered factory and check it against the contract (for plugin CI).

    Prints one ``kind name: problem`` line per problem (and per broken plugin); exit
    code 1 when any.
    """
    from shrinkbench_core.factories import factory_problem

    registry = _registry()
    problems, checked = [], 0
    for kind in KIND_CHOICES:
        for spec in registry.specs(kind):
            checked += 1
            problem = factory_problem(spec)
            if problem:
                problems.append(f"{spec.kind} {spec.name}: {problem}")
    broken = [p for p in registry.plugins() if p["status"] == "error"]
    problems += [f"plugin {p['name']}: {p['error']}" for p in broken]
    for line in problems:
        print(line)
    print(f"{checked} components checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_list(args: argparse.Namespace) -> int:
    """List registered components of one kind, optionally filtered by a pattern."""
    registry = _registry()
    specs = registry.list(args.kind, args.pattern)
    clashing = {n for n in registry.names(args.kind) if ":" in n}
    if args.json:
        print(json.dumps([spec.listing() for spec in specs], indent=2))
        return 0
    if not specs:
        print(
            f"no {args.kind} match {args.pattern!r}"
            if args.pattern
            else f"no {args.kind} registered"
        )
        filtered = [p["name"] for p in registry.plugins() if p["status"] == "disabled"]
        if filtered:
            selection = registry.manager.selection.describe()
            print(f"not loaded because of {selection}: {', '.join(filtered)}")
        return 0
    rows = []
    header = ["name", "plugin", "summary", "parameters"]
    suggested = any(getattr(spec, "config_defaults", None) for spec in specs)
    for spec in specs:
        name = spec.qualified_name if spec.qualified_name in clashing else spec.name
        params = ", ".join(f"{k}={v!r}" for k, v in spec.parameter_defaults().items()) or "-"
        rows.append([name, spec.plugin or "-", spec.summary, params])
        if suggested:  # experiment settings a dataset/model brings (used where unset)
            defaults = getattr(spec, "config_defaults", None) or {}
            rows[-1].append(", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "-")
    header += ["config defaults"] if suggested else []
    print(format_table(header, rows, max_width=None))
    return 0


def format_table(
    header: Sequence[str], rows: list[list[Any]], max_width: int | None = 80
) -> str:
    """A plain-text table; cells longer than ``max_width`` are cut.

    ``max_width=None`` fits the table to the terminal: on a terminal the widest
    columns are cut just enough to fit its width; piped output is never cut.
    """
    if max_width is None:
        max_width = _fitting_width([list(header), *rows])
    cells = [
        [str(c) if len(str(c)) <= max_width else str(c)[: max_width - 1] + "…" for c in row]
        for row in [list(header), *rows]
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fitting_width(rows: list[list[Any]]) -> int:
    """The largest cell width that keeps the table within the terminal (no limit when piped)."""
    import shutil

    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    if not sys.stdout.isatty():
        return max(widths)
    columns = shutil.get_terminal_size().columns
    limit = max(widths)
    while limit > 10 and sum(min(w, limit) for w in widths) + 2 * (len(widths) - 1) > columns:
        limit -= 1
    return limit


# -- run ------------------------------------------------------------------------
def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shrinkbench-run`` (also ``shrinkbench run``)."""
    parser.add_argument(
        "--strategy",
        help="strategy name (default: GlobalMagWeight; see `shrinkbench list strategies`)",
    )
    parser.add_argument(
        "--compression", type=float, help="all params / nonzero params, >= 1 (default: 4)"
    )
    parser.add_argument("--dataset", help="dataset name (default: digits)")
    parser.add_argument("--model", help="model name (default: mlp)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, e.g. -p finetune.epochs=3 -p strategy.norm=l2 "
        "-p dataset.root=DIR (repeatable)",
    )
    parser.add_argument("--config", help="TOML, YAML or JSON experiment file (flags override it)")
    parser.add_argument("--output", help="root folder of run directories (default: ./results)")
    parser.add_argument("--data-root", help="data root for datasets that read files")
    parser.add_argument("--seed", type=int, help="experiment seed (default 0)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument(
        "--nproc",
        type=int,
        help="train with N data-parallel processes: relaunches the command under torchrun "
        "(at most the CPU cores, or the GPUs on CUDA)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--force", action="store_true", help="redo a completed run from scratch")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of a table")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved configuration (every default, seeds, digest, run "
        "directory) as JSON and exit without running",
    )


def experiment_data_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The config file merged with flags and ``-p`` (in order), and the command line's problems.

    Flags and ``-p`` override the file; a field set twice on the command line
    with different values is a problem (see ``config.merge_command_line``).
    """
    from shrinkbench_core.config import merge_command_line, parse_assignments, read_config_file

    data: dict[str, Any] = read_config_file(args.config) if args.config else {}
    flags = {
        "strategy.name": ("--strategy", args.strategy),
        "compression": ("--compression", args.compression),
        "dataset.name": ("--dataset", args.dataset),
        "model.name": ("--model", args.model),
        "output": ("--output", args.output),
        "dataset.params.root": ("--data-root", args.data_root),
        "seed": ("--seed", args.seed),
        "device": ("--device", args.device),
    }
    settings = [(flag, key, value) for key, (flag, value) in flags.items() if value is not None]
    problems: list[str] = []
    pairs = parse_assignments(args.param, problems)
    settings += [(f"-p {key}={value}", key, value) for key, value in pairs]
    problems += merge_command_line(data, settings)
    return data, problems


def experiment_config_from_args(args: argparse.Namespace):
    """Merge the config file, flags and ``-p`` overrides into a config (names not checked)."""
    from shrinkbench_core.config import build_config
    from shrinkbench_core.errors import ConfigError

    data, problems = experiment_data_from_args(args)
    if problems:
        raise ConfigError(problems)
    return build_config(data)


def resolved_experiment_from_args(args: argparse.Namespace):
    """The fully validated experiment: every problem of the command line reported at once."""
    from shrinkbench_core.experiment.resolve import validate_experiment

    data, problems = experiment_data_from_args(args)
    title = f"invalid configuration {args.config}" if args.config else "invalid configuration"
    return validate_experiment(data, _registry(), problems, title=title)


def cmd_run(args: argparse.Namespace) -> int:
    """Run one experiment and print its summary."""
    resolved = resolved_experiment_from_args(args)
    if getattr(args, "print_config", False):
        from shrinkbench_core.inspect.config import format_resolved_config

        print(format_resolved_config(resolved))
        return 0
    from shrinkbench_core.experiment import distributed
    from shrinkbench_core.experiment.rank_failures import RankFailedError
    from shrinkbench_core.experiment.runner import Experiment
    from shrinkbench_core.experiment.summary import summary_table

    if getattr(args, "nproc", None):  # relaunch this command under torchrun
        run_args = distributed.strip_nproc(sys.argv[1:])
        return distributed.launch_torchrun(
            args.nproc, resolved.config.device, run_args, distributed.run_path(resolved)
        )
    resolved, writer = distributed.join_run(resolved)  # torchrun: rank 0 writes the results
    experiment = Experiment(resolved, quiet=args.quiet or not writer)
    try:
        result = experiment.run(force=args.force)
    except KeyboardInterrupt:
        if not writer:  # another DDP rank: rank 0 reports where the progress is
            return 130
        print(
            f"\ninterrupted: progress saved in {experiment.run_dir.path}\n"
            "rerun the same command to resume from the last completed epoch",
            file=sys.stderr,
        )
        return 130
    except RankFailedError as error:  # a data-parallel rank failed: already reported
        return error.exit_code
    except UserError as error:  # found only while running: the run directory says so
        print(f"error: {error}", file=sys.stderr)
        if writer and experiment.run_dir.status().get("status") == "failed":
            print(f"the run is marked failed in {experiment.run_dir.path}", file=sys.stderr)
        return error.exit_code
    if not writer:
        return 0
    if args.json:
        print(json.dumps(result.metrics, indent=2))
        return 0
    if result.already_complete:
        print(f"already complete: {result.path} (use --force to redo it)")
    elif result.resumed_from_epoch is not None:
        print(f"resumed after epoch {result.resumed_from_epoch}")
    print(summary_table(result.metrics))
    print(f"results: {result.path}")
    return 0


# -- parsers --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``shrinkbench`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="shrinkbench",
        description="Standardized evaluation of neural-network pruning methods.",
    )
    parser.add_argument("--version", action="version", version=f"shrinkbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = sub.add_parser("plugins", help="show installed plugins and their status")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument(
        "--check",
        action="store_true",
        help="import every registered factory and check it against the plugin contract "
        "(exit code 1 on any problem)",
    )
    plugins.set_defaults(handler=cmd_plugins)
    listing = sub.add_parser("list", help="list registered strategies, datasets, models, metrics")
    listing.add_argument("kind", choices=KIND_CHOICES)
    listing.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'Global*'")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=cmd_list)
    run = sub.add_parser("run", help="run one experiment (same as shrinkbench-run)")
    add_run_arguments(run)
    run.set_defaults(handler=cmd_run)
    for module_name in EXTRA_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # that command is not part of this installation
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``shrinkbench``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return _guard(args.handler, args)


def run_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``shrinkbench-run``."""
    args = build_run_parser().parse_args(argv)
    return _guard(cmd_run, args)


def build_run_parser() -> argparse.ArgumentParser:
    """The ``shrinkbench-run`` parser."""
    parser = argparse.ArgumentParser(
        prog="shrinkbench-run",
        description="Prune a model with a strategy, fine-tune it and report accuracy, compression "
        "and speedup. Defaults: strategy GlobalMagWeight at compression 4, dataset digits "
        "(embedded), model mlp.",
    )
    add_run_arguments(parser)
    parser.add_argument("--version", action="version", version=f"shrinkbench-run {__version__}")
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``shrinkbench show RUN_DIR`` and ``shrinkbench show {strategy,dataset,model,metric} NAME``."""

from __future__ import annotations

import argparse
import json

from shrinkbench_core.errors import UserError

USAGE = (
    "shrinkbench show RUN_DIR | "
    "shrinkbench show {strategy,dataset,model,metric,schedule,tracker} NAME"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``show`` to the ``shrinkbench`` parser."""
    parser = subparsers.add_parser(
        "show",
        help="show a run directory, or a strategy/dataset/model/metric with every parameter",
        description="Show a run directory (config, metrics per stage, per-layer sparsity, "
        "training curve) or a registered component (summary, reference, every parameter "
        "with its type, default and description).",
        usage=USAGE,
    )
    parser.add_argument("target", metavar="RUN_DIR|KIND", help="a run directory, or a kind")
    parser.add_argument("name", nargs="?", metavar="NAME", help="component name (with a kind)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    """Print a run directory or a component."""
    from shrinkbench_core.inspect.component import KIND_WORDS

    if args.target in KIND_WORDS and args.name is None:
        raise UserError(f"`show {args.target}` needs a NAME (usage: {USAGE})")
    if args.target in KIND_WORDS:
        return _show_component(KIND_WORDS[args.target], args.name, args.json)
    if args.name is not None:
        raise UserError(
            f"unknown kind {args.target!r}; choose one of: "
            f"{', '.join(sorted(set(KIND_WORDS.values())))} (usage: {USAGE})"
        )
    from shrinkbench_core.inspect.run import format_run, show_run

    info = show_run(args.target)
    print(json.dumps(info, indent=2) if args.json else format_run(info))
    return 0


def _show_component(kind: str, name: str, as_json: bool) -> int:
    from shrinkbench_core.inspect.component import component_details, format_component
    from shrinkbench_core.registry import get_registry

    spec = get_registry().get(kind, name)
    print(json.dumps(component_details(spec), indent=2) if as_json else format_component(spec))
    return 0

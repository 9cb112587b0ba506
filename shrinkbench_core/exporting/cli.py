"""``shrinkbench export RUN_DIR --format pt|safetensors|onnx [--shrink] --out FILE``."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``shrinkbench`` parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a finished run's model (masks baked in) to pt, safetensors or onnx",
        description="Export the fine-tuned model of a completed run, masks baked in, to a "
        "file that loads without ShrinkBench; the file is read back and checked against the "
        "model on an example input before it is kept.",
        epilog="formats: pt = torch.export program (torch.export.load(FILE).module()); "
        "safetensors = state dict + architecture metadata; onnx = checked with onnxruntime. "
        "safetensors and onnx need: pip install 'shrinkbench-core[export]'",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a completed run directory")
    parser.add_argument("--format", choices=("pt", "safetensors", "onnx"),
                        help="file format (default: from the --out suffix)")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write")
    parser.add_argument("--shrink", action="store_true",
                        help="physically remove pruned channels first (channel strategies)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export one run; print where, how big, and the check's difference."""
    from shrinkbench_core.exporting.core import export_model

    result = export_model(args.run_dir, args.out, format=args.format, shrink=args.shrink)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0

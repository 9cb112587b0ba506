"""ShrinkBench vs Torch-Pruning: structured pruning of torchvision models, side by side.

Run: python benchmarks/bench_structured_peers.py [--models a,b] [--size 224] [--batch 8]
     [--repeats 3] [--memory-gb 6] [--timeout 600] [--grouped channels|groups]

For each model (random weights, as in ``structured_coverage.py``), both tools remove
half of every channel group at an equal uniform per-group ratio: ShrinkBench's
uniform lowest-L1 selection of removal units (``-p strategy.uniform=true``) then a
verified shrink; Torch-Pruning 1.6 ``MagnitudePruner(pruning_ratio=0.5)`` with L1
group importance, the classifier ignored (it checks nothing). Printed per tool:
whether it produced a working model, the wall time and the peak resident memory
(above the level before, sampled every 5 ms) of analysis plus shrinking, the
parameter and multiply-add (MAC) compression, and the measured speedup of the
pruned model over the dense one (the minimum of ``--repeats`` forward passes of a
``--batch`` of ``--size`` pixels, one thread, the two models timed in turns).
Each tool runs on each model in its own child process with an address-space
limit (``--memory-gb``, default 6 GB) and a time limit, so a tool that needs too
much memory fails alone and the shared machine stays usable. ``--grouped groups``
makes ShrinkBench remove whole groups of grouped convolutions (ResNeXt, RegNet).
The parameter compression on all 80 torchvision classifiers, beside Torch-Pruning's,
is ``structured_coverage.py --peer``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Any

import torch
from structured_coverage import PeakMemory, build, classifier_of, isolated, macs

MODELS = [
    "resnet50", "densenet121", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
    "regnet_y_800mf", "resnext50_32x4d", "shufflenet_v2_x1_0", "convnext_tiny", "vit_b_16",
    "swin_t", "googlenet",
]  # fmt: skip


def settings(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated torchvision model names")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--batch", type=int, default=8, help="inputs per timed forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per model")
    parser.add_argument("--share", type=float, default=0.5, help="per-group pruning ratio")
    parser.add_argument("--grouped", choices=("channels", "groups"), default="channels",
                        help="ours: grouped convolutions lose as many channels per group, or "
                        "whole groups")
    parser.add_argument("--memory-gb", type=float, default=6.0,
                        help="address-space limit of each model's child process, in GB")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for each model's result")
    return parser.parse_args(argv)


def speedup(dense: torch.nn.Module, pruned: torch.nn.Module, args: argparse.Namespace) -> float:
    from shrinkbench_core.pruning.shrink import measure_latencies

    batch = torch.randn(args.batch, 3, args.size, args.size)
    dense_s, pruned_s = measure_latencies([dense, pruned], batch, args.repeats, 1, "min")
    return dense_s / pruned_s


def run_ours(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from shrinkbench_core.pruning.channels.selection import lowest_norm_channels
    from shrinkbench_core.pruning.shrink import shrink_model
    from shrinkbench_core.pruning.structured import analyze_channels, mask_channels

    model = build(name)
    example = torch.randn(1, 3, args.size, args.size)
    start = time.perf_counter()
    with PeakMemory() as memory:
        analysis = analyze_channels(model, example)
        chosen = lowest_norm_channels(model, analysis.groups(), args.share, args.grouped)
        result = shrink_model(model, mask_channels(model, chosen), example, analysis=analysis)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mb": memory.bytes / 2**20,
        "params": result.compression,
        "macs": macs(model, example) / macs(result.model, example),
        "speedup": speedup(model, result.model, args),
        "note": f"verified, {len(result.unsupported)} unsupported",
    }


def run_peer(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch_pruning as tp

    model = build(name)
    dense = copy.deepcopy(model)
    example = torch.randn(1, 3, args.size, args.size)
    before = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    with PeakMemory() as memory:
        pruner = tp.pruner.MagnitudePruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=args.share,
            ignored_layers=[classifier_of(model)],
        )
        pruner.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        model.eval()(example)  # a pruned model that no longer runs is a failure
    return {
        "seconds": seconds,
        "peak_mb": memory.bytes / 2**20,
        "params": before / sum(p.numel() for p in model.parameters()),
        "macs": macs(dense, example) / macs(model, example),
        "speedup": speedup(dense, model, args),
        "note": "not verified",
    }


def cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"failed: {result['error'][:70]}"
    return (
        f"{result['seconds']:6.1f}s {result['peak_mb']:7.0f}MB {result['params']:5.2f}x "
        f"{result['macs']:5.2f}x {result['speedup']:5.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    args = settings(argv)
    print(
        f"torch {torch.__version__}, input {args.size}px, per-group ratio {args.share}, "
        f"speed at batch {args.batch} on 1 thread (min of {args.repeats}), memory limit "
        f"{args.memory_gb:g} GB per run, load average {os.getloadavg()[0]:.1f}"
    )
    columns = "time    peak mem  params  MACs  speedup"
    print(f"{'model':20s} | ShrinkBench {columns} | Torch-Pruning {columns}")
    rows = []
    for name in args.models.split(","):
        mine = isolated(lambda n: run_ours(n, args), name, args.memory_gb, args.timeout)
        theirs = isolated(lambda n: run_peer(n, args), name, args.memory_gb, args.timeout)
        rows.append((name, mine, theirs))
        print(f"{name:20s} | {cell(mine):52s} | {cell(theirs)}", flush=True)
    both = [(m, t) for _, m, t in rows if "error" not in m and "error" not in t]
    print(
        f"ShrinkBench produced {sum('error' not in m for _, m, _ in rows)}/{len(rows)} working "
        f"(verified) models, Torch-Pruning {sum('error' not in t for _, _, t in rows)}/{len(rows)}"
    )
    labels = {"seconds": "time", "peak_mb": "peak memory", "params": "parameter compression",
              "speedup": "speedup"}  # fmt: skip
    for key, label in labels.items() if both else ():
        ratios = sorted(m[key] / max(t[key], 1e-9) for m, t in both)
        middle = ratios[len(ratios) // 2]
        print(f"  ShrinkBench / Torch-Pruning {label}: median {middle:.2f} "
              f"[{ratios[0]:.2f}-{ratios[-1]:.2f}] over {len(both)} models")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

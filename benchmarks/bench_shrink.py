"""Does channel pruning make the model faster? Masked vs physically shrunk, on CPU.

Run: python benchmarks/bench_shrink.py [--repeats N] [--batch N] [--threads N] [--size PX]

For torchvision resnet18 (ImageNet input, ``--size`` pixels) and the CIFAR resnet56
(32x32), tied channels are pruned by lowest L1 norm, the same fraction of the
removable channels in every channel group (each group keeping a multiple of
``--round-to`` channels), with the fraction chosen (bisection) so that the
parameter compression (all / remaining) reaches 2x and 4x. For each
setting the script prints, side by side:

* theoretical speedup: dense MACs / MACs of nonzero weights of the masked model;
* measured speedup of the masked model (weights zeroed in place: expected ~1x);
* measured speedup of the shrunk model (channels physically removed);
* shrunk / theoretical, against the target of at least 0.7 at batch 32.

Latencies are the minimum (or, with ``--statistic median``, the median) of
``--repeats`` forward passes in eval mode under ``torch.no_grad``, the three models
timed in turns so that load changes hit them alike; the minimum is the best estimate
of the uncontended time on a shared machine. ``--clock cpu`` times this process's CPU
time instead of wall time: with ``--threads 1`` that is the latency on a core of its
own, unaffected by other processes waiting for the CPU. The load average is printed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch
import torchvision
from torch import nn

from shrinkbench_core.pruning.shrink import shrink_model, structured_speedups
from shrinkbench_core.pruning.structured import (
    ChannelAnalysis,
    ChannelGroup,
    analyze_channels,
    channel_norms,
    mask_channels,
)

TARGET_RATIO = 0.7


def channel_masks(
    model: nn.Module, groups: list[ChannelGroup], fraction: float, round_to: int
) -> dict:
    """Remove ``fraction`` of the removable tied channels of every group, lowest L1 first.

    Each group keeps a multiple of ``round_to`` channels (where it has that many):
    convolution kernels run at full speed only on such channel counts.
    """
    chosen = []
    for group in groups:
        removable = group.removable
        keep = group.size - round(fraction * len(removable))
        if group.size >= round_to:
            keep = min(group.size, math.ceil(keep / round_to) * round_to)
        count = min(group.size - keep, len(removable) - 1)
        if count <= 0:
            continue
        norms = channel_norms(model, group)[removable]
        chosen += [group.channels[removable[i]] for i in torch.argsort(norms)[:count].tolist()]
    return mask_channels(model, chosen)


def remaining_parameters(model: nn.Module, analysis: ChannelAnalysis, masks: dict) -> int:
    """Parameters left after shrinking: all minus every entry the completed masks drop."""
    completed = analysis.complete(model, masks)
    total = sum(p.numel() for p in model.parameters())
    return total - sum(int((~mask).sum()) for mask in completed.values())


def masks_for_compression(
    model: nn.Module, analysis: ChannelAnalysis, compression: float, round_to: int
) -> tuple[dict, float]:
    """Channel masks reaching ``compression`` (bisection on the pruned fraction)."""
    total = sum(p.numel() for p in model.parameters())
    groups = analysis.groups()
    low, high = 0.0, 1.0
    for _ in range(10):
        middle = (low + high) / 2
        masks = channel_masks(model, groups, middle, round_to)
        kept = remaining_parameters(model, analysis, masks)
        low, high = (low, middle) if total / kept >= compression else (middle, high)
    return channel_masks(model, groups, high, round_to), high


def build(name: str, size: int) -> tuple[nn.Module, tuple[int, int, int]]:
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None), (3, size, size)
    from shrinkbench_cifar.models import resnet56

    return resnet56(num_classes=10), (3, 32, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--statistic", choices=["min", "median"], default="min")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (use with --threads 1 on a "
        "busy machine: it is the latency on a core of its own)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="resnet18 input size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet56"])
    parser.add_argument("--compressions", nargs="+", type=float, default=[2.0, 4.0])
    parser.add_argument(
        "--round-to", type=int, default=8, help="keep a multiple of this many channels per group"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, batch {args.batch}, {args.statistic} {args.clock} time of "
        f"{args.repeats} runs, "
        f"channels kept in multiples of {args.round_to}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'model':9s} {'input':11s} {'target':>6s} {'compr.':>6s} {'theory':>7s} "
        f"{'masked':>7s} {'shrunk':>7s} {'shrunk/theory':>13s} {'dense ms':>9s} "
        f"{'shrunk ms':>9s}  target>={TARGET_RATIO}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        model, shape = build(name, args.size)
        model.eval()
        example = torch.randn(1, *shape)
        batch = torch.randn(args.batch, *shape)
        analysis = analyze_channels(model, example)
        for compression in args.compressions:
            start = time.perf_counter()
            masks, fraction = masks_for_compression(model, analysis, compression, args.round_to)
            result = shrink_model(model, masks, example, analysis=analysis)
            report = structured_speedups(
                model,
                masks,
                batch,
                repeats=args.repeats,
                warmup=args.warmup,
                shrunk=result,
                statistic=args.statistic,
                clock=time.process_time if args.clock == "cpu" else time.perf_counter,
            )
            ratio = report["shrunk_speedup"] / report["theoretical_speedup"]
            print(
                f"{name:9s} {'x'.join(map(str, shape)):11s} {compression:5.1f}x "
                f"{result.compression:5.2f}x {report['theoretical_speedup']:6.2f}x "
                f"{report['masked_speedup']:6.2f}x {report['shrunk_speedup']:6.2f}x "
                f"{ratio:13.2f} {1e3 * report['dense_latency_s']:9.1f} "
                f"{1e3 * report['shrunk_latency_s']:9.1f}  "
                f"{'met' if ratio >= TARGET_RATIO else 'NOT met'} "
                f"(pruned {fraction:.0%} of removable channels, "
                f"{time.perf_counter() - start:.0f}s)",
                flush=True,
            )
        for entry in result.unsupported:
            print(f"    kept by an unsupported pattern: {entry}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Does channel pruning make the model faster? Masked vs physically shrunk, on CPU.

Run: python benchmarks/bench_shrink.py [--processes N] [--channels-last] [--kernels] [--batch N]

For torchvision resnet18 (ImageNet input, ``--size`` pixels) and the CIFAR resnet56
(32x32), tied channels are pruned by lowest L1 norm in steps of ``--round-to``
channels of one channel group (so each group keeps a multiple of that many), the
group with the smallest pruned share first, taking the fewest steps (bisection)
that reach a parameter compression (all / remaining) of 2x and 4x. For each
setting the script prints, side by side:

* theoretical speedup: dense MACs / MACs of nonzero weights of the masked model;
* measured speedup of the masked model (weights zeroed in place: expected ~1x);
* measured speedup of the shrunk model (channels physically removed);
* shrunk / theoretical, against the target of at least 0.7 at batch 32.

Latencies are the minimum (or, with ``--statistic median``, the median) of at
least ``--repeats`` forward passes (more for fast models, see ``--seconds``) in
eval mode under ``torch.no_grad``, the three models timed in turns so that load
changes hit them alike; the minimum is the best estimate of the uncontended time
on a shared machine. ``--clock cpu`` times this process's CPU time instead of wall
time: with ``--threads 1`` that is the latency on a core of its own, unaffected by
other processes waiting for the CPU. The load average is printed. ``--processes N``
repeats everything in N fresh processes and prints the median and range of each figure.
Freed memory is kept in the process while timing (see
``shrinkbench_core.metrics.allocator``): otherwise every forward pass faults its
activations' pages in anew, and the dense resnet56 ran up to 2x slower in some
processes than in others. ``--channels-last`` times all models in NHWC layout.
``--kernels`` also times each distinct convolution alone and prints its throughput:
shrunk/theory equals the shrunk model's multiply-adds per second over the dense
model's, and narrow convolutions (8 to 32 channels) run at a fraction of the
throughput of wide ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torchvision
from torch import nn

from shrinkbench_core.metrics.flops import count_flops
from shrinkbench_core.pruning.shrink import shrink_model, structured_speedups
from shrinkbench_core.pruning.structured import (
    ChannelAnalysis,
    ChannelGroup,
    analyze_channels,
    channel_norms,
    mask_channels,
)

TARGET_RATIO = 0.7


def removal_steps(groups: list[ChannelGroup], round_to: int) -> list[tuple[int, int]]:
    """``(group, channels removed)`` steps, fewest removed (as a share of the group) first.

    Each step removes ``round_to`` more channels of one group (or, in groups smaller
    than that, one channel), so every group keeps a multiple of ``round_to`` channels
    (where it has that many): convolution kernels run at full speed only on such
    counts. Every group keeps at least one block. Taking a prefix of the steps
    prunes every group by about the same share, with the share growing in small
    increments, so a target compression is reached closely.
    """
    steps = []
    for index, group in enumerate(groups):
        removable = len(group.removable)
        block = round_to if group.size >= 2 * round_to else 1
        most = min(removable, group.size - block) if block > 1 else removable - 1
        if block > 1:
            most -= (group.size - most) % block  # keep a multiple of the block
        for removed in range(block, most + 1, block):
            steps.append((removed / group.size, -group.size, index, removed))
    steps.sort()
    return [(index, removed) for _, _, index, removed in steps]


def channel_masks(
    model: nn.Module, groups: list[ChannelGroup], steps: list[tuple[int, int]]
) -> dict:
    """Masks removing, in each group, its lowest-L1 removable channels as ``steps`` say."""
    removed = {index: count for index, count in steps}  # later steps of a group remove more
    chosen = []
    for index, count in removed.items():
        group = groups[index]
        norms = channel_norms(model, group)[group.removable]
        order = torch.argsort(norms)[:count].tolist()
        chosen += [group.channels[group.removable[i]] for i in order]
    return mask_channels(model, chosen)


def remaining_parameters(model: nn.Module, analysis: ChannelAnalysis, masks: dict) -> int:
    """Parameters left after shrinking: all minus every entry the completed masks drop."""
    completed = analysis.complete(model, masks)
    total = sum(p.numel() for p in model.parameters())
    return total - sum(int((~mask).sum()) for mask in completed.values())


def masks_for_compression(
    model: nn.Module,
    analysis: ChannelAnalysis,
    compression: float,
    round_to: int,
) -> tuple[dict, float]:
    """Channel masks reaching ``compression``: the shortest prefix of the removal steps."""
    total = sum(p.numel() for p in model.parameters())
    groups = analysis.groups()
    steps = removal_steps(groups, round_to)
    low, high = 0, len(steps)  # bisection on the number of steps taken
    while low < high:
        middle = (low + high) // 2
        kept = remaining_parameters(model, analysis, channel_masks(model, groups, steps[:middle]))
        low, high = (low, middle) if total / kept >= compression else (middle + 1, high)
    taken = steps[:high]
    removed = dict(taken)
    share = sum(removed.values()) / sum(len(g.removable) for g in groups)
    return channel_masks(model, groups, taken), share


def conv_throughput(model: nn.Module, batch: torch.Tensor, repeats: int) -> list[str]:
    """Each distinct convolution of ``model`` timed alone on its input: ms and GMAC/s.

    Explains a shrunk/theory ratio below 1: it equals the shrunk model's throughput
    (multiply-adds per second) over the dense model's, and narrow convolutions run
    below the throughput of wide ones.
    """
    seen: dict[tuple, tuple[nn.Conv2d, torch.Tensor, int]] = {}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        shape = (module.in_channels, module.out_channels, module.kernel_size, module.stride)
        key = (*shape, module.groups, tuple(inputs[0].shape[2:]))
        _, _, count = seen.get(key, (module, inputs[0], 0))
        seen[key] = (module, inputs[0], count + 1)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    lines = []
    with torch.no_grad():
        for (cin, cout, kernel, stride, groups, size), (conv, x, count) in sorted(seen.items()):
            macs = count_flops(conv, x).macs  # also the warm-up pass
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - start)
            lines.append(
                f"{count:3d} x conv {cin:4d}->{cout:<4d} {kernel[0]}x{kernel[1]}/{stride[0]}"
                f"{f' groups {groups}' if groups > 1 else ''} "
                f"at {size[0]}x{size[1]}: {1e3 * best:7.3f} ms, {macs / best / 1e9:5.1f} GMAC/s"
            )
    return lines


def onnxruntime_latencies(
    models: list[nn.Module], batch: torch.Tensor, repeats: int, threads: int
) -> list[float] | None:
    """Seconds per forward of ``batch`` for each model exported to ONNX and run in ONNX
    Runtime (CPU, ``threads`` intra-op threads): the minimum of ``repeats`` runs, models
    timed in turns. None when onnx or onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    import io
    import warnings

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = []
    for model in models:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (batch,), buffer, dynamo=False,
                              input_names=["input"], output_names=["output"])  # fmt: skip
        sessions.append(onnxruntime.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]))  # fmt: skip
    feed = {"input": batch.contiguous().numpy()}
    best = [math.inf] * len(sessions)
    for session in sessions:
        session.run(None, feed)  # warm-up
    for _ in range(repeats):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feed)
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def build(name: str, size: int) -> tuple[nn.Module, tuple[int, int, int]]:
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None), (3, size, size)
    from shrinkbench_cifar.models import resnet56

    return resnet56(num_classes=10), (3, 32, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="timed runs per model, at least; more for fast models so that each model is "
        "timed for about --seconds (a short window can miss the machine's quiet moments)",
    )
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="time each model for about this long (more repeats when fast)")
    parser.add_argument("--statistic", choices=["min", "median"], default="min",
                        help="which statistic of the timed runs is reported")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (use with --threads 1 on a "
        "busy machine: it is the latency on a core of its own)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--batch", type=int, default=32, help="inputs per forward pass")
    parser.add_argument("--size", type=int, default=224, help="resnet18 input size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: all)")
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet56"],
                        help="models to prune, shrink and time")
    parser.add_argument("--compressions", nargs="+", type=float, default=[2.0, 4.0],
                        help="requested compression ratios")
    parser.add_argument(
        "--round-to", type=int, default=8, help="keep a multiple of this many channels per group"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="repeat the whole measurement in this many fresh processes and print the median "
        "and range of each figure (the same model's latency differs between processes here)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="time every model and batch in channels_last memory format (NHWC), the layout "
        "oneDNN prefers on CPU",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="also time each distinct convolution of the dense and shrunk models alone "
        "and print its throughput (GMAC/s): why shrunk/theory falls below 1",
    )
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="skip the ONNX Runtime latencies of the dense and shrunk models",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes > 1:
        across_processes(args)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.json:
        print(
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
            f"{args.threads} threads, batch {args.batch}, {args.statistic} {args.clock} time of "
            f">= {args.repeats} runs (>= {args.seconds:g} s per model), "
            f"channels kept in multiples of {args.round_to}, "
            f"{'channels_last' if args.channels_last else 'contiguous (NCHW)'} layout, "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
    header = (
        f"{'model':9s} {'input':11s} {'target':>6s} {'compr.':>6s} {'theory':>7s} "
        f"{'masked':>7s} {'shrunk':>7s} {'shrunk/theory':>13s} {'dense ms':>9s} "
        f"{'shrunk ms':>9s}  target>={TARGET_RATIO}"
    )
    if not args.json:
        print(header)
        print("-" * len(header))
    for name in args.models:
        model, shape = build(name, args.size)
        model.eval()
        example = torch.randn(1, *shape)
        batch = torch.randn(args.batch, *shape)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
            batch = batch.contiguous(memory_format=torch.channels_last)
        analysis = analyze_channels(model, example)
        with torch.no_grad():
            model(batch)  # warm-up, then one timed pass to size the number of repeats
            start = time.perf_counter()
            model(batch)
            repeats = max(args.repeats, math.ceil(args.seconds / (time.perf_counter() - start)))
        for compression in args.compressions:
            start = time.perf_counter()
            masks, fraction = masks_for_compression(model, analysis, compression, args.round_to)
            result = shrink_model(model, masks, example, analysis=analysis)
            if args.channels_last:
                result.model.to(memory_format=torch.channels_last)
            report = structured_speedups(
                model,
                masks,
                batch,
                repeats=repeats,
                warmup=args.warmup,
                shrunk=result,
                statistic=args.statistic,
                clock=time.process_time if args.clock == "cpu" else time.perf_counter,
            )
            ratio = report["shrunk_speedup"] / report["theoretical_speedup"]
            ort = None if args.no_onnx else onnxruntime_latencies(
                [model, result.model], batch, max(args.repeats, 5), args.threads
            )
            ort_speedup = ort[0] / ort[1] if ort else None
            if args.json:
                print(
                    json.dumps(
                        {
                            "model": name,
                            "target": compression,
                            "ratio": ratio,
                            "theory": report["theoretical_speedup"],
                            "shrunk": report["shrunk_speedup"],
                            "masked": report["masked_speedup"],
                            "compression": result.compression,
                            "ort_speedup": ort_speedup,
                        }
                    ),
                    flush=True,
                )
                continue
            print(
                f"{name:9s} {'x'.join(map(str, shape)):11s} {compression:5.1f}x "
                f"{result.compression:5.2f}x {report['theoretical_speedup']:6.2f}x "
                f"{report['masked_speedup']:6.2f}x {report['shrunk_speedup']:6.2f}x "
                f"{ratio:13.2f} {1e3 * report['dense_latency_s']:9.1f} "
                f"{1e3 * report['shrunk_latency_s']:9.1f}  "
                f"{'met' if ratio >= TARGET_RATIO else 'NOT met'} "
                + (f"| onnxruntime dense {1e3 * ort[0]:.1f} ms, shrunk {1e3 * ort[1]:.1f} ms, "
                   f"speedup {ort_speedup:.2f}x " if ort else "")  # fmt: skip
                + f"(pruned {fraction:.0%} of removable channels, {repeats} runs, "
                f"{time.perf_counter() - start:.0f}s)",
                flush=True,
            )
            if args.kernels:
                for label, net in (("dense", model), ("shrunk", result.model)):
                    print(f"  {label} {name}, each convolution alone (min of 20):")
                    for line in conv_throughput(net, batch, 20):
                        print(f"    {line}")
        for entry in result.unsupported:
            print(f"    kept by an unsupported pattern: {entry}", file=sys.stderr)
    if not args.json:
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


def across_processes(args: argparse.Namespace) -> None:
    """Run the measurement in ``args.processes`` fresh processes; print medians and ranges."""
    forwarded = [a for a in sys.argv[1:] if not a.startswith("--processes")]
    if "--processes" in sys.argv:  # drop the value that followed a separate flag
        index = sys.argv.index("--processes")
        forwarded = sys.argv[1:index] + sys.argv[index + 2 :]
    rows: dict[tuple[str, float], list[dict]] = {}
    for run in range(args.processes):
        out = subprocess.run(
            [sys.executable, __file__, *forwarded, "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows.setdefault((row["model"], row["target"]), []).append(row)
        print(f"  process {run + 1}/{args.processes} done", file=sys.stderr, flush=True)
    print(
        f"median [min-max] over {args.processes} fresh processes, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'model':9s} {'target':>6s} {'compr.':>6s} {'theory':>7s} {'masked':>7s} "
        f"{'shrunk':>7s}  shrunk/theory"
    )
    for (name, target), found in rows.items():
        ratios = sorted(r["ratio"] for r in found)
        middle = statistics.median(ratios)
        print(
            f"{name:9s} {target:5.1f}x {statistics.median(r['compression'] for r in found):5.2f}x "
            f"{statistics.median(r['theory'] for r in found):6.2f}x "
            f"{statistics.median(r['masked'] for r in found):6.2f}x "
            f"{statistics.median(r['shrunk'] for r in found):6.2f}x  "
            f"{middle:.2f} [{ratios[0]:.2f}-{ratios[-1]:.2f}] "
            f"{'met' if middle >= TARGET_RATIO else 'NOT met'}"
            + (
                f"  onnxruntime shrunk speedup "
                f"{statistics.median(r['ort_speedup'] for r in found):.2f}x"
                if all(r.get("ort_speedup") for r in found)
                else ""
            )
        )


if __name__ == "__main__":
    main()

"""Cost of the size and FLOPs metrics on pruned resnet50 and vit_b_16.

For each model (random weights, every prunable weight 50% magnitude-pruned,
classifier dense), measured in one run on this machine, batch 1, 224x224:

* dense forward time (median of repeated forward passes, eval, no_grad);
* time of ``count_parameters`` (size) and ``count_flops`` (FLOPs) on the pruned
  model, and each as a multiple of the forward time;
* the peer: ``torch.utils.flop_counter.FlopCounterMode`` (dense totals only, no
  sparsity, no per-weight attribution), its time and the MACs it reports;
* the MACs torchvision publishes (``Weights.meta["_ops"]``).

Run: ``python benchmarks/bench_metrics.py [--repeats N] [--models resnet50,vit_b_16]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model, get_model_weights

from shrinkbench_core.metrics.flops import count_flops
from shrinkbench_core.metrics.latency import measure_latency
from shrinkbench_core.metrics.size import count_parameters
from shrinkbench_core.pruning.masks import apply_masks
from shrinkbench_core.pruning.prunable import find_classifier, prunable_parameters


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prune_half_by_magnitude(model: torch.nn.Module, example: torch.Tensor) -> list[str]:
    """Zero the smaller half (by magnitude) of every prunable weight; returns their names."""
    names = prunable_parameters(model, classifier=find_classifier(model, example))
    params = dict(model.named_parameters())
    masks = {}
    for name in names:
        magnitude = params[name].detach().abs()
        threshold = magnitude.flatten().kthvalue(magnitude.numel() // 2).values
        masks[name] = magnitude > threshold
    apply_masks(model, masks)
    return names


def peer_flop_counter(model: torch.nn.Module, example: torch.Tensor) -> int:
    """MACs from torch's FlopCounterMode (which reports FLOPs = 2 x MACs)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    return counter.get_total_flops() // 2


def bench(name: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = get_model(name, weights=None).eval()
    example = torch.randn(1, 3, 224, 224)
    forward = measure_latency(model, example, warmup=2, repeats=repeats).median_ms / 1000
    prunable = prune_half_by_magnitude(model, example)

    size_s = median_seconds(lambda: count_parameters(model, prunable), repeats)
    flops_s = median_seconds(lambda: count_flops(model, example), repeats)
    peer_s = median_seconds(lambda: peer_flop_counter(model, example), repeats)
    size = count_parameters(model, prunable)
    report = count_flops(model, example)
    return {
        "forward_ms": forward * 1000,
        "size_ms": size_s * 1000,
        "flops_ms": flops_s * 1000,
        "size_per_forward": size_s / forward,
        "flops_per_forward": flops_s / forward,
        "peer_ms": peer_s * 1000,
        "flops_per_peer": flops_s / peer_s,
        "gmacs": report.macs / 1e9,
        "peer_gmacs": peer_flop_counter(model, example) / 1e9,
        "published_gmacs": get_model_weights(name).DEFAULT.meta["_ops"],
        "nonzero_gmacs": report.nonzero_macs / 1e9,
        "speedup": report.theoretical_speedup,
        "compression": size.compression_ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of each measurement; the median is reported")
    parser.add_argument("--models", default="resnet50,vit_b_16",
                        help="comma-separated torchvision model names")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch 1, 224x224, "
          f"median of {args.repeats}")
    header = (f"{'model':10s} {'forward':>9s} {'size':>8s} {'flops':>9s} {'flops/fwd':>9s} "
              f"{'peer':>9s} {'ours/peer':>9s} | {'GMACs':>7s} {'peer':>7s} {'published':>9s} "
              f"{'nonzero':>7s} {'speedup':>7s} {'compr.':>6s}")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        r = bench(name, args.repeats)
        print(f"{name:10s} {r['forward_ms']:7.1f}ms {r['size_ms']:6.1f}ms {r['flops_ms']:7.1f}ms "
              f"{r['flops_per_forward']:8.2f}x {r['peer_ms']:7.1f}ms {r['flops_per_peer']:8.2f}x | "
              f"{r['gmacs']:7.3f} {r['peer_gmacs']:7.3f} {r['published_gmacs']:9.3f} "
              f"{r['nonzero_gmacs']:7.3f} {r['speedup']:7.3f} {r['compression']:6.3f}")
    print("size/fwd and flops/fwd: metric time as a multiple of one dense forward pass.")
    print("peer = torch.utils.flop_counter.FlopCounterMode under no_grad (dense only).")


if __name__ == "__main__":
    main()

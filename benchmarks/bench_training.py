"""Training at scale on this machine: DDP scaling, mask upkeep under DDP, one RigL update.

Measured side by side in one run:

1. **DDP 2 processes vs 1** (gloo, CPU, 1 torch thread per process) at equal global
   batch: CIFAR resnet20 on 32x32 inputs, global batch ``--batch``; one process (plain
   training, no DDP wrapper) steps the whole batch, two DDP processes half each.
   Figure: examples per second, ratio 2 / 1.
2. **Holding masks under DDP vs dense DDP** (2 processes, 90% sparse masks held by
   ``hold_masks`` after every step): paired blocks of ``--steps`` steps, masked and dense
   back to back in the same processes, in alternating order (dense-masked, then
   masked-dense, ...), so slow drifts of the machine cancel within a pair. Figure: the
   median over all pairs of masked / dense block time, with its interquartile range, which
   shows whether the machine was quiet enough to resolve a 3% difference. Goal: <= 1.03x.
3. **One RigL update on resnet18 vs one training step** (224x224, batch ``--rigl-batch``,
   ERK masks at 80% sparsity, drop fraction 0.3): the update is timed right after a step,
   with that step's gradients. Goal: <= 0.5 step.

``--rounds`` repeats figures 1 and 2, alternating one-process and two-process launches.
Each figure is a median over blocks (or pairs); timings on a shared 2-core VM vary by up
to 2x between processes: run it on an idle machine.

    python benchmarks/bench_training.py [--batch 128] [--steps 4] [--blocks 8] [--pairs 12]
        [--rounds 2] [--rigl-batch 16] [--rigl-repeats 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cifar_model() -> nn.Module:
    from shrinkbench_cifar.models import resnet20

    torch.manual_seed(0)
    return resnet20()


def _sparse_masks(model: nn.Module, density: float) -> dict[str, torch.Tensor]:
    from shrinkbench_core.pruning.sparse_training import initial_masks

    weights = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    keep = round(density * sum(p.numel() for p in weights.values()))
    return initial_masks(weights, keep, "erk", "magnitude")


def _ddp_worker(rank: int, world: int, port: int, batch: int, steps: int, blocks: int,
                masked: bool, out: str) -> None:
    """Time DDP steps: ``blocks`` dense blocks, or (``masked``) ``blocks`` pairs of a masked
    and a dense block in alternating order."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from shrinkbench_core.experiment.distributed import destroy_distributed, init_distributed
    from shrinkbench_core.pruning import hold_masks

    init_distributed("cpu")
    try:
        model = _cifar_model()
        ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
        masks = _sparse_masks(model, 0.1)
        per_rank = batch // world
        inputs = torch.randn(per_rank, 3, 32, 32)
        targets = torch.randint(0, 10, (per_rank,))

        def run(count: int, with_masks: bool) -> float:
            holder = hold_masks(model, masks, optimizer) if with_masks else None
            started = time.perf_counter()
            for _ in range(count):
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(ddp(inputs), targets).backward()
                optimizer.step()
            elapsed = (time.perf_counter() - started) / count
            if holder is not None:
                holder.remove()
            return elapsed

        run(2, False)  # warm-up, both paths
        if masked:
            run(2, True)
        times: dict[str, list[float]] = {"dense": [], "masked": []}
        for block in range(blocks):
            order = (True, False) if block % 2 else (False, True)
            for with_masks in order if masked else (False,):
                times["masked" if with_masks else "dense"].append(run(steps, with_masks))
        if rank == 0:
            torch.save(times, out)
    finally:
        destroy_distributed()


def ddp_step_times(world: int, batch: int, steps: int, blocks: int, masked: bool
                   ) -> dict[str, list[float]]:
    """Seconds per step (per block) of ``world`` DDP processes at global ``batch``; with
    ``masked``, ``blocks`` pairs of masked and dense blocks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.pt")
        mp.spawn(_ddp_worker, args=(world, _free_port(), batch, steps, blocks, masked, out),
                 nprocs=world, join=True)
        return torch.load(out)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, median, high = statistics.quantiles(values, n=4)
    return low, median, high


def rigl_cost(batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds of one resnet18 training step and of one RigL update after it."""
    import torchvision

    from shrinkbench_core.pruning.sparse_training import DynamicSparsity

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sparsity = DynamicSparsity(model, _sparse_masks(model, 0.2), optimizer, "rigl",
                               total_steps=10**6, update_interval=10**6)
    inputs, targets = torch.randn(batch, 3, 224, 224), torch.randint(0, 10, (batch,))
    steps, updates = [], []
    for repeat in range(repeats + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        middle = time.perf_counter()
        sparsity.update(1)
        ended = time.perf_counter()
        if repeat:  # the first is warm-up
            steps.append(middle - started)
            updates.append(ended - middle)
    return statistics.median(steps), statistics.median(updates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch of the DDP runs")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=8,
                        help="timed blocks of the one-process run, per round")
    parser.add_argument("--pairs", type=int, default=12,
                        help="masked/dense block pairs of the two-process run, per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="one-process and two-process launches, alternating")
    parser.add_argument("--rigl-batch", type=int, default=16, help="resnet18 batch")
    parser.add_argument("--rigl-repeats", type=int, default=3,
                        help="timed RigL steps and updates (median)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; 1 thread per process")

    singles, denses, maskeds, ratios = [], [], [], []
    for _ in range(args.rounds):
        singles += ddp_step_times(1, args.batch, args.steps, args.blocks, masked=False)["dense"]
        two = ddp_step_times(2, args.batch, args.steps, args.pairs, masked=True)
        denses += two["dense"]
        maskeds += two["masked"]
        ratios += [m / d for m, d in zip(two["masked"], two["dense"], strict=True)]
    single, dense = statistics.median(singles), statistics.median(denses)
    low, ratio, high = _quartiles(ratios)
    step, update = rigl_cost(args.rigl_batch, args.rigl_repeats)

    rows = [
        ("resnet20 DDP, examples/s (global batch "
         f"{args.batch})", f"{args.batch / dense:.0f} (2 proc)", f"{args.batch / single:.0f} "
         "(1 proc)", f"{single / dense:.2f}x", ""),
        (f"resnet20 DDP 2 proc, masked / dense step ({len(ratios)} pairs, IQR "
         f"{low:.3f}-{high:.3f})", f"{statistics.median(maskeds):.4f} s", f"{dense:.4f} s",
         f"{ratio:.3f}x", "<= 1.03x"),
        (f"resnet18 one RigL update vs one step (batch {args.rigl_batch})", f"{update:.3f} s",
         f"{step:.3f} s", f"{update / step:.3f} step", "<= 0.5 step"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()

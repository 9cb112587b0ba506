"""Pruning engine vs torch.nn.utils.prune: mask computation and fine-tuning overhead.

Run: python benchmarks/bench_pruning.py [--repeats N] [--steps N] [--masks-only]

1. Global magnitude masks for torchvision resnet50 (25.6M parameters, every conv and
   linear weight, 75% pruned) on CPU: wall time and peak extra memory (resident set
   growth over the model itself, read from /proc in a fresh process per method) of
   ``GlobalMagWeight`` used directly against ``torch.nn.utils.prune.global_unstructured``,
   and of the public API ``sb.prune(model, "GlobalMagWeight", c, example_input=...)``
   (strategy looked up by name, classifier traced and left dense, achieved compression
   measured; the theoretical speedup and the per-layer table are computed only when read,
   so they are not in the figure) beside the direct path.
2. One fine-tuning step (SGD, momentum 0.9, weight decay 5e-4) of a 4x pruned resnet18
   (10 classes) on 32x32 inputs, batch 128: time relative to the dense model, for our
   masks (held by an optimizer post-step hook) and for the same masks held by
   torch.nn.utils.prune (forward pre-hooks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

AMOUNT = 0.75  # fraction pruned (4x on the pruned tensors)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def ours(model: nn.Module) -> None:
    from shrinkbench_strategies.magnitude import GlobalMagWeight

    names = [f"{n}.weight" for n, _ in prunable_modules(model)]
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    prunable = sum(params[n].numel() for n in names)
    compression = total / (total - round(AMOUNT * prunable))
    GlobalMagWeight(model, min(compression, total / (total - prunable + 1)), prunable=names).apply()


def api(model: nn.Module) -> None:
    import shrinkbench_core as sb

    names = [f"{n}.weight" for n, _ in prunable_modules(model)]
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    compression = total / (total - round(AMOUNT * sum(params[n].numel() for n in names)))
    size = 3 if isinstance(model, nn.Sequential) else 224  # the warm-up model takes 3x3 inputs
    sb.prune(model, "GlobalMagWeight", compression, example_input=torch.zeros(1, 3, size, size))


def torch_prune(model: nn.Module) -> None:
    from torch.nn.utils import prune

    params = [(m, "weight") for _, m in prunable_modules(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=AMOUNT)


def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(method: str) -> None:
    """Measure one method in this fresh process; print JSON."""
    from torchvision.models import resnet50

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = resnet50()
    run = {"ours": ours, "api": api, "torch": torch_prune}[method]
    # Warm up the code paths on a tiny model: a large one would leave freed but resident
    # heap pages behind that the measured run reuses, hiding its real memory growth.
    warm = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 8))
    run(warm)
    del warm
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak resident set size (VmHWM)
    base = _proc_kib("VmRSS:")
    start, cpu_start = time.perf_counter(), time.process_time()
    run(model)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _proc_kib("VmHWM:")
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds,
                      "extra_bytes": (peak - base) * 1024, "params": params}))


def measure_masks(repeats: int) -> None:
    results: dict[str, list[dict]] = {"ours": [], "api": [], "torch": []}
    for _ in range(repeats):
        for method in results:
            out = subprocess.run(
                [sys.executable, __file__, "--child", method],
                capture_output=True,
                text=True,
                check=True,
            )
            results[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
    params = results["ours"][0]["params"]
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
    cpu = {m: statistics.median(r["cpu_seconds"] for r in rs) for m, rs in results.items()}
    mem = {m: statistics.median(r["extra_bytes"] for r in rs) / params for m, rs in results.items()}
    print(
        f"\n1) Global magnitude masks, resnet50 ({params / 1e6:.1f}M params, "
        f"{AMOUNT:.0%} of conv/linear weights pruned), median of {repeats} fresh processes"
    )
    print(f"{'':28}{'ShrinkBench':>14}{'torch.nn.utils.prune':>24}{'ratio':>10}")
    print(
        f"{'time (s)':28}{med['ours']:>14.3f}{med['torch']:>24.3f}"
        f"{med['torch'] / med['ours']:>9.1f}x faster"
    )
    print(
        f"{'peak extra memory (B/param)':28}{mem['ours']:>14.2f}{mem['torch']:>24.2f}"
        f"{mem['torch'] / max(mem['ours'], 1e-9):>9.1f}x less"
    )
    print(
        "\n   Same strategy and compression through the public API "
        "(sb.prune: classifier traced and left dense)"
    )
    print(f"{'':28}{'GlobalMagWeight':>16}{'sb.prune':>12}{'sb.prune / direct':>20}")
    print(
        f"{'time (s)':28}{med['ours']:>16.3f}{med['api']:>12.3f}"
        f"{med['api'] / med['ours']:>19.2f}x"
    )
    print(
        f"{'CPU time, both threads (s)':28}{cpu['ours']:>16.3f}{cpu['api']:>12.3f}"
        f"{cpu['api'] / cpu['ours']:>19.2f}x"
    )
    print(
        f"{'peak extra memory (B/param)':28}{mem['ours']:>16.2f}{mem['api']:>12.2f}"
        f"{mem['api'] / max(mem['ours'], 1e-9):>19.2f}x"
    )


def step_times(model, optimizer, inputs, targets, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def measure_finetune_step(steps: int, rounds: int) -> None:
    from shrinkbench_strategies.magnitude import GlobalMagWeight
    from torch.nn.utils import prune
    from torchvision.models import resnet18

    from shrinkbench_core.pruning import hold_masks

    torch.manual_seed(0)
    inputs, targets = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    dense = resnet18(num_classes=10)
    ours_model = resnet18(num_classes=10)
    ours_model.load_state_dict(dense.state_dict())
    masks = GlobalMagWeight(ours_model, 4, classifier="fc").apply()
    ours_opt = sgd(ours_model)
    holder = hold_masks(ours_model, masks, ours_opt)
    torch_model = resnet18(num_classes=10)
    torch_model.load_state_dict(dense.state_dict())
    modules = dict(torch_model.named_modules())
    for name, mask in masks.items():
        prune.custom_from_mask(modules[name.rpartition(".")[0]], "weight", mask)
    setups = {
        "dense": (dense, sgd(dense)),
        "ours": (ours_model, ours_opt),
        "torch": (torch_model, sgd(torch_model)),
    }
    for model, opt in setups.values():
        step_times(model, opt, inputs, targets, 3)  # warm-up
    samples: dict[str, list[float]] = {k: [] for k in setups}
    keys = list(setups)
    for round_index in range(rounds):  # interleaved, order rotated: drift hits all alike
        for key in keys[round_index % 3 :] + keys[: round_index % 3]:
            model, opt = setups[key]
            samples[key] += step_times(model, opt, inputs, targets, steps)
    med = {k: statistics.median(v) for k, v in samples.items()}
    upkeep = []  # our whole per-step cost, timed on its own: the post-step re-zeroing
    for _ in range(50):
        start = time.perf_counter()
        holder.reapply()
        upkeep.append(time.perf_counter() - start)
    print(
        f"\n2) One fine-tuning step, resnet18 4x pruned, batch 128 at 32x32, SGD momentum+wd "
        f"(median of {rounds * steps} steps each, interleaved)"
    )
    print(f"{'':28}{'dense':>10}{'ShrinkBench':>14}{'torch.nn.utils.prune':>24}")
    print(
        f"{'step time (ms)':28}{1000 * med['dense']:>10.1f}{1000 * med['ours']:>14.1f}"
        f"{1000 * med['torch']:>24.1f}"
    )
    print(
        f"{'relative to dense':28}{1.0:>10.3f}{med['ours'] / med['dense']:>14.3f}"
        f"{med['torch'] / med['dense']:>24.3f}"
    )
    print(
        f"{'mask upkeep alone (ms)':28}{'':>10}{1000 * statistics.median(upkeep):>14.2f}"
        f"{'(in fwd/bwd)':>24}"
    )
    print(f"{'upkeep / dense step':28}{'':>10}{statistics.median(upkeep) / med['dense']:>14.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["ours", "api", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per method")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--masks-only", action="store_true", help="only part 1 (resnet50 masks)")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    measure_masks(args.repeats)
    if not args.masks_only:
        measure_finetune_step(args.steps, args.rounds)


if __name__ == "__main__":
    main()

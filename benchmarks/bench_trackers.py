"""Tracker overhead: the default digits run without trackers vs with each tracker and all three.

Each variant is one ``shrinkbench-run`` of the default experiment (digits, mlp,
GlobalMagWeight at 4x, 15 dense + 5 fine-tuning epochs) in a fresh process and a fresh
output folder, so every run trains its dense model. Variants are alternated in rounds (the
order rotates each round) so that a slow spell of a shared machine hits all of them. Three
figures per run:

* ``process``: wall time of the whole command, what a user waits for (includes importing
  the tracker's library and opening its run);
* ``pipeline``: ``timings_seconds.total`` of ``metrics.json``, the runner's own time from
  building the model to the final metrics;
* ``cpu``: user + system CPU time of the command and the processes it waited for, which a
  busy shared machine disturbs less than wall time.

The medians over the rounds are printed side by side with the ratio to the run without
trackers. Goal: < 2% overhead. W&B runs offline (``WANDB_MODE=offline``), MLflow writes a
file store in the temporary folder; nothing leaves the machine.

    python benchmarks/bench_trackers.py [--rounds 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "none": [],
    "tensorboard": ["tensorboard"],
    "mlflow": ["mlflow"],
    "wandb": ["wandb"],
    "all three": ["tensorboard", "mlflow", "wandb"],
}


def run_once(
    root: Path,
    variant: str,
    trackers: list[str],
    extra: list[str],
    threads: int | None,
    index: int,
) -> dict[str, float]:
    """One fresh ``shrinkbench-run`` process: wall time, the pipeline's own time, CPU time."""
    output = root / f"{variant.replace(' ', '-')}-{index}"
    command = [
        sys.executable,
        "-m",
        "shrinkbench_core.cli",
        "run",
        "--quiet",
        "--json",
        "--output",
        str(output),
        *extra,
    ]
    if trackers:
        command += ["-p", f"trackers=[{','.join(trackers)}]"]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(root / "wandb"),
        "WANDB_CONFIG_DIR": str(root / "wandb-config"),
        "WANDB_CACHE_DIR": str(root / "wandb-cache"),
        "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
    }
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    if "warning" in result.stderr:
        print(f"  {variant}: {result.stderr.strip().splitlines()[-1]}", file=sys.stderr)
    metrics = json.loads(result.stdout)
    return {"process": seconds, "pipeline": metrics["timings_seconds"]["total"], "cpu": cpu}


KEYS = {"process": "process s", "pipeline": "pipeline s", "cpu": "cpu s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="1 dense + 1 fine-tuning epoch")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="trackers to time (each against runs without one)",
    )
    args = parser.parse_args()
    extra = ["-p", "dense.epochs=1", "-p", "finetune.epochs=1"] if args.quick else []
    names = args.variants if "none" in args.variants else ["none", *args.variants]
    times: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-trackers-") as tmp:
        root = Path(tmp)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                loads.append(os.getloadavg()[0])
                last = run_once(root, name, VARIANTS[name], extra, args.threads, round_index)
                times[name].append(last)
                print(
                    f"round {round_index + 1} {name:12s} "
                    + "  ".join(f"{key} {last[key]:6.2f} s" for key in KEYS)
                    + f"  (load {loads[-1]:.1f})",
                    file=sys.stderr,
                )
    base = {key: statistics.median(t[key] for t in times["none"]) for key in KEYS}
    threads = args.threads or "torch's default"
    print(
        f"\ndefault digits run{' (--quick)' if args.quick else ''}: {args.rounds} rounds, "
        f"torch threads {threads}, {os.cpu_count()} cores, load average "
        f"{min(loads):.1f}-{max(loads):.1f}; medians (min-max), ratio to no tracker"
    )
    print(f"{'trackers':12s}" + "".join(f" {label:>21s} {'ratio':>6s}" for label in KEYS.values()))
    for name in names:
        row = f"{name:12s}"
        for key in KEYS:
            values = [t[key] for t in times[name]]
            median = statistics.median(values)
            row += (
                f" {median:7.2f} ({min(values):5.2f}-{max(values):5.2f}) {median / base[key]:6.3f}"
            )
        print(row)


if __name__ == "__main__":
    main()

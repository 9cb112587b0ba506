"""Sweep throughput: 2 local workers vs 1, and Ray vs local at 2 workers.

Runs the same digits sweep (strategies x compressions x seeds) with
``shrinkbench sweep`` in fresh output folders, once per executor setting, and
prints runs per minute side by side with the ratios. Each figure is the wall
time of the whole command (process start, worker start-up, dense baselines,
every run), which is what a user waits for. The Ray figure starts a local Ray
instance for the sweep, as ``--executor ray`` without ``--address`` does.

Scaling is measured with the same torch threads per run (1) for 1 and 2
workers, so it shows what the executor adds or loses. One worker may also use
both cores through torch's own threads (the default, cores / workers): that
line is printed too, with torch's 2-thread speedup on its own, which bounds
what a second worker can add over it.

Targets: 2 local workers >= 1.7x one worker on a 2-core machine; Ray within
15% of the local executor at 2 workers.

    python benchmarks/bench_sweep.py [--seeds 2] [--compressions 2 4 8 16] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = """\
compressions = {compressions}
seeds = {seeds}
strategies = ["GlobalMagWeight", "LayerMagWeight"]
models = [{{name = "mlp", params = {{hidden_sizes = [{hidden}, {hidden}]}}}}]
[shared]
dense = {{epochs = {dense_epochs}}}
finetune = {{epochs = {finetune_epochs}}}
metrics = ["size", "flops", "accuracy"]
"""


def run_sweep(
    sweep_file: Path, output: Path, workers: int, executor: str, threads: int | None = None
) -> dict:
    """Run one sweep command in a fresh output folder; return its timing."""
    command = [sys.executable, "-m", "shrinkbench_core.cli", "sweep", str(sweep_file),
               "--output", str(output), "--workers", str(workers), "--executor", executor,
               "--quiet"]
    if threads:
        command += ["--threads", str(threads)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    record = json.loads((output / "sweep.json").read_text())
    runs = record["summary"]["succeeded"]
    busy = sum(run["seconds"] for run in record["runs"])
    return {"seconds": seconds, "runs": runs, "runs_per_minute": 60 * runs / seconds,
            "run_seconds": busy, "load_before": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compressions", type=float, nargs="+", default=[2, 4, 8, 16],
                        help="compression ratios of the sweep grid")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--hidden", type=int, default=1024, help="MLP hidden width")
    parser.add_argument("--dense-epochs", type=int, default=4,
                        help="epochs of dense training per run")
    parser.add_argument("--finetune-epochs", type=int, default=12,
                        help="epochs of fine-tuning per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting (median)")
    parser.add_argument("--skip-ray", action="store_true",
                        help="time only the local executor, not Ray")
    parser.add_argument("--skip-default-threads", action="store_true",
                        help="do not also time 1 worker with the default threads (all cores)")
    args = parser.parse_args()

    # (executor, workers, torch threads per run; None = the default, cores / workers)
    settings: list[tuple[str, int, int | None]] = [("local", 1, 1), ("local", 2, 1)]
    if not args.skip_ray:
        settings.append(("ray", 2, 1))
    if not args.skip_default_threads:
        settings.append(("local", 1, None))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        folder = Path(folder)
        sweep_file = folder / "sweep.toml"
        sweep_file.write_text(SWEEP.format(
            compressions=args.compressions, seeds=list(range(args.seeds)), hidden=args.hidden,
            dense_epochs=args.dense_epochs, finetune_epochs=args.finetune_epochs,
        ))
        results: dict[tuple[str, int, int | None], list[dict]] = {s: [] for s in settings}
        for repeat in range(args.repeats):
            for setting in settings:
                executor, workers, threads = setting
                output = folder / f"{executor}-{workers}-{threads}-{repeat}"
                timing = run_sweep(sweep_file, output, workers, executor, threads)
                results[setting].append(timing)
                print(f"  {executor} x{workers} threads={threads or 'default'} (repeat "
                      f"{repeat + 1}): {timing['seconds']:.1f} s for {timing['runs']} runs, "
                      f"load average before {timing['load_before']:.1f}", file=sys.stderr)

    runs = results[settings[0]][0]["runs"]
    print(f"\nsweep: 2 strategies x {len(args.compressions)} compressions x {args.seeds} seeds "
          f"= {runs} runs on digits, mlp {args.hidden}x{args.hidden}, dense {args.dense_epochs} "
          f"+ fine-tune {args.finetune_epochs} epochs; {os.cpu_count()} CPU cores; "
          f"median of {args.repeats}\n")
    rate = {s: statistics.median(r["runs_per_minute"] for r in results[s]) for s in settings}
    wall = {s: statistics.median(r["seconds"] for r in results[s]) for s in settings}
    print(f"{'executor':<10}{'workers':>8}{'threads':>9}{'wall s':>9}{'runs/min':>10}")
    for setting in settings:
        executor, workers, threads = setting
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        print(f"{executor:<10}{workers:>8}{threads:>9}{wall[setting]:>9.1f}{rate[setting]:>10.2f}")
    local1, local2, ray2 = ("local", 1, 1), ("local", 2, 1), ("ray", 2, 1)
    print(f"\nlocal 2 workers / 1 worker, 1 torch thread per run: "
          f"{rate[local2] / rate[local1]:.2f}x  (target >= 1.7x)")
    if ("local", 1, None) in rate:
        both = ("local", 1, None)
        print(f"local 2 workers / 1 worker using both cores via torch threads: "
              f"{rate[local2] / rate[both]:.2f}x  (torch's own 2-thread speedup on this "
              f"sweep: {rate[both] / rate[local1]:.2f}x, which a second worker competes with)")
    if ray2 in rate:
        print(f"ray 2 workers / local 2 workers: {rate[ray2] / rate[local2]:.2f}x  "
              "(target >= 0.85x)")


if __name__ == "__main__":
    main()

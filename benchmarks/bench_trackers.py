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

HOOKS_SCRIPT = """
import json, sys, tempfile, time
from pathlib import Path
import torch  # a run has torch loaded before its first event
from shrinkbench_core.config import build_config
from shrinkbench_core.lifecycle import RunEvents, RunInfo
from shrinkbench_core.plugins import make_plugin_manager
from shrinkbench_core.pruning.masks import masks_summary
from shrinkbench_core.registry import Registry
from shrinkbench_core.trackers import tracker_plugins

root = Path(tempfile.mkdtemp())
manager = make_plugin_manager(load_entry_points=False)
config = build_config({"trackers": json.loads(sys.argv[1]), "output": str(root)})
run = RunInfo(root, "run", config.digest(), config.model_dump(mode="json"))
events = RunEvents(manager, run, tracker_plugins(config, Registry(manager)))
logs = {"train_loss": 0.5, "train_acc": 0.9, "val_loss": 0.4, "val_acc": 0.9, "lr": 0.05,
        "epoch_seconds": 1.0}
metrics = {"size": {"compression_ratio": 4.0}, "accuracy": {"test_top1": 0.9, "test_loss": 0.3}}
summary = masks_summary({"fc.weight": torch.rand(1024, 1024) > 0.75})
sequence = [("shrinkbench_run_start", {})]
sequence += [("shrinkbench_epoch_end", dict(stage="dense", epoch=e, logs={"epoch": e, **logs}))
             for e in range(1, 16)]
sequence += [("shrinkbench_stage_end", dict(stage="dense", metrics=metrics)),
             ("shrinkbench_pruning_step", dict(step=1, compression=4.0, summary=summary,
                                               details={})),
             ("shrinkbench_stage_end", dict(stage="pruned", metrics=metrics))]
sequence += [("shrinkbench_epoch_end", dict(stage="finetune", epoch=e, logs={"epoch": e, **logs}))
             for e in range(1, 6)]
sequence += [("shrinkbench_stage_end", dict(stage="finetuned", metrics=metrics))]
blocked = 0.0
for name, kwargs in sequence:
    started = time.perf_counter()
    events.emit(name, **kwargs)
    blocked += time.perf_counter() - started
    time.sleep(0.2)  # the run's own work between events (a digits epoch takes ~1 s)
started = time.perf_counter()
events.emit("shrinkbench_run_end", status="complete", metrics={"finetuned": metrics}, error=None)
end = time.perf_counter() - started
print(json.dumps({"blocked": blocked, "end": end, "failed": events.failed}))
"""


def hook_costs(trackers: list[str]) -> dict[str, float]:
    """Seconds the run's own thread spends in the hooks of a default run's 26 events (a
    fresh process, 0.2 s of other work between events), and in ``shrinkbench_run_end``."""
    command = [sys.executable, "-c", HOOKS_SCRIPT, json.dumps(trackers)]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as tmp:
        env["MLFLOW_TRACKING_URI"] = (Path(tmp) / "mlruns").as_uri()
        env["WANDB_CONFIG_DIR"] = str(Path(tmp) / "wandb-config")
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
    if result.returncode != 0:
        raise SystemExit(f"hook timing failed:\n{result.stderr}")
    costs = json.loads(result.stdout.strip().splitlines()[-1])
    if costs.pop("failed"):
        raise SystemExit(f"a tracker failed while timing its hooks: {result.stderr}")
    return costs


def print_hook_costs(names: list[str]) -> None:
    """The hooks' cost on the run's thread, per variant, beside the run without trackers."""
    print("\ntime the run's own thread spends in the hooks (fresh process per variant)")
    print(f"{'trackers':12s} {'26 events s':>12s} {'run end s':>10s}")
    for name in names:
        costs = hook_costs(VARIANTS[name])
        print(f"{name:12s} {costs['blocked']:12.3f} {costs['end']:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="1 dense + 1 fine-tuning epoch")
    parser.add_argument(
        "--hooks-only", action="store_true", help="only time the hooks on the run's thread"
    )
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
    if args.hooks_only:
        print_hook_costs(names)
        return
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
    print_hook_costs(names)


if __name__ == "__main__":
    main()

"""Data-parallel runs end to end: 2 gloo processes on CPU against 1, through torchrun."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RUN = ["-p", "dense.epochs=2", "-p", "finetune.epochs=1", "-p", "metrics=[size,accuracy]",
       "-p", "dataset.batch_size=64", "-p", "dataset.validation_size=29", "--quiet"]
# 1797 digits - 360 test - 29 validation = 1408 = 22 x 64: no padded or partial batch


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _run_dir(output: Path) -> Path:
    (run,) = (output / "runs").iterdir()
    return run


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    two, one, ranks = tmp_path / "two", tmp_path / "one", tmp_path / "ranks"
    # shrinkbench-run --nproc 2 relaunches itself under torchrun
    launched = subprocess.run(
        [sys.executable, "-m", "shrinkbench_core.cli", "run", "--nproc", "2",
         "--output", str(two), *RUN],
        capture_output=True, text=True, timeout=300,
        env=_env(SHRINKBENCH_RANK_OUTPUT=str(ranks)))
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert launched.stdout.count("results:") == 1  # rank 0 alone reports
    single = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         "-m", "shrinkbench_core.cli", "run", "--output", str(one), *RUN],
        capture_output=True, text=True, timeout=300, env=_env())
    assert single.returncode == 0, single.stdout + single.stderr

    run_two, run_one = _run_dir(two), _run_dir(one)
    assert run_two.name == run_one.name  # world size is not part of the digest
    config = json.loads((run_two / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((run_one / "config.json").read_text())["distributed"]["world_size"] == 1

    # rank 1 ran the same experiment into its own folder: the same masks, zeros held
    rank1 = ranks / "rank1" / "runs" / run_two.name
    masks = torch.load(run_two / "masks.pt", weights_only=True)
    masks_rank1 = torch.load(rank1 / "masks.pt", weights_only=True)
    assert masks.keys() == masks_rank1.keys()
    assert all(torch.equal(masks[name], masks_rank1[name]) for name in masks)
    weights = torch.load(run_two / "model.pt", weights_only=True)
    weights = weights.get("model", weights)
    weights_rank1 = torch.load(rank1 / "model.pt", weights_only=True)
    weights_rank1 = weights_rank1.get("model", weights_rank1)
    for name, mask in masks.items():
        assert torch.count_nonzero(weights[name][~mask]) == 0
        assert torch.equal(weights[name], weights_rank1[name])

    # the same global batches as one process: equal up to float summation order
    metrics_two = json.loads((run_two / "metrics.json").read_text())
    metrics_one = json.loads((run_one / "metrics.json").read_text())
    for stage in ("dense", "finetuned"):
        a, b = metrics_two[stage]["accuracy"], metrics_one[stage]["accuracy"]
        # measured: dense loss 0.35250068 vs 0.35250070, fine-tuned equal to 16 digits
        assert abs(a["test_top1"] - b["test_top1"]) <= 1 / 360, (stage, a, b)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5), (stage, a, b)
    overlap = sum(int((masks[n] & m).sum()) for n, m in
                  torch.load(run_one / "masks.pt", weights_only=True).items())
    assert overlap / sum(int(m.sum()) for m in masks.values()) > 0.999


def test_nproc_beyond_the_cores_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "shrinkbench_core.cli", "run", "--nproc", "512",
         "--output", str(tmp_path), "--device", "cpu", *RUN],
        capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--nproc 512 is more than the" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_killing_every_rank_of_a_rigl_run_then_rerunning_resumes_on_both(tmp_path):
    import signal
    import time

    output, ranks = tmp_path / "out", tmp_path / "ranks"
    command = [sys.executable, "-m", "shrinkbench_core.cli", "run", "--nproc", "2",
               "--output", str(output),
               *[arg.replace("finetune.epochs=1", "finetune.epochs=20") for arg in RUN],
               # RigL under DDP: all-reduced gradients, so both ranks regrow the same weights
               "-p", "schedule.kind=rigl", "-p", "schedule.params.update_interval=5"]
    env = _env(SHRINKBENCH_RANK_OUTPUT=str(ranks))
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    progress = None
    while time.monotonic() < deadline and first.poll() is None:
        found = list(output.glob("runs/*/checkpoints/progress.json"))
        if found:
            progress = json.loads(found[0].read_text() or "{}")
            if progress.get("epoch", 0) >= 1 and "finetuned" not in progress.get("stages", {}):
                break
        time.sleep(0.3)
    assert first.poll() is None, first.communicate()
    for pid in [first.pid, *_descendants(first.pid)]:  # torchrun runs ranks in new sessions
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # every rank, no chance to clean up
    first.wait()
    time.sleep(1)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed after epoch" in again.stdout
    run = _run_dir(output)
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    masks = torch.load(run / "masks.pt", weights_only=True)
    masks_rank1 = torch.load(ranks / "rank1" / "runs" / run.name / "masks.pt", weights_only=True)
    assert all(torch.equal(masks[name], masks_rank1[name]) for name in masks)
    updates = json.loads((run / "metrics.json").read_text())["schedule"]["sparse_updates"]
    assert len(updates) > 2 and sum(update["changed"] for update in updates) > 0
    epochs = [line.split(",")[0] for line in (run / "logs.csv").read_text().splitlines()[1:]]
    assert epochs == [str(epoch) for epoch in range(1, 21)]
    assert "resumed after epoch 20" not in again.stdout

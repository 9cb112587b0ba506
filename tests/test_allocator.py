"""Timing keeps freed memory in the process, so passes do not page-fault anew."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator settings exist in glibc only",
)

# Each child allocates and frees a 64 MiB tensor a few times (above glibc's largest
# dynamic mmap threshold, so by default every allocation is a fresh mapping), counting
# minor page faults per round; then it times a model, then it allocates again.
_CHILD = """
import json, resource, sys, torch
from torch import nn

def faults_per_round(rounds=8):
    counts = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(16 << 20).fill_(1.0)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts

before = faults_per_round()
model, batch = nn.Linear(4, 4), torch.randn(2, 4)
if sys.argv[1] == "shrink":
    from shrinkbench_core.pruning.shrink import measure_latencies
    measure_latencies([model], batch, repeats=1, warmup=0)
else:
    from shrinkbench_core.metrics.latency import measure_latency
    measure_latency(model, batch, warmup=0, repeats=1)
print(json.dumps({"before": before, "after": faults_per_round()}))
"""


@glibc_only
@pytest.mark.parametrize("timer", ["shrink", "latency"])
def test_timing_stops_freed_memory_from_being_faulted_in_again(timer: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, timer], capture_output=True, text=True, check=True
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    pages = (64 << 20) // 4096
    assert min(counts["before"]) > pages // 2, counts  # by default every round faults
    # kept: once the heap has grown to hold the tensor, its pages are reused
    assert max(counts["after"][-4:]) < pages // 50, counts


@glibc_only
def test_retain_freed_memory_reports_that_glibc_accepted_it() -> None:
    from shrinkbench_core.metrics.allocator import retain_freed_memory

    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # a second call changes nothing

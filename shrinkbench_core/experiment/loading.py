"""DataLoader settings per device: workers, pinned memory, persistent workers.

Defaults follow what ``benchmarks/bench_data.py`` measures. On a CPU run the loader's
worker processes compete with the training threads for the same cores, so with two cores
or fewer per training process loading stays in the main process (0 workers); with more,
a quarter of the cores (at most 4) decode while the rest train. On CUDA the cores are free
for decoding: one per core minus one for the training process (at most 8), and batches
are pinned so the copy to the GPU can overlap compute. Workers persist across epochs
whenever there are any (no re-spawn, and no dataset re-pickling, at each epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LoaderSettings", "default_workers", "loader_settings"]


@dataclass(frozen=True)
class LoaderSettings:
    """Keyword arguments of a :class:`torch.utils.data.DataLoader` that depend on the device."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None

    def kwargs(self) -> dict[str, Any]:
        """The settings as DataLoader keyword arguments (``prefetch_factor`` only with workers)."""
        out: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        if self.prefetch_factor is not None:
            out["prefetch_factor"] = self.prefetch_factor
        return out


def _cores() -> int:
    from shrinkbench_core.sweep.worker import available_cores

    return available_cores()


def default_workers(device_type: str, cores: int, processes: int = 1) -> int:
    """Loader workers for one of ``processes`` training processes sharing ``cores`` cores."""
    per_process = max(1, cores // max(1, processes))
    if device_type == "cuda":
        return max(1, min(8, per_process - 1))
    if per_process <= 2:
        return 0
    return min(4, per_process // 4 or 1)


def loader_settings(
    device: torch.device | str,
    workers: int | None = None,
    cores: int | None = None,
    processes: int = 1,
) -> LoaderSettings:
    """DataLoader settings for ``device``; ``workers`` overrides the default worker count.

    ``processes`` is the number of training processes on this machine (DDP ranks), which
    share its ``cores`` (default: the cores this process may use).
    """
    device_type = torch.device(device).type
    if workers is None:
        workers = default_workers(device_type, cores if cores is not None else _cores(), processes)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return LoaderSettings(
        num_workers=workers,
        pin_memory=device_type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )

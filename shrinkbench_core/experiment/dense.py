"""Dense weights: trained once and shared by every run that prunes the same model.

Trained weights are cached under ``<output>/dense/<digest>/`` (with the weights
recorded for rewinding, ``rewind-<point>.pt``) where the digest
covers the dataset, model, dense training settings and seeds, so every
strategy and compression in a study starts from the very same dense model.
A file lock makes concurrent runs wait for the one that trains. A damaged entry (a
truncated or corrupted file) is reported in one line and trained (or recorded) again.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from shrinkbench_core.experiment.atomic import atomic_torch_save, atomic_write_json, read_json


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_dense_weights(
    cache_dir: Path, model: nn.Module, train: Callable[[], dict], description: dict
) -> tuple[dict, bool]:
    """Load the cached dense weights into ``model``, or train them once and cache them.

    Returns ``(info, trained_now)`` where ``info`` is what ``train`` returned
    (its logs) when the weights were trained.
    """
    weights = cache_dir / "model.pt"
    info_file = cache_dir / "dense.json"
    with file_lock(cache_dir.with_suffix(".lock")):
        if weights.is_file() and info_file.is_file():
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                info = read_json(info_file) or {}
                model.load_state_dict(state)
                return info, False
            except Exception as error:  # truncated, corrupted, or from another model
                damaged(cache_dir, error)
        info = train()
        atomic_torch_save(model.state_dict(), weights)
        atomic_write_json(info_file, {**description, **info})
        return info, True


def damaged(path: Path, error: Exception) -> None:
    """Say on stderr that a cache entry is unreadable and will be made again."""
    reason = type(error).__name__
    if str(error):
        reason += f": {str(error).splitlines()[0][:160]}"
    print(
        f"shrinkbench: note: dense cache entry {path} is damaged ({reason}); making it again",
        file=sys.stderr,
    )


def rewind_file(cache_dir: Path, key: str) -> Path:
    """Where the weights recorded at rewind point ``key`` (``epoch2``...) are cached."""
    return cache_dir / f"rewind-{key}.pt"


def save_rewind_state(cache_dir: Path, key: str, state: dict[str, torch.Tensor]) -> None:
    """Cache a rewind recording next to the dense weights (caller holds the lock)."""
    atomic_torch_save(
        {name: t.detach().cpu() for name, t in state.items()}, rewind_file(cache_dir, key)
    )


def cached_rewind_state(
    cache_dir: Path, key: str, record: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], bool]:
    """The weights recorded at rewind point ``key`` of the cached dense training.

    Recorded while the dense model is trained; when the dense weights were cached
    without this point (trained for another schedule), ``record`` reproduces
    dense training up to the point (seeded per epoch, so bit-identical on the
    same device). Returns ``(state, recorded_now)``.
    """
    path = rewind_file(cache_dir, key)
    with file_lock(cache_dir.with_suffix(".lock")):
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True), False
            except Exception as error:
                damaged(path, error)
        state = record()
        save_rewind_state(cache_dir, key, state)
        return state, True

"""Cheap checks run during validation: are the CIFAR files there? (no torchvision import)"""

from __future__ import annotations

import os
from pathlib import Path

from .parameters import CifarDataParameters

TRAIN_EXAMPLES = 50_000
FILES = {
    "cifar-10-batches-py": (
        *(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
    ),
    "cifar-100-python": ("train", "test", "meta"),
}


def _check(params: CifarDataParameters, folder: str, title: str) -> list[str]:
    problems = []
    if params.validation_size >= TRAIN_EXAMPLES:
        problems.append(
            f"validation_size: {params.validation_size} leaves no training images "
            f"({title} has {TRAIN_EXAMPLES})"
        )
    if params.download:
        return problems
    root = Path(params.root or os.environ.get("SHRINKBENCH_DATA") or "data").expanduser()
    if root.name == folder and not (root / folder).exists():
        root = root.parent  # the folder itself given as the root
    missing = [name for name in FILES[folder] if not (root / folder / name).is_file()]
    if missing:
        problems.append(
            f"root: {title} not found: {root / folder} lacks {', '.join(missing)}. Get it with "
            "`-p dataset.download=true` (needs internet), or point -p dataset.root (or "
            "$SHRINKBENCH_DATA) at the folder that contains "
            f"{folder}"
        )
    return problems


def check_cifar10(params: CifarDataParameters) -> list[str]:
    """Problems CIFAR-10 would hit when loaded with ``params``."""
    return _check(params, "cifar-10-batches-py", "CIFAR-10")


def check_cifar100(params: CifarDataParameters) -> list[str]:
    """Problems CIFAR-100 would hit when loaded with ``params``."""
    return _check(params, "cifar-100-python", "CIFAR-100")

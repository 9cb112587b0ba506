"""Cheap checks run during validation: are the CIFAR files there, and do the split sizes fit?

No torchvision import. The real sets' training files (about 150 MB) are not read: they
hold 50,000 images. A smaller set (a subset in the same format, e.g. for tests) is
read to count its images, so a ``validation_size`` (default 5000) that leaves no
training image is reported before anything runs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from .parameters import CifarDataParameters

TRAIN_EXAMPLES = 50_000
IMAGE_BYTES = 32 * 32 * 3
#: Training files smaller than this in total (that of 40,000 images) are read to be counted.
COUNTED_BELOW = 40_000 * IMAGE_BYTES
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
    if not missing and 0 < params.validation_size < TRAIN_EXAMPLES:
        found = count_training_images(root / folder)
        if found is not None and params.validation_size >= found:
            problems.append(
                f"validation_size: {params.validation_size} leaves no training images "
                f"({title} in {root / folder} has {found}); set it lower, or 0 for no "
                "validation split"
            )
    if missing:
        problems.append(
            f"root: {title} not found: {root / folder} lacks {', '.join(missing)}. Get it with "
            "`-p dataset.download=true` (needs internet), or point -p dataset.root (or "
            "$SHRINKBENCH_DATA) at the folder that contains "
            f"{folder}"
        )
    return problems


def count_training_images(folder: Path) -> int | None:
    """Training images of a CIFAR folder when it is smaller than the real set, else ``None``.

    Only files totalling under :data:`COUNTED_BELOW` bytes are read (their labels
    counted); an unreadable file gives ``None`` (loading will report it).
    """
    names = [name for name in FILES[folder.name] if name.startswith(("data_batch", "train"))]
    paths = [folder / name for name in names]
    if sum(path.stat().st_size for path in paths) >= COUNTED_BELOW:
        return None
    count = 0
    try:
        for path in paths:
            with path.open("rb") as handle:
                batch = pickle.load(handle, encoding="latin1")
            count += len(batch.get("labels", batch.get("fine_labels", [])))
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return None
    return count


def check_cifar10(params: CifarDataParameters) -> list[str]:
    """Problems CIFAR-10 would hit when loaded with ``params``."""
    return _check(params, "cifar-10-batches-py", "CIFAR-10")


def check_cifar100(params: CifarDataParameters) -> list[str]:
    """Problems CIFAR-100 would hit when loaded with ``params``."""
    return _check(params, "cifar-100-python", "CIFAR-100")

"""What a dataset factory returns, and helpers for seeded splits."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset


def data_root(root: str | None) -> Path:
    """The data folder: ``root``, else ``$SHRINKBENCH_DATA``, else ``./data``."""
    return Path(root or os.environ.get("SHRINKBENCH_DATA") or "data").expanduser()


class TransformedView(Dataset):
    """The examples of ``base`` passed through ``transform`` (one load, many views)."""

    def __init__(self, base: Dataset, transform: Callable[[Any], Any]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        return self.transform(image), label


@dataclass
class DataSplits:
    """The splits of one dataset, as torch datasets yielding ``(input, label)``.

    ``validation`` is held out from the training data (never the test set) and
    is what model selection uses; it may be ``None`` when the dataset has none.
    ``train_eval`` is the training data without augmentation (for calibration);
    it defaults to ``train``.
    """

    train: Dataset
    test: Dataset
    validation: Dataset | None = None
    train_eval: Dataset | None = None
    num_classes: int = 0
    input_shape: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train_eval is None:
            self.train_eval = self.train


def seeded_split_indices(n: int, holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (kept, held out) with a seeded permutation."""
    if not 0 <= holdout < n:
        raise ValueError(f"validation size must be in [0, {n}), got {holdout}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    return sorted(order[holdout:]), sorted(order[:holdout])


def holdout_split(
    train: Dataset, train_eval: Dataset, holdout: int, seed: int
) -> tuple[Dataset, Dataset, Dataset | None]:
    """Hold out ``holdout`` examples of the training set as a validation split.

    ``train`` and ``train_eval`` are the same examples with and without
    augmentation; the validation split is taken from ``train_eval``.
    Returns ``(train, train_eval, validation)``.
    """
    if holdout == 0:
        return train, train_eval, None
    kept, held = seeded_split_indices(len(train), holdout, seed)  # type: ignore[arg-type]
    return Subset(train, kept), Subset(train_eval, kept), Subset(train_eval, held)

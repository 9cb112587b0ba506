"""Pieces shared by the image datasets: data root, transformed views, split assembly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from shrinkbench_core.data import (
    DataSplits,
    TransformedView,
    data_root,
    holdout_split,
    seeded_split_indices,
)
from shrinkbench_core.errors import ConfigError

from .parameters import ImageDataParameters
from .transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform


def candidate_roots(root: str | None, folder: str) -> list[Path]:
    """Where a dataset may be: the data folder itself, then its subfolder ``folder``."""
    base = data_root(root)
    return [base, base / folder]


def assemble_splits(
    train_base: Dataset,
    test_base: Dataset,
    num_classes: int,
    params: ImageDataParameters,
    seed: int,
    info: dict[str, Any],
) -> DataSplits:
    """Train (augmented), seeded validation holdout, train_eval, and the (sub)set to test on.

    ``train_base`` and ``test_base`` yield untransformed PIL images.
    """
    n_train, n_test = len(train_base), len(test_base)  # type: ignore[arg-type]
    problems = []
    if params.validation_size >= n_train:
        problems.append(
            f"validation_size: {params.validation_size} must be less than the "
            f"{n_train} training images"
        )
    if params.subset_size > n_test:
        problems.append(f"subset_size: {params.subset_size} is more than the {n_test} test images")
    if problems:
        raise ConfigError(problems, title="invalid dataset parameters")
    evaluate = eval_transform(params.image_size, params.resize_size)
    train, train_eval, validation = holdout_split(
        TransformedView(train_base, train_transform(params.image_size)),
        TransformedView(train_base, evaluate),
        params.validation_size,
        seed,
    )
    test: Dataset = TransformedView(test_base, evaluate)
    if 0 < params.subset_size < n_test:
        _, chosen = seeded_split_indices(n_test, params.subset_size, seed)
        test = Subset(test, chosen)
    return DataSplits(
        train=train,
        test=test,
        validation=validation,
        train_eval=train_eval,
        num_classes=num_classes,
        input_shape=(3, params.image_size, params.image_size),
        info={
            **info,
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "train_augmentation": f"RandomResizedCrop({params.image_size}), RandomHorizontalFlip()",
            "eval_preprocessing": f"Resize({params.resize_size}), CenterCrop({params.image_size})",
            "sizes": {
                "train": len(train),  # type: ignore[arg-type]
                "validation": len(validation) if validation is not None else 0,  # type: ignore[arg-type]
                "test": len(test),  # type: ignore[arg-type]
                "test_full": n_test,
            },
        },
    )

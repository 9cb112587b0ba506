"""Built-in datasets: ``digits`` (embedded) and ``mnist`` (torchvision)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from shrinkbench_core.builtin.catalogue import DigitsParameters, MnistParameters
from shrinkbench_core.data import DataSplits, data_root, holdout_split, seeded_split_indices
from shrinkbench_core.errors import DataMissingError


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 UCI digits as ``(images (N, 1, 8, 8) in [0, 1], labels (N,))``.

    Read straight from the data file scikit-learn ships (``load_digits`` reads the
    same file): importing scikit-learn takes about two seconds, which every sweep
    worker would pay again. Falls back to ``sklearn.datasets.load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0], "datasets", "data", "digits.csv.gz") if locations else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",")
        pixels, targets = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, targets = bunch.data, bunch.target
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return images, torch.tensor(targets, dtype=torch.long)


def build_digits(params: DigitsParameters, *, seed: int) -> DataSplits:
    """UCI digits scaled to [0, 1], shape (1, 8, 8), with a fixed seeded split.

    The split depends only on ``params.split_seed`` so every run sees the same
    test set whatever its own seed.
    """
    images, labels = load_digits_tensors()
    rest, test = seeded_split_indices(len(labels), params.test_size, params.split_seed)
    train_idx, val_idx = rest, []
    if params.validation_size:
        kept, held = seeded_split_indices(len(rest), params.validation_size, params.split_seed + 1)
        train_idx, val_idx = [rest[i] for i in kept], [rest[i] for i in held]
    train = TensorDataset(images[train_idx], labels[train_idx])
    validation = TensorDataset(images[val_idx], labels[val_idx]) if val_idx else None
    return DataSplits(
        train=train,
        test=TensorDataset(images[test], labels[test]),
        validation=validation,
        num_classes=10,
        input_shape=(1, 8, 8),
        info={"train": len(train_idx), "validation": len(val_idx), "test": len(test)},
    )


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def build_mnist(params: MnistParameters, *, seed: int) -> DataSplits:
    """MNIST from torchvision's raw files under ``root/MNIST``, normalized."""
    from torchvision import datasets, transforms

    root = data_root(params.root)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(MNIST_MEAN, MNIST_STD)]
    )
    try:
        train = datasets.MNIST(root, train=True, transform=transform, download=params.download)
        test = datasets.MNIST(root, train=False, transform=transform, download=params.download)
    except RuntimeError as error:
        raise DataMissingError(
            f"MNIST not found under {root / 'MNIST'} ({error}).\n"
            "Get it with `-p dataset.download=true` (needs internet), or point "
            "`--data-root`/SHRINKBENCH_DATA at a folder containing MNIST/raw."
        ) from None
    train, train_eval, validation = holdout_split(train, train, params.validation_size, seed)
    return DataSplits(
        train=train,
        train_eval=train_eval,
        validation=validation,
        test=test,
        num_classes=10,
        input_shape=(1, 28, 28),
    )

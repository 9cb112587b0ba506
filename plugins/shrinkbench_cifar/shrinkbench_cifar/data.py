"""CIFAR-10 and CIFAR-100 through torchvision's loaders, with the standard pipelines.

Training images get the augmentation of He et al. 2016 (random 32x32 crop of
the image padded by 4 pixels, random horizontal flip); validation, test and
``train_eval`` images get none. Every split is normalised with the per-channel
mean and standard deviation of its dataset's training set. The validation split
is ``validation_size`` training images held out with a seeded permutation.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets, transforms

from shrinkbench_core.data import DataSplits, TransformedView, data_root, holdout_split
from shrinkbench_core.errors import ConfigError, DataMissingError

from .parameters import CifarDataParameters

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# Per-channel statistics of the 50,000 training images (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def missing_files(cls: type[datasets.CIFAR10], root: Path) -> list[str]:
    """Files of the dataset ``cls`` that are absent from ``root / cls.base_folder``."""
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [name for name in names if not (root / cls.base_folder / name).is_file()]


class _PresenceChecked:
    """Checks that the files exist instead of comparing their MD5 sums on every load.

    torchvision still verifies the archive's checksum when it downloads it.
    """

    root: str
    base_folder: str
    meta: dict[str, str]

    def _check_integrity(self) -> bool:
        return not missing_files(type(self), Path(self.root))  # type: ignore[arg-type]

    def _load_meta(self) -> None:
        with Path(self.root, self.base_folder, self.meta["filename"]).open("rb") as handle:
            self.classes = pickle.load(handle, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}


class CIFAR10(_PresenceChecked, datasets.CIFAR10):
    """torchvision's CIFAR-10 that checks file presence, not checksums."""


class CIFAR100(_PresenceChecked, datasets.CIFAR100):
    """torchvision's CIFAR-100 that checks file presence, not checksums."""


def train_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """Random crop 32 with 4-pixel zero padding, horizontal flip, normalisation."""
    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def eval_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """Normalisation only."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


def _locate(root: Path, folder: str) -> Path:
    """Accept both the parent of ``folder`` and ``folder`` itself as the root."""
    if root.name == folder and not (root / folder).exists():
        return root.parent
    return root


def _load(
    cls: type[CIFAR10],
    title: str,
    params: CifarDataParameters,
) -> tuple[Dataset, Dataset, Path]:
    root = _locate(data_root(params.root), cls.base_folder)
    folder = root / cls.base_folder
    if params.download:
        try:
            cls(str(root), train=True, download=True)
        except (OSError, RuntimeError) as error:
            raise DataMissingError(
                f"{title} could not be downloaded from {cls.url} into {root}: {error}. "
                f"Download it from {CIFAR_URL} and extract it there."
            ) from error
    missing = missing_files(cls, root)
    if missing:
        raise DataMissingError(
            f"{title} not found: {folder} lacks {', '.join(missing)}. "
            f"Add -p dataset.download=true to download it (about 170 MB from {CIFAR_URL}), "
            "or point -p dataset.root (or $SHRINKBENCH_DATA) at the folder that contains "
            f"{cls.base_folder}."
        )
    return cls(str(root), train=True), cls(str(root), train=False), root


def _build(
    cls: type[CIFAR10],
    title: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    params: CifarDataParameters,
    seed: int,
) -> DataSplits:
    train_base, test_base, root = _load(cls, title, params)
    n_train = len(train_base)
    if params.validation_size >= n_train:
        raise ConfigError(
            [
                f"validation_size: {params.validation_size} must be less than the "
                f"{n_train} training images"
            ],
            title=f"invalid {title} parameters",
        )
    evaluate = eval_transform(mean, std)
    train, train_eval, validation = holdout_split(
        TransformedView(train_base, train_transform(mean, std)),
        TransformedView(train_base, evaluate),
        params.validation_size,
        seed,
    )
    classes = list(train_base.classes)
    return DataSplits(
        train=train,
        test=TransformedView(test_base, evaluate),
        validation=validation,
        train_eval=train_eval,
        num_classes=len(classes),
        input_shape=(3, 32, 32),
        info={
            "root": str(root),
            "classes": classes,
            "normalization": {"mean": list(mean), "std": list(std)},
            "train_augmentation": "RandomCrop(32, padding=4), RandomHorizontalFlip()",
            "sizes": {
                "train": len(train),
                "validation": len(validation) if validation is not None else 0,
                "test": len(test_base),
            },
        },
    )


def build_cifar10(params: CifarDataParameters, *, seed: int) -> DataSplits:
    """CIFAR-10: 50,000 training (less the validation split) and 10,000 test images."""
    return _build(CIFAR10, "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD, params, seed)


def build_cifar100(params: CifarDataParameters, *, seed: int) -> DataSplits:
    """CIFAR-100 (fine labels): 50,000 training and 10,000 test images."""
    return _build(CIFAR100, "CIFAR-100", CIFAR100_MEAN, CIFAR100_STD, params, seed)

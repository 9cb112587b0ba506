"""ImageNet (ILSVRC 2012) in torchvision's layout or as plain class folders.

Layouts (``layout`` parameter):

* ``imagenet``: what ``torchvision.datasets.ImageNet`` reads: ``meta.bin`` (or
  ``ILSVRC2012_devkit_t12.tar.gz``, which torchvision turns into it) and
  ``train/<wnid>/``, ``val/<wnid>/`` (or the ``ILSVRC2012_img_train.tar`` /
  ``ILSVRC2012_img_val.tar`` archives, which torchvision extracts on first use).
* ``folder``: ``train/<class>/*`` and ``val/<class>/*`` (any image extension
  torchvision knows); validation labels use the training folders' class order.
* ``auto``: ``imagenet`` when ``meta.bin`` or the devkit archive is present
  with both splits, else ``folder``. An explicit layout is honoured whenever its
  files are there, whatever else the folder holds.

The dataset folder is ``root`` (default ``$SHRINKBENCH_DATA``, else ``./data``)
or its subfolder ``imagenet``. The official validation set is the test split
(ImageNet's test labels are not public); ``validation_size`` training images
can be held out for model selection (default 0: the literature reports the
validation set and selects nothing on it), and ``subset_size`` evaluates on a
seeded subset of the test split for quick checks.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets

from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import DataMissingError

from .checks import HOW_TO_GET, DataNotFound, locate_imagenet
from .parameters import ImageNetParameters
from .splits import assemble_splits


def locate(params: ImageNetParameters) -> tuple[Path, str]:
    """The dataset folder and its layout, or :class:`DataMissingError` naming where it looked."""
    try:
        return locate_imagenet(params)
    except DataNotFound as error:
        raise DataMissingError(str(error)) from None


class _ClassFolder(datasets.ImageFolder):
    """An image folder whose labels follow a given class -> index map."""

    def __init__(self, root: Path, class_to_idx: dict[str, int]) -> None:
        self._given = dict(class_to_idx)
        super().__init__(str(root), allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        present = sorted(entry.name for entry in Path(directory).iterdir() if entry.is_dir())
        unknown = [name for name in present if name not in self._given]
        if unknown:
            raise DataMissingError(
                f"{directory} has class folders that train/ lacks: {', '.join(unknown[:5])}"
            )
        return sorted(self._given, key=self._given.__getitem__), self._given


def _load_folder(folder: Path) -> tuple[datasets.ImageFolder, datasets.ImageFolder]:
    try:
        train = datasets.ImageFolder(str(folder / "train"))
    except FileNotFoundError as error:
        raise DataMissingError(f"no images in {folder / 'train'}: {error}") from error
    return train, _ClassFolder(folder / "val", train.class_to_idx)


def _load_imagenet(folder: Path) -> tuple[datasets.ImageNet, datasets.ImageNet]:
    try:
        return datasets.ImageNet(str(folder), "train"), datasets.ImageNet(str(folder), "val")
    except (RuntimeError, FileNotFoundError) as error:  # torchvision's missing-archive errors
        raise DataMissingError(
            f"ImageNet in {folder} is incomplete: {error} " + HOW_TO_GET
        ) from error


def build(params: ImageNetParameters, *, seed: int) -> DataSplits:
    """ImageNet's splits: train (augmented), optional validation holdout, test = official val."""
    folder, layout = locate(params)
    train, test = _load_folder(folder) if layout == "folder" else _load_imagenet(folder)
    names = train.classes
    return assemble_splits(
        train,
        test,
        len(names),
        params,
        seed,
        info={
            "root": str(folder),
            "layout": layout,
            "num_classes": len(names),
            "first_classes": [str(name) for name in names[:5]],
        },
    )

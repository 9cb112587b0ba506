"""Places365-Standard through torchvision's loader, in the standard small-image layout.

Files under the dataset folder (``root`` or its subfolder ``places365``):
``categories_places365.txt``, ``places365_train_standard.txt``,
``places365_val.txt``, the training images in ``data_256_standard/`` (the name
torchvision gives the ``data_256/`` folder of the official archive; both are
accepted) and the validation images in ``val_256/`` (``data_large_standard/``
and ``val_large/`` with ``small=false``). The official validation set is the
test split; preprocessing is ImageNet's (see :mod:`shrinkbench_imagenet.transforms`).
"""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets

from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import DataMissingError

from .parameters import Places365Parameters
from .splits import assemble_splits, candidate_roots

DOWNLOAD_PAGE = "http://places2.csail.mit.edu/download.html"
TRAIN_SPLIT, TEST_SPLIT = "train-standard", "val"


class Places365(datasets.Places365):
    """torchvision's Places365 that checks file presence, not checksums, on every load.

    torchvision still verifies checksums of what it downloads. The training
    images may also sit in ``data_256`` / ``data_large``, the folder names of the
    official archives.
    """

    def _check_integrity(self, file: str, md5: str, download: bool) -> bool:
        present = Path(file).is_file()
        if not present and not download:
            raise DataMissingError(f"Places365 file {file} is missing")
        return present

    @property
    def images_dir(self) -> str:
        folder = super().images_dir
        archive_name = folder.rsplit("_", 1)[0]
        use_archive_name = self.split.startswith("train") and not Path(folder).is_dir()
        return archive_name if use_archive_name and Path(archive_name).is_dir() else folder


def expected_files(folder: Path, small: bool) -> list[Path]:
    """The files and folders Places365-Standard needs in ``folder``."""
    size = "256" if small else "large"
    return [
        folder / "categories_places365.txt",
        folder / "places365_train_standard.txt",
        folder / "places365_val.txt",
        folder / f"data_{size}_standard",
        folder / f"val_{size}",
    ]


def _present(path: Path) -> bool:
    if path.name.startswith("data_"):  # the official archive's folder name is accepted too
        return path.is_dir() or path.with_name(path.name.rsplit("_", 1)[0]).is_dir()
    return path.exists()


def locate(params: Places365Parameters) -> Path:
    """The dataset folder, or :class:`DataMissingError` saying what is missing where."""
    candidates = candidate_roots(params.root, "places365")
    for folder in candidates:
        if all(_present(path) for path in expected_files(folder, params.small)):
            return folder
    if params.download:
        return next((folder for folder in candidates if folder.is_dir()), candidates[0])
    missing = [p.name for p in expected_files(candidates[0], params.small) if not _present(p)]
    raise DataMissingError(
        f"Places365 not found in {' or '.join(map(str, candidates))} "
        f"({', '.join(missing)} missing in {candidates[0]}). Add -p dataset.download=true to "
        f"download it (about 24 GB with small images) or get it from {DOWNLOAD_PAGE}; "
        "then point -p dataset.root (or $SHRINKBENCH_DATA) at it."
    )


def _load(folder: Path, params: Places365Parameters) -> tuple[Places365, Places365]:
    try:
        return tuple(  # type: ignore[return-value]
            Places365(str(folder), split=split, small=params.small, download=params.download)
            for split in (TRAIN_SPLIT, TEST_SPLIT)
        )
    except DataMissingError:
        raise
    except (OSError, RuntimeError) as error:  # no internet, bad archive
        raise DataMissingError(
            f"Places365 could not be downloaded into {folder}: {error}. "
            f"Get it from {DOWNLOAD_PAGE}."
        ) from error


def build(params: Places365Parameters, *, seed: int) -> DataSplits:
    """Places365-Standard: train (augmented), optional validation holdout, test = official val."""
    folder = locate(params)
    train, test = _load(folder, params)
    return assemble_splits(
        train,
        test,
        len(train.classes),
        params,
        seed,
        info={"root": str(folder), "num_classes": len(train.classes), "small": params.small},
    )

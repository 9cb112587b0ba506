"""Where the data is and whether the split sizes fit it, without torch or torchvision.

Used by the datasets' factories (:func:`locate_imagenet`) and by ShrinkBench's
validation before a run (:func:`check_imagenet`, :func:`check_places365`, the
specs' ``check``), so a missing folder, a layout asked for but absent, or a
validation holdout larger than the data is reported before anything trains.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .parameters import ImageDataParameters, ImageNetParameters, Places365Parameters

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
ARCHIVES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar"}
# torchvision.datasets.folder.IMG_EXTENSIONS: what ImageFolder reads
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

HOW_TO_GET = (
    "ImageNet cannot be downloaded automatically: sign in at https://image-net.org, download "
    f"{ARCHIVES['train']}, {ARCHIVES['val']} and {DEVKIT} (ILSVRC 2012) into that folder "
    "(torchvision extracts them on first use), or provide train/<class>/ and val/<class>/ "
    "image folders; then point -p dataset.root (or $SHRINKBENCH_DATA) at it."
)


class DataNotFound(Exception):
    """The data is not where the parameters say (the message says where it looked)."""


def candidate_roots(root: str | None, folder: str) -> list[Path]:
    """Where a dataset may be: the data folder itself, then its subfolder ``folder``."""
    base = Path(root or os.environ.get("SHRINKBENCH_DATA") or "data").expanduser()
    return [base, base / folder]


def layouts_found(folder: Path) -> list[str]:
    """Every layout ``folder`` holds completely, torchvision's ``imagenet`` first."""
    found = []
    if ((folder / "meta.bin").is_file() or (folder / DEVKIT).is_file()) and all(
        (folder / split).is_dir() or (folder / archive).is_file()
        for split, archive in ARCHIVES.items()
    ):
        found.append("imagenet")
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        found.append("folder")
    return found


def locate_imagenet(params: ImageNetParameters) -> tuple[Path, str]:
    """The dataset folder and its layout; raises :class:`DataNotFound` naming where it looked.

    An explicit ``layout`` is honoured whenever its files are there, whatever else
    the folder holds (``folder`` beside a ``meta.bin``); ``auto`` prefers torchvision's
    ``imagenet`` layout when both are complete.
    """
    candidates = candidate_roots(params.root, "imagenet")
    for folder in candidates:
        found = layouts_found(folder)
        if params.layout == "auto" and found:
            return folder, found[0]
        if params.layout in found:
            return folder, params.layout
    wanted = "either layout" if params.layout == "auto" else f"the {params.layout!r} layout"
    raise DataNotFound(
        f"ImageNet not found: looked for {wanted} in {' and '.join(map(str, candidates))}. "
        + HOW_TO_GET
    )


def count_images(folder: Path, stop_after: int) -> int:
    """Images in the class folders of ``folder``, counting no further than ``stop_after + 1``."""
    count = 0
    with os.scandir(folder) as listing:
        class_dirs = sorted(entry.path for entry in listing if entry.is_dir())
    for class_dir in class_dirs:
        with os.scandir(class_dir) as entries:
            for entry in entries:
                if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                    count += 1
                    if count > stop_after:
                        return count
    return count


def count_lines(path: Path, stop_after: int) -> int:
    """Lines of ``path``, counting no further than ``stop_after + 1``."""
    count = 0
    with path.open("rb") as handle:
        for _ in handle:
            count += 1
            if count > stop_after:
                break
    return count


def split_size_problems(
    params: ImageDataParameters, counters: Iterable[tuple[str, object]]
) -> list[str]:
    """``validation_size`` against the training examples, ``subset_size`` against the test ones.

    ``counters`` gives ``("train", count(stop_after))`` and ``("test", ...)``; a count is
    only taken when the size asks for a holdout or a subset, and stops early.
    """
    problems = []
    for split, counter in counters:
        if split == "train" and params.validation_size > 0:
            n = counter(params.validation_size)  # type: ignore[operator]
            if n is not None and params.validation_size >= n:
                problems.append(
                    f"validation_size: {params.validation_size} must be less than the {n} "
                    "training images found (set it lower, or 0 for no validation split)"
                )
        if split == "test" and params.subset_size > 0:
            n = counter(params.subset_size)  # type: ignore[operator]
            if n is not None and params.subset_size > n:
                problems.append(
                    f"subset_size: {params.subset_size} is more than the {n} test images found"
                )
    return problems


def check_imagenet(params: ImageNetParameters) -> list[str]:
    """Problems ImageNet would hit when loaded with ``params`` (validation, before a run)."""
    try:
        folder, _layout = locate_imagenet(params)
    except DataNotFound as error:
        return [f"root: {error}"]

    def counter(split: str):
        directory = folder / split
        return lambda stop: count_images(directory, stop) if directory.is_dir() else None

    return split_size_problems(params, [("train", counter("train")), ("test", counter("val"))])


PLACES_LISTS = {"train": "places365_train_standard.txt", "test": "places365_val.txt"}


def check_places365(params: Places365Parameters) -> list[str]:
    """Split sizes of Places365 against its file lists (presence is checked when it loads,
    since ``download=true`` may fetch it)."""
    for folder in candidate_roots(params.root, "places365"):
        lists = {split: folder / name for split, name in PLACES_LISTS.items()}
        if all(path.is_file() for path in lists.values()):
            counters = [
                (split, lambda stop, path=path: count_lines(path, stop))
                for split, path in lists.items()
            ]
            return split_size_problems(params, counters)
    return []

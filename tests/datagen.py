"""Small data sets written in the real on-disk formats, for tests.

Each writer produces exactly the files the real data set ships with (or that
torchvision creates from it), filled with tiny synthetic images whose colour
depends on the class, so a model can learn something from them:

* :func:`write_cifar10` / :func:`write_cifar100`: the python pickles of
  ``cifar-10-batches-py`` / ``cifar-100-python``.
* :func:`write_image_folder`: one JPEG folder per class.
* :func:`write_imagenet`: ``train/`` and ``val/`` class folders named by WordNet
  ids, plus the ``meta.bin`` torchvision writes from the devkit (or, with
  ``layout="folder"``, plain class-per-folder ``train/`` and ``val/``).
* :func:`write_places365`: the small-image ("256") layout with the
  standard file lists and category file.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _class_images(labels: np.ndarray, size: tuple[int, int], seed: int) -> np.ndarray:
    """Uint8 images (N, H, W, 3): a class-dependent colour plus noise."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(12345).integers(30, 226, size=(int(labels.max()) + 1, 3))
    noise = rng.integers(-30, 31, size=(len(labels), size[0], size[1], 3))
    images = palette[labels][:, None, None, :] + noise
    return np.clip(images, 0, 255).astype(np.uint8)


def _labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """``n`` labels covering every class as evenly as possible, in a seeded order."""
    labels = np.arange(n) % num_classes
    return np.random.default_rng(seed).permutation(labels)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> the (N, 3072) channel-planar rows of the CIFAR pickles."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(root: str | Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with ``n_train`` training and ``n_test`` test images.

    The training images are spread over ``data_batch_1`` .. ``data_batch_5``
    like the real set. Returns the ``cifar-10-batches-py`` folder.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = _labels(n_train, 10, seed)
    train_rows = _cifar_rows(_class_images(train_labels, (32, 32), seed))
    for index, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(
            folder / f"data_batch_{index}",
            {
                "batch_label": f"training batch {index} of 5",
                "labels": train_labels[part].tolist(),
                "data": train_rows[part],
                "filenames": [f"train_{i:05d}.png" for i in part],
            },
        )
    test_labels = _labels(n_test, 10, seed + 1)
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test_labels.tolist(),
            "data": _cifar_rows(_class_images(test_labels, (32, 32), seed + 1)),
            "filenames": [f"test_{i:05d}.png" for i in range(n_test)],
        },
    )
    _dump(
        folder / "batches.meta",
        {
            "num_cases_per_batch": -(-n_train // 5),
            "label_names": list(CIFAR10_CLASSES),
            "num_vis": 3072,
        },
    )
    return folder


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python`` (``train``, ``test``, ``meta``); returns that folder."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
        fine = _labels(n, 100, seed + offset)
        _dump(
            folder / name,
            {
                "filenames": [f"{name}_{i:05d}.png" for i in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),
                "data": _cifar_rows(_class_images(fine, (32, 32), seed + offset)),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine_class_{i:03d}" for i in range(100)],
            "coarse_label_names": [f"coarse_class_{i:02d}" for i in range(20)],
        },
    )
    return folder


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def _class_names(classes: int | Sequence[str], prefix: str = "class_") -> list[str]:
    if isinstance(classes, int):
        return [f"{prefix}{i:03d}" for i in range(classes)]
    return list(classes)


def write_image_folder(
    root: str | Path,
    classes: int | Sequence[str] = 10,
    per_class: int = 4,
    size: int | tuple[int, int] = 32,
    seed: int = 0,
    extension: str = ".JPEG",
) -> list[str]:
    """Write ``root/<class>/<class>_<i><extension>`` JPEGs; returns the class names (sorted).

    ``classes`` is a count (names ``class_000``, ...) or the names themselves;
    ``size`` is the image side or ``(height, width)``.
    """
    names = _class_names(classes)
    labels = np.repeat(np.arange(len(names)), per_class)
    images = _class_images(labels, _size(size), seed)
    for index, (label, image) in enumerate(zip(labels, images, strict=True)):
        name = names[label]
        _save_jpeg(image, Path(root) / name / f"{name}_{index % per_class:04d}{extension}")
    return sorted(names)


def write_imagenet(
    root: str | Path,
    num_classes: int = 10,
    train_per_class: int = 6,
    val_per_class: int = 3,
    size: int | tuple[int, int] = 40,
    layout: str = "imagenet",
    seed: int = 0,
) -> list[str]:
    """Write an ImageNet-style set under ``root``; returns the class folder names.

    ``layout="imagenet"``: torchvision's prepared ImageNet layout, folders named
    by WordNet id (``n00000000``...) and ``meta.bin`` mapping ids to class names
    and listing the validation images' ids. ``layout="folder"``: plain
    ``train/<class>/`` and ``val/<class>/`` folders.
    """
    if layout not in ("imagenet", "folder"):
        raise ValueError(f"layout must be 'imagenet' or 'folder', got {layout!r}")
    root = Path(root)
    if layout == "imagenet":
        names = [f"n{i:08d}" for i in range(num_classes)]
    else:
        names = _class_names(num_classes)
    write_image_folder(root / "train", names, train_per_class, size, seed)
    write_image_folder(root / "val", names, val_per_class, size, seed + 1)
    if layout == "imagenet":
        import torch

        wnid_to_classes = {
            wnid: (f"synthetic class {i}", f"class {i}") for i, wnid in enumerate(names)
        }
        val_wnids = [wnid for wnid in names for _ in range(val_per_class)]
        torch.save((wnid_to_classes, val_wnids), root / "meta.bin")
    return names


def write_places365(
    root: str | Path,
    num_classes: int = 5,
    train_per_class: int = 4,
    val_per_class: int = 2,
    size: int | tuple[int, int] = 40,
    seed: int = 0,
) -> list[str]:
    """Write Places365-standard's small-image layout under ``root``; returns the categories.

    Files: ``categories_places365.txt`` (``/a/name index``),
    ``places365_train_standard.txt`` and ``places365_val.txt`` (``path index``),
    ``data_256_standard/<letter>/<name>/<n>.jpg`` and
    ``val_256/Places365_val_<n>.jpg`` (the folder names torchvision uses).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    categories = [f"/{chr(ord('a') + i % 26)}/place_{i:03d}" for i in range(num_classes)]
    (root / "categories_places365.txt").write_text(
        "".join(f"{name} {index}\n" for index, name in enumerate(categories))
    )
    train_labels = np.repeat(np.arange(num_classes), train_per_class)
    train_lines = []
    for index, (label, image) in enumerate(
        zip(train_labels, _class_images(train_labels, _size(size), seed), strict=True)
    ):
        relative = f"{categories[label]}/{index % train_per_class + 1:08d}.jpg"
        _save_jpeg(image, root / "data_256_standard" / relative.lstrip("/"))
        train_lines.append(f"{relative} {label}\n")
    (root / "places365_train_standard.txt").write_text("".join(train_lines))
    val_labels = np.repeat(np.arange(num_classes), val_per_class)
    val_lines = []
    for index, (label, image) in enumerate(
        zip(val_labels, _class_images(val_labels, _size(size), seed + 1), strict=True)
    ):
        name = f"Places365_val_{index + 1:08d}.jpg"
        _save_jpeg(image, root / "val_256" / name)
        val_lines.append(f"{name} {label}\n")
    (root / "places365_val.txt").write_text("".join(val_lines))
    return categories

"""Registration of ImageNet, Places365 and every torchvision classifier.

Importing this module imports neither torch nor torchvision: the models come
from the cached catalogue (:mod:`shrinkbench_imagenet.catalogue`), which is
generated from torchvision's registry in a subprocess the first time a
torchvision version is seen.
"""

from __future__ import annotations

from typing import Any

from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import DatasetSpec, ModelSpec

from .catalogue import load_catalogue
from .parameters import ImageNetParameters, Places365Parameters, TorchvisionModelParameters

IMAGE_SHAPE = (3, 224, 224)


@hookimpl
def shrinkbench_register_datasets() -> list[DatasetSpec]:
    """ImageNet (ILSVRC 2012) and Places365-Standard."""
    return [
        DatasetSpec(
            name="imagenet",
            summary="ImageNet ILSVRC 2012: 1.28M train / 50k val images, 1000 classes "
            "(or any class-per-folder set).",
            factory="shrinkbench_imagenet.imagenet:build",
            check="shrinkbench_imagenet.checks:check_imagenet",
            parameters=ImageNetParameters,
            input_shape=IMAGE_SHAPE,
            num_classes=1000,
        ),
        DatasetSpec(
            name="places365",
            summary="Places365-Standard scenes: 1.8M train / 36.5k val images, 365 classes.",
            factory="shrinkbench_imagenet.places365:build",
            check="shrinkbench_imagenet.checks:check_places365",
            parameters=Places365Parameters,
            input_shape=IMAGE_SHAPE,
            num_classes=365,
        ),
    ]


def model_metadata(entry: dict[str, Any]) -> dict[str, Any]:
    """Published facts of a catalogue entry, headed by those of its default weights."""
    default = entry["weights"][entry["default_weights"]]
    return {
        "source": "torchvision",
        "builder": entry["builder"],
        "default_weights": entry["default_weights"],
        "acc@1": default["acc@1"],
        "acc@5": default["acc@5"],
        "num_params": default["num_params"],
        "gflops": default["gflops"],
        "crop_size": default["crop_size"],
        "resize_size": default["resize_size"],
        "min_size": default["min_size"],
        "classifier_type": entry["classifier_type"],
        "weights": entry["weights"],
    }


def _summary(name: str, metadata: dict[str, Any]) -> str:
    facts = []
    if metadata["acc@1"] is not None:
        facts.append(f"ImageNet-1K top-1 {metadata['acc@1']:.2f}%")
    if metadata["num_params"]:
        facts.append(f"{metadata['num_params'] / 1e6:.1f}M params")
    if metadata["gflops"]:
        facts.append(f"{metadata['gflops']:.2f} GFLOPs")
    return f"torchvision {name}" + (f" ({', '.join(facts)})" if facts else "")


@hookimpl
def shrinkbench_register_models() -> list[ModelSpec]:
    """Every classification model of the installed torchvision, with its published metadata."""
    specs = []
    for name, entry in sorted(load_catalogue().items()):
        metadata = model_metadata(entry)
        specs.append(
            ModelSpec(
                name=name,
                summary=_summary(name, metadata),
                factory=f"shrinkbench_imagenet.models:torchvision_models.{name}",
                parameters=TorchvisionModelParameters,
                classifier=entry["classifier"],
                metadata=metadata,
            )
        )
    return specs

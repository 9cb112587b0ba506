"""Specs of the built-in datasets and models (no torch import here)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shrinkbench_core.specs import DatasetSpec, ModelSpec


class DigitsParameters(BaseModel):
    """Options of the embedded UCI digits dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validation_size: int = Field(180, ge=0, description="Examples held out from training.")
    test_size: int = Field(360, ge=1, description="Examples in the fixed test split.")
    split_seed: int = Field(0, description="Seed of the fixed train/validation/test split.")


class MnistParameters(BaseModel):
    """Options of MNIST (torchvision's on-disk format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str | None = Field(None, description="Data root; default $SHRINKBENCH_DATA or ./data.")
    download: bool = Field(False, description="Download MNIST when missing (needs internet).")
    validation_size: int = Field(5000, ge=0, description="Training examples held out.")


class MlpParameters(BaseModel):
    """Options of the multi-layer perceptron."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_sizes: tuple[int, ...] = Field((1024, 1024), description="Width of each hidden layer.")
    checkpoint: str | None = Field(None, description="Local state_dict file with dense weights.")


class LenetParameters(BaseModel):
    """Options of the LeNet models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str | None = Field(None, description="Local state_dict file with dense weights.")


def dataset_specs() -> list[DatasetSpec]:
    """The built-in datasets."""
    return [
        DatasetSpec(
            name="digits",
            summary="UCI handwritten digits (8x8, 10 classes) from scikit-learn; no download",
            factory="shrinkbench_core.builtin.datasets:build_digits",
            check="shrinkbench_core.builtin.data_checks:check_digits",
            parameters=DigitsParameters,
            input_shape=(1, 8, 8),
            num_classes=10,
        ),
        DatasetSpec(
            name="mnist",
            summary="MNIST handwritten digits (28x28, 10 classes) via torchvision",
            factory="shrinkbench_core.builtin.datasets:build_mnist",
            check="shrinkbench_core.builtin.data_checks:check_mnist",
            parameters=MnistParameters,
            input_shape=(1, 28, 28),
            num_classes=10,
        ),
    ]


def model_specs() -> list[ModelSpec]:
    """The built-in models."""
    return [
        ModelSpec(
            name="mlp",
            summary="Multi-layer perceptron with ReLU (default hidden sizes 1024, 1024)",
            factory="shrinkbench_core.builtin.models:build_mlp",
            parameters=MlpParameters,
            classifier="classifier",
        ),
        ModelSpec(
            name="lenet300",
            summary="LeNet-300-100 fully connected network (LeCun et al. 1998)",
            factory="shrinkbench_core.builtin.models:build_lenet300",
            parameters=LenetParameters,
            classifier="classifier",
        ),
        ModelSpec(
            name="lenet5",
            summary="LeNet-5 convolutional network (LeCun et al. 1998) for 28x28 or 32x32 inputs",
            factory="shrinkbench_core.builtin.models:build_lenet5",
            parameters=LenetParameters,
            input_shapes=((1, 28, 28), (1, 32, 32)),
            classifier="classifier",
        ),
    ]

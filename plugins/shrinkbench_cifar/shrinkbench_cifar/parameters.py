"""Parameter models of the CIFAR datasets and models (pydantic only, no torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CifarDataParameters(BaseModel):
    """Options of the ``cifar10`` and ``cifar100`` datasets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str | None = Field(
        default=None,
        description="Folder holding cifar-10-batches-py / cifar-100-python "
        "(default: $SHRINKBENCH_DATA, else ./data).",
    )
    download: bool = Field(default=False, description="Download the data when it is missing.")
    validation_size: int = Field(
        default=5000,
        ge=0,
        description="Training images held out (seeded) as the validation split; 0 for none.",
    )


class CifarModelParameters(BaseModel):
    """Options of the CIFAR ResNets and VGG."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str | None = Field(
        default=None,
        description="Local state_dict file of pretrained weights, checked against the model.",
    )

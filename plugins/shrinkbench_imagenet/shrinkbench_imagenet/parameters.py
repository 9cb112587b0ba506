"""Parameter models of the ImageNet/Places365 datasets and torchvision models (no torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ImageDataParameters(BaseModel):
    """Options shared by the large-image datasets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str | None = Field(
        default=None,
        description="Dataset folder, or a folder holding it under the dataset's name "
        "(default: $SHRINKBENCH_DATA, else ./data).",
    )
    download: bool = Field(default=False, description="Download the data when it is missing.")
    validation_size: int = Field(
        default=0,
        ge=0,
        description="Training images held out (seeded) as the validation split; 0 for none.",
    )
    image_size: int = Field(
        default=224, ge=8, description="Side of the square crop fed to the model."
    )
    resize_size: int = Field(
        default=256, ge=8, description="Shorter side the evaluation images are resized to first."
    )
    subset_size: int = Field(
        default=0,
        ge=0,
        description="Evaluate on this many test images drawn with the seed; 0 for all of them.",
    )

    @model_validator(mode="after")
    def _crop_fits(self) -> ImageDataParameters:
        if self.resize_size < self.image_size:
            raise ValueError(
                f"resize_size ({self.resize_size}) must be at least image_size ({self.image_size})"
            )
        return self


class ImageNetParameters(ImageDataParameters):
    """Options of the ``imagenet`` dataset."""

    layout: Literal["auto", "imagenet", "folder"] = Field(
        default="auto",
        description="'imagenet': torchvision's layout (meta.bin or the devkit, train/ and val/); "
        "'folder': train/<class>/ and val/<class>/; 'auto': whichever is found.",
    )


class Places365Parameters(ImageDataParameters):
    """Options of the ``places365`` dataset."""

    small: bool = Field(
        default=True, description="Use the 256x256 images (data_256, val_256), else the large ones."
    )


class TorchvisionModelParameters(BaseModel):
    """Options of every torchvision classification model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str | None = Field(
        default=None,
        description="torchvision weights ('DEFAULT', 'IMAGENET1K_V1', ...); None: random init.",
    )
    checkpoint: str | None = Field(
        default=None, description="Local state_dict file loaded after the weights, checked by key."
    )
    builder_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for torchvision's builder, e.g. {'dropout': 0.2}.",
    )

    @field_validator("builder_kwargs")
    @classmethod
    def _not_managed(cls, value: dict[str, Any]) -> dict[str, Any]:
        managed = sorted(set(value) & {"weights", "num_classes", "progress"})
        if managed:
            raise ValueError(
                f"{', '.join(managed)} cannot be builder_kwargs: use the weights parameter; "
                "the number of classes comes from the dataset"
            )
        return value

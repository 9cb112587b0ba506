"""The standard ImageNet preprocessing pipelines (also used for Places365).

Training: ``RandomResizedCrop(image_size)`` (scale 0.08-1, aspect 3/4-4/3),
horizontal flip. Evaluation: resize the shorter side to ``resize_size``, centre
crop ``image_size``. Both normalise with the ImageNet channel statistics that
torchvision's pretrained weights expect. Bilinear interpolation throughout.
"""

from __future__ import annotations

from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(image_size: int) -> transforms.Compose:
    """Random resized crop of side ``image_size``, horizontal flip, normalisation."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int, resize_size: int) -> transforms.Compose:
    """Resize the shorter side to ``resize_size``, centre crop ``image_size``, normalisation."""
    return transforms.Compose(
        [
            transforms.Resize(resize_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

"""CIFAR architectures, pinned to the papers they come from.

ResNet-20/32/44/56/110 follow He et al. 2016 ("Deep Residual Learning for Image
Recognition", section 4.2): a 3x3 convolution with 16 filters, then three stages
of ``n`` basic blocks with 16, 32 and 64 channels (feature maps 32, 16 and 8
pixels), global average pooling and one linear layer; depth = 6n + 2. Shortcuts
use option A: identity, and where the shape changes a parameter-free stride-2
subsample padded with zero channels. Parameter counts (10 classes): 0.27M,
0.46M, 0.66M, 0.85M and 1.7M.

VGG-16 is the batch-normalised CIFAR variant of Zagoruyko 2015
(``cifar.torch/models/vgg_bn_drop.lua``), the one the original ShrinkBench
used: thirteen 3x3 convolutions each followed by batch norm (eps 1e-3) and
ReLU, dropout between convolutions of a stage, five 2x2 max-pools down to
1x1x512, then dropout, Linear(512, 512), batch norm, ReLU, dropout and the
Linear(512, classes) classifier (15.0M parameters for 10 classes).

Layers are plain attributes and ``nn.Sequential`` items, so a parameter's name
says where it sits (``layer2.0.conv1.weight``, ``features.0.weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CifarResNet",
    "BasicBlock",
    "CifarVGG",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "vgg16_bn",
    "RESNET_DEPTHS",
    "VGG16_CONFIG",
]

RESNET_DEPTHS = (20, 32, 44, 56, 110)
"""Depths of the CIFAR ResNets in He et al. 2016, table 6."""


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to an option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth ``6n + 2`` for 32x32 inputs (He et al. 2016, section 4.2)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.fc = nn.Linear(64, num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for CIFAR (0.27M parameters)."""
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 for CIFAR (0.46M parameters)."""
    return CifarResNet(32, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 for CIFAR (0.66M parameters)."""
    return CifarResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 for CIFAR (0.85M parameters)."""
    return CifarResNet(56, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    """ResNet-110 for CIFAR (1.7M parameters)."""
    return CifarResNet(110, num_classes)


# fmt: off
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# fmt: on
"""VGG-16 convolution widths; ``"M"`` is a 2x2 max-pool."""

_FIRST_DROPOUT = 0.3
_CONV_DROPOUT = 0.4
_CLASSIFIER_DROPOUT = 0.5
_BN_EPS = 1e-3


class CifarVGG(nn.Module):
    """VGG with batch norm and dropout for 32x32 inputs (Zagoruyko 2015).

    ``features`` is one ``nn.Sequential`` of Conv2d, BatchNorm2d, ReLU,
    Dropout and MaxPool2d; ``classifier`` is Dropout, Linear, BatchNorm1d,
    ReLU, Dropout, Linear (the classifier layer is ``classifier.5``).
    """

    def __init__(self, config: tuple[int | str, ...] = VGG16_CONFIG, num_classes: int = 10) -> None:
        super().__init__()
        self.features = self._features(config)
        width = [c for c in config if c != "M"][-1]
        assert isinstance(width, int)
        self.classifier = nn.Sequential(
            nn.Dropout(_CLASSIFIER_DROPOUT),
            nn.Linear(width, 512),
            nn.BatchNorm1d(512, eps=_BN_EPS),
            nn.ReLU(inplace=True),
            nn.Dropout(_CLASSIFIER_DROPOUT),
            nn.Linear(512, num_classes),
        )
        self._init_weights()

    @staticmethod
    def _features(config: tuple[int | str, ...]) -> nn.Sequential:
        layers: list[nn.Module] = []
        in_channels = 3
        for index, item in enumerate(config):
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            assert isinstance(item, int)
            layers += [
                nn.Conv2d(in_channels, item, 3, padding=1),
                nn.BatchNorm2d(item, eps=_BN_EPS),
                nn.ReLU(inplace=True),
            ]
            # Dropout after every convolution except the last one before a pool.
            if index + 1 < len(config) and config[index + 1] != "M":
                layers.append(nn.Dropout(_FIRST_DROPOUT if index == 0 else _CONV_DROPOUT))
            in_channels = item
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.classifier(x)


def vgg16_bn(num_classes: int = 10) -> CifarVGG:
    """VGG-16 with batch norm for CIFAR (15.0M parameters for 10 classes)."""
    return CifarVGG(VGG16_CONFIG, num_classes)

"""Built-in models: an MLP, LeNet-300-100 and LeNet-5."""

from __future__ import annotations

import math

from torch import nn

from shrinkbench_core.builtin.catalogue import LenetParameters, MlpParameters
from shrinkbench_core.checkpoints import load_state_dict_file


class MLP(nn.Module):
    """Flatten, then Linear+ReLU per hidden size, then a Linear ``classifier``."""

    def __init__(self, in_features: int, hidden_sizes: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):  # noqa: D102
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5: two 5x5 conv+pool stages, then 120-84-classes fully connected."""

    def __init__(self, in_channels: int, side: int, num_classes: int) -> None:
        super().__init__()
        pad = 2 if side == 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU()
        )
        self.classifier = nn.Linear(84, num_classes)

    def forward(self, x):  # noqa: D102
        return self.classifier(self.fc(self.features(x)))


def _finish(model: nn.Module, checkpoint: str | None) -> nn.Module:
    if checkpoint:
        load_state_dict_file(model, checkpoint)
    return model


def build_mlp(
    params: MlpParameters, *, num_classes: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """An MLP for inputs of any shape (flattened)."""
    model = MLP(math.prod(input_shape), tuple(params.hidden_sizes), num_classes)
    return _finish(model, params.checkpoint)


def build_lenet300(
    params: LenetParameters, *, num_classes: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """LeNet-300-100 (the fully connected network of the pruning literature)."""
    return _finish(MLP(math.prod(input_shape), (300, 100), num_classes), params.checkpoint)


def build_lenet5(
    params: LenetParameters, *, num_classes: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """LeNet-5 for (C, 28, 28) or (C, 32, 32) inputs."""
    channels, side = input_shape[0], input_shape[-1]
    return _finish(LeNet5(channels, side, num_classes), params.checkpoint)

"""Model factories registered by the plugin: ``build(params, *, num_classes, input_shape)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from shrinkbench_core.checkpoints import load_state_dict_file
from shrinkbench_core.errors import ConfigError

from . import models
from .parameters import CifarModelParameters

CIFAR_INPUT_SHAPE = (3, 32, 32)

ModelFactory = Callable[..., nn.Module]


def _factory(constructor: Callable[[int], nn.Module]) -> ModelFactory:
    name = constructor.__name__

    def build(
        params: CifarModelParameters, *, num_classes: int, input_shape: tuple[int, ...]
    ) -> nn.Module:
        if tuple(input_shape) != CIFAR_INPUT_SHAPE:
            raise ConfigError(
                [f"input shape {tuple(input_shape)}: {name} takes {CIFAR_INPUT_SHAPE}"],
                title=f"model {name} does not fit the data",
            )
        model = constructor(num_classes)
        if params.checkpoint:
            load_state_dict_file(model, params.checkpoint)
        return model

    build.__name__ = f"build_{name}"
    build.__doc__ = f"Build {name} for ``num_classes`` classes, optionally from a checkpoint."
    return build


build_resnet20 = _factory(models.resnet20)
build_resnet32 = _factory(models.resnet32)
build_resnet44 = _factory(models.resnet44)
build_resnet56 = _factory(models.resnet56)
build_resnet110 = _factory(models.resnet110)
build_vgg16_bn = _factory(models.vgg16_bn)

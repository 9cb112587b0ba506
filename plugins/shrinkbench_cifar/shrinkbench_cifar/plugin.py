"""Registration of the CIFAR datasets and architectures (imports no torch).

Datasets: ``cifar10`` and ``cifar100`` (see :mod:`shrinkbench_cifar.data`).
Models: ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110``
(He et al. 2016, option-A shortcuts) and ``vgg16_bn_cifar`` (Zagoruyko 2015),
see :mod:`shrinkbench_cifar.models`. The VGG is registered as
``vgg16_bn_cifar`` so that it never shares a name with torchvision's ImageNet
``vgg16_bn``, which is a different network.
"""

from __future__ import annotations

from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import DatasetSpec, ModelSpec

from .parameters import CifarDataParameters, CifarModelParameters

CIFAR_INPUT_SHAPE = (3, 32, 32)

# registry name -> published parameter count in millions (10 classes)
_RESNETS = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
}
_REFERENCE_RESNET = "He et al. 2016, Deep Residual Learning for Image Recognition, section 4.2"
_REFERENCE_VGG = "Zagoruyko 2015, 92.45% on CIFAR-10 in Torch (cifar.torch vgg_bn_drop)"


@hookimpl
def shrinkbench_register_datasets() -> list[DatasetSpec]:
    """CIFAR-10 and CIFAR-100 with a seeded validation split held out of training."""
    return [
        DatasetSpec(
            name="cifar10",
            summary="CIFAR-10: 32x32 colour images, 10 classes, 50k train / 10k test.",
            factory="shrinkbench_cifar.data:build_cifar10",
            check="shrinkbench_cifar.checks:check_cifar10",
            parameters=CifarDataParameters,
            input_shape=CIFAR_INPUT_SHAPE,
            num_classes=10,
        ),
        DatasetSpec(
            name="cifar100",
            summary="CIFAR-100: 32x32 colour images, 100 fine classes, 50k train / 10k test.",
            factory="shrinkbench_cifar.data:build_cifar100",
            check="shrinkbench_cifar.checks:check_cifar100",
            parameters=CifarDataParameters,
            input_shape=CIFAR_INPUT_SHAPE,
            num_classes=100,
        ),
    ]


@hookimpl
def shrinkbench_register_models() -> list[ModelSpec]:
    """The CIFAR ResNets of He et al. 2016 and the CIFAR VGG-16 with batch norm."""
    specs = [
        ModelSpec(
            name=name,
            summary=f"CIFAR ResNet-{name[6:]} (He et al. 2016, option-A shortcuts, "
            f"{params}M parameters).",
            factory=f"shrinkbench_cifar.factories:build_{name}",
            parameters=CifarModelParameters,
            input_shapes=(CIFAR_INPUT_SHAPE,),
            classifier="fc",
            metadata={
                "family": "cifar-resnet",
                "depth": int(name[6:]),
                "num_params_millions": params,
                "reference": _REFERENCE_RESNET,
            },
        )
        for name, params in _RESNETS.items()
    ]
    specs.append(
        ModelSpec(
            name="vgg16_bn_cifar",
            summary="CIFAR VGG-16 with batch norm and dropout (Zagoruyko 2015, 15.0M parameters).",
            factory="shrinkbench_cifar.factories:build_vgg16_bn",
            parameters=CifarModelParameters,
            input_shapes=(CIFAR_INPUT_SHAPE,),
            classifier="classifier.5",
            metadata={
                "family": "cifar-vgg",
                "depth": 16,
                "num_params_millions": 15.0,
                "reference": _REFERENCE_VGG,
            },
        )
    )
    return specs

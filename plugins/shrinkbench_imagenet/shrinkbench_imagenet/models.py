"""Factories of torchvision's classification models.

``torchvision_models.<name>`` is the factory of model ``<name>`` (any name in
the catalogue, see :mod:`shrinkbench_imagenet.catalogue`), with the contract
``build(params, *, num_classes, input_shape) -> nn.Module``:

* ``weights=None``: torchvision's builder with ``num_classes`` (random init).
* ``weights="DEFAULT"`` or a torchvision weights name: the pretrained model,
  its weights read from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``)
  and downloaded there by torch when missing. When ``num_classes`` differs from
  the weights' categories, the classifier is replaced by a new one.
* ``checkpoint``: a local state_dict loaded last, every key and shape checked.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from shrinkbench_core.checkpoints import load_state_dict_file
from shrinkbench_core.errors import CheckpointError, ConfigError, UnknownComponentError

from .catalogue import load_catalogue
from .classifier import replace_classifier
from .parameters import TorchvisionModelParameters


def cached_weights_file(weights: Any) -> Path:
    """Where torch's hub cache keeps the file of a torchvision weights enum member."""
    import torch

    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_weights(name: str, requested: str) -> Any:
    """The weights enum member named ``requested`` ('DEFAULT', 'IMAGENET1K_V1', 'Enum.MEMBER')."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = requested.split(".", 1)[1] if requested.startswith(f"{enum.__name__}.") else requested
    allowed = ["DEFAULT", *(weights.name for weights in enum)]
    if member not in allowed:
        raise ConfigError(
            [f"weights: {name} has no weights {requested!r}; allowed: {', '.join(allowed)}"],
            title=f"invalid parameters of model {name}",
        )
    return enum[member]


def _download(weights: Any, file: Path) -> None:
    """Fetch the weights into the hub cache, or say where they were looked for."""
    import torch

    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as error:  # URLError without internet, hash mismatch, disk full...
        raise CheckpointError(
            f"pretrained weights {type(weights).__name__}.{weights.name} are not in the torch hub "
            f"cache ({file}) and could not be downloaded from {weights.url} "
            f"({type(error).__name__}: {error}). Download that file on a machine with internet "
            f"and copy it to {file.parent} (or point $TORCH_HOME at a cache that has it)."
        ) from error


def _pretrained(name: str, weights: Any, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    file = cached_weights_file(weights)
    if not file.is_file():
        _download(weights, file)
    try:
        return torchvision.models.get_model(name, weights=weights, progress=False, **kwargs)
    except Exception as error:  # a corrupted or foreign file in the cache
        raise CheckpointError(
            f"cached weights {file} could not be loaded into {name} "
            f"({type(error).__name__}: {str(error)[:200]}); delete the file to download it again"
        ) from error


def build_torchvision_model(
    name: str,
    params: TorchvisionModelParameters,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
) -> nn.Module:
    """Build torchvision's model ``name`` for ``num_classes`` classes (see the module doc)."""
    import torchvision

    catalogue = load_catalogue()
    if name not in catalogue:
        raise UnknownComponentError(f"torchvision {torchvision.__version__} has no model {name!r}")
    entry = catalogue[name]
    kwargs = {**entry["builder_defaults"], **params.builder_kwargs}
    if params.weights:
        weights = resolve_weights(name, params.weights)
        model = _pretrained(name, weights, kwargs)
        if len(weights.meta["categories"]) != num_classes:
            replace_classifier(model, entry["classifier"], num_classes)
    else:
        model = torchvision.models.get_model(name, num_classes=num_classes, **kwargs)
    if params.checkpoint:
        load_state_dict_file(model, params.checkpoint)
    return model


class _Factories:
    """``torchvision_models.<name>`` is ``build_torchvision_model`` bound to ``<name>``."""

    def __getattr__(self, name: str) -> partial[nn.Module]:
        if name.startswith("__"):
            raise AttributeError(name)
        return partial(build_torchvision_model, name)


torchvision_models = _Factories()

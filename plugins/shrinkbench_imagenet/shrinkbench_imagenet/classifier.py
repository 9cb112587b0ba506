"""Finding and replacing the classifier layer of a model, and a fast structural build."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

CLASSIFIER_TYPES = (nn.Linear, nn.Conv2d)


def _output_size(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def find_classifier(model: nn.Module, example: torch.Tensor, num_classes: int) -> str | None:
    """Name of the classifier: the last Linear/Conv2d run with ``num_classes`` outputs.

    The order is the order of execution on ``example`` (found with forward
    hooks), so auxiliary heads that do not run in eval mode are ignored.
    Returns ``None`` when no such layer runs.
    """
    executed: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, name=name: executed.append(name))
        for name, module in model.named_modules()
        if isinstance(module, CLASSIFIER_TYPES) and _output_size(module) == num_classes
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return executed[-1] if executed else None


def replace_classifier(model: nn.Module, name: str, num_classes: int) -> nn.Module:
    """Swap the classifier ``name`` for a freshly initialised one with ``num_classes`` outputs."""
    old = model.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    elif isinstance(old, nn.Conv2d):
        new = nn.Conv2d(
            old.in_channels,
            num_classes,
            old.kernel_size,  # type: ignore[arg-type]
            old.stride,  # type: ignore[arg-type]
            old.padding,  # type: ignore[arg-type]
            bias=old.bias is not None,
        )
    else:
        raise TypeError(f"classifier {name} is a {type(old).__name__}, not Linear or Conv2d")
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, new)
    return model


@contextmanager
def skipped_initialisation() -> Iterator[None]:
    """Make ``torch.nn.init``'s in-place initialisers no-ops while building a model.

    Parameters keep whatever memory they were allocated with: use this only to
    inspect a model's structure (layer names and output shapes), never to train
    it. It makes building the largest torchvision models ~100x faster. The
    patch is process-wide while active, so do not build models in other threads.
    """
    # The private ``_no_grad_*_`` helpers too: some modules import ``xavier_uniform_`` directly.
    names = [name for name in dir(nn.init) if name.endswith("_") and not name.startswith("__")]
    saved = {name: getattr(nn.init, name) for name in names}
    try:
        for name in names:
            setattr(nn.init, name, _unchanged)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _unchanged(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor

"""How the run's training steps execute: precision, memory layout, data parallelism.

The runner sets the options of a run once (:func:`training_options`, a context manager);
the shared epoch loop (:func:`shrinkbench_core.experiment.training.train_epoch`) asks for
them with :func:`current_training_options`, so every stage (dense training, iterative
rounds, fine-tuning) trains the same way without each one passing them on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkbench_core.experiment.precision import (
    autocast,
    backward_and_step,
    grad_scaler,
    to_channels_last,
)

__all__ = ["TrainingOptions", "current_training_options", "options_for", "training_options"]


@dataclass
class TrainingOptions:
    """``precision`` (fp32, bf16, fp16), ``channels_last`` inputs, DDP when ``distributed``."""

    precision: str = "fp32"
    channels_last: bool = False
    distributed: bool = False
    _scalers: dict[int, Any] = field(default_factory=dict, repr=False)

    def forward_module(self, model: nn.Module, device: torch.device) -> nn.Module:
        """What the training loop calls: ``model``, or a DDP wrapper of it (one per epoch;
        building it broadcasts rank 0's weights and buffers, so every rank starts equal)."""
        if not self.distributed:
            return model
        device_ids = [device.index or 0] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def inputs(self, batch: Any) -> Any:
        """The batch in the configured memory layout."""
        if self.channels_last and isinstance(batch, torch.Tensor):
            return to_channels_last(batch)
        return batch

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast of the configured precision on ``device``."""
        return autocast(self.precision, device)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             device: torch.device) -> None:
        """Backward and optimizer step (through a gradient scaler for fp16, kept per
        optimizer so its scale carries over epochs)."""
        key = id(optimizer)
        if key not in self._scalers:
            self._scalers[key] = grad_scaler(self.precision, device)
        backward_and_step(loss, optimizer, self._scalers[key])


_current: ContextVar[TrainingOptions | None] = ContextVar("shrinkbench_training", default=None)


def current_training_options() -> TrainingOptions:
    """The options of the run in progress (fp32, no DDP, when none is set)."""
    return _current.get() or TrainingOptions()


@contextlib.contextmanager
def training_options(options: TrainingOptions) -> Iterator[TrainingOptions]:
    """Train with ``options`` inside the block."""
    token = _current.set(options)
    try:
        yield options
    finally:
        _current.reset(token)


def options_for(config: Any) -> TrainingOptions:
    """The options an :class:`~shrinkbench_core.config.ExperimentConfig` asks for; DDP
    whenever this process belongs to a process group of more than one rank."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return TrainingOptions(config.precision, config.channels_last, distributed)

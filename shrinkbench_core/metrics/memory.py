"""Peak activation memory of one forward pass.

Method (every device): the forward pass runs in eval mode under
``torch.no_grad`` inside a dispatch mode that sees every tensor an operator
returns. Each new storage is added to the live total when it is created and
subtracted when the last tensor using it is freed (weak references); the peak of
that total is the peak activation memory. Parameters, buffers and the input
batch are not activations and are never counted; views share their base's
storage and cost nothing; the output of the model counts (it is alive at the
end). Scratch memory that a kernel allocates and frees internally (e.g. a
convolution's workspace) is not seen, so the figure depends only on the model
and the batch, not on the backend.

On CUDA the caching allocator's own figure is reported as well:
``torch.cuda.max_memory_allocated`` during the pass minus what was allocated
before it (includes kernel workspaces).
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from shrinkbench_core.builtin.metrics import MemoryParameters
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.metrics.latency import make_batch


@dataclass(frozen=True)
class MemoryReport:
    """Peak activation memory (bytes) of one forward pass of a batch of ``batch_size``."""

    peak_activation_bytes: int
    batch_size: int
    device: str
    allocator_peak_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ``peak_activation_mib``, JSON-friendly."""
        return {**asdict(self), "peak_activation_mib": self.peak_activation_bytes / 2**20}


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


class _LiveStorages(TorchDispatchMode):
    """Tracks bytes of live storages created by operators, and their peak."""

    def __init__(self, excluded: set[int]) -> None:
        super().__init__()
        self.excluded = excluded
        self.holders: dict[int, int] = {}  # storage key -> live tensors using it
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            del self.holders[key]
            self.live -= self.sizes.pop(key)

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta" or tensor.layout != torch.strided:
            return
        key = _storage_key(tensor)
        if key == 0 or key in self.excluded:
            return
        if key not in self.holders:
            self.holders[key] = 0
            self.sizes[key] = tensor.untyped_storage().nbytes()
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(item) for item in tree_flatten((args, kwargs))[0]}
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and id(item) not in inputs:
                self._track(item)
        return out


def _resident_storages(model: nn.Module, batch: torch.Tensor) -> set[int]:
    tensors = [*model.parameters(), *model.buffers(), batch]
    return {_storage_key(t) for t in tensors if t.device.type != "meta"}


def peak_activation_memory(model: nn.Module, batch: torch.Tensor) -> MemoryReport:
    """Peak bytes of activations alive at once during ``model(batch)``.

    Runs in eval mode under ``torch.no_grad`` on the batch's device and restores
    the training flag. On CUDA also reports the allocator's peak above the
    memory allocated before the pass.
    """
    was_training = model.training
    cuda = batch.device.type == "cuda"
    tracker = _LiveStorages(_resident_storages(model, batch))
    try:
        model.eval()
        with torch.no_grad():
            if cuda:
                torch.cuda.synchronize(batch.device)
                torch.cuda.reset_peak_memory_stats(batch.device)
                before = torch.cuda.memory_allocated(batch.device)
            with tracker:
                output = model(batch)
            if cuda:
                torch.cuda.synchronize(batch.device)
                allocator_peak = torch.cuda.max_memory_allocated(batch.device) - before
        del output
    finally:
        model.train(was_training)
    return MemoryReport(
        peak_activation_bytes=tracker.peak,
        batch_size=int(batch.shape[0]),
        device=str(batch.device),
        allocator_peak_bytes=allocator_peak if cuda else None,
    )


def compute(context: MetricContext, params: MemoryParameters) -> dict[str, Any]:
    """The ``memory`` metric on copies of ``context.example_input``.

    Keys: ``peak_activation_bytes``, ``peak_activation_mib``, ``batch_size``,
    ``device``, ``allocator_peak_bytes`` (CUDA only, else ``None``).
    """
    batch = make_batch(context.example_input, params.batch_size or context.batch_size)
    return peak_activation_memory(context.model, batch).as_dict()

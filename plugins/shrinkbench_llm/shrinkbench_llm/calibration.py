"""Sequential block-wise calibration, as SparseGPT, Wanda and OWL prune language models.

The inputs of the first transformer block are captured once (the embeddings'
output and the keyword arguments the model passes its blocks: attention mask,
rotary position embeddings...). Then, block by block: the block's linear
layers record statistics of their inputs while the block runs on the stored
inputs; the caller prunes the block; the pruned block runs again and its outputs
replace the stored inputs, becoming the next block's inputs. Only one block's
activations (plus one layer's statistics) are held at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.experiment.progress import progress

Call = tuple[tuple[Any, ...], dict[str, Any]]


class _Captured(Exception):
    """Stops the forward pass once the first block's inputs are captured."""


def find_blocks(model: nn.Module, prunable: list[str]) -> tuple[str, nn.ModuleList]:
    """The ``ModuleList`` (transformer blocks) holding the most prunable parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module):
            prefix = f"{name}."
            count = sum(1 for p in prunable if p.startswith(prefix))
            if count and (best is None or count > best[0]):
                best = (count, name, module)
    if best is None:
        raise UserError(
            "no list of transformer blocks holding prunable layers found; LM strategies prune "
            "the linear layers of a model's blocks (an nn.ModuleList)"
        )
    return best[1], best[2]


@dataclass
class LayerStatistics:
    """Input statistics of one linear layer over the calibration tokens."""

    tokens: int = 0
    sq_norms: torch.Tensor | None = None  # sum over tokens of x_j^2, [in]
    hessian: torch.Tensor | None = None  # sum over tokens of x x^T, [in, in]
    extra: dict[str, Any] = field(default_factory=dict)

    def take_mean_hessian(self) -> torch.Tensor:
        """``X^T X / tokens``, computed in place and handed over (no longer held here)."""
        assert self.hessian is not None
        hessian, self.hessian = self.hessian, None
        return hessian.div_(max(self.tokens, 1))


class BlockRun:
    """Runs one block on the stored calibration inputs."""

    def __init__(self, block: nn.Module, calls: list[Call]) -> None:
        self.block = block
        self.calls = calls

    def statistics(
        self, layers: dict[str, nn.Linear], hessian: bool = False
    ) -> dict[str, LayerStatistics]:
        """Input statistics of ``layers`` (names -> modules of this block) over every call."""
        stats = {name: LayerStatistics() for name in layers}
        handles = []
        for name, layer in layers.items():

            def hook(_module, inputs, _output, name=name):
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
                s = stats[name]
                s.tokens += x.shape[0]
                squares = (x * x).sum(0)
                s.sq_norms = squares if s.sq_norms is None else s.sq_norms + squares
                if hessian:
                    h = x.t() @ x
                    s.hessian = h if s.hessian is None else s.hessian + h

            handles.append(layer.register_forward_hook(hook))
        try:
            for args, kwargs in self.calls:
                self.block(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return stats

    def propagate(self) -> None:
        """Replace the stored inputs by this block's outputs (the next block's inputs)."""
        for index, (args, kwargs) in enumerate(self.calls):
            output = self.block(*args, **kwargs)
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if args:
                self.calls[index] = ((hidden, *args[1:]), kwargs)
            else:
                self.calls[index] = (args, {**kwargs, "hidden_states": hidden})


def capture_inputs(
    model: nn.Module, first_block: nn.Module, ids: torch.Tensor, batch_size: int
) -> list[Call]:
    """The positional and keyword arguments the first block receives, per batch of ``ids``."""
    calls: list[Call] = []

    def hook(_module, args, kwargs):
        calls.append((tuple(args), dict(kwargs)))
        raise _Captured

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, ids.shape[0], batch_size):
            with suppress(_Captured):
                model(ids[start : start + batch_size])
    finally:
        handle.remove()
    if len(calls) != -(-ids.shape[0] // batch_size):
        raise UserError("could not capture the inputs of the model's first transformer block")
    return calls


def sequential_blocks(
    model: nn.Module,
    blocks: nn.ModuleList,
    ids: torch.Tensor,
    batch_size: int = 8,
    description: str = "calibrate",
) -> Iterator[tuple[int, nn.Module, BlockRun]]:
    """Yield ``(index, block, run)`` in order; after the caller's turn, outputs move on.

    The model runs in eval mode without gradients; its training flag is restored.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            calls = capture_inputs(model, blocks[0], ids, batch_size)
            for index in progress(range(len(blocks)), description, total=len(blocks)):
                run = BlockRun(blocks[index], calls)
                yield index, blocks[index], run
                if index + 1 < len(blocks):
                    run.propagate()
    finally:
        model.train(was_training)

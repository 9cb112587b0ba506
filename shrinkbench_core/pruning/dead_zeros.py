"""Zeros that a selection of weights holds without a mask.

A parameter outside the prunable set is never masked, so a compression budget counts it as
kept. But masks can make some of its zero entries unable to move: once every weight feeding a
channel is masked, the channel's BatchNorm shift (zero at initialization) sees a constant
input, gets no gradient through ``ReLU(0)`` and stays zero through fine-tuning. Such entries
are as pruned as a masked weight. :func:`dead_zeros` finds them: the zero entries outside the
masks that get an exactly zero gradient with the masks applied (train mode, one probe batch);
a gradient is exactly zero for every input only when no path reaches the entry, which a
random probe shows (a live BatchNorm shift always gets a gradient on a batch of several
examples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

PROBE_BATCH = 8


def zero_entries_outside(model: nn.Module, prunable: Sequence[str]) -> bool:
    """Whether any parameter outside ``prunable`` holds a zero entry."""
    inside = set(prunable)
    return any(
        bool((p.detach() == 0).any()) for n, p in model.named_parameters() if n not in inside
    )


def probe_batch(
    calibration: Sequence[tuple[Any, Any]] | None,
    input_shape: Sequence[int] | None,
    seed: int = 0,
) -> torch.Tensor | None:
    """Inputs to probe gradients with (up to :data:`PROBE_BATCH` examples): the first
    calibration batch, else a seeded standard normal batch of ``input_shape`` (None when
    neither is known)."""
    if calibration:
        inputs = calibration[0][0]
        if isinstance(inputs, torch.Tensor) and inputs.shape[0] > 1:
            return inputs[:PROBE_BATCH]
    if input_shape is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(PROBE_BATCH, *input_shape, generator=generator)


def dead_zeros(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    inputs: torch.Tensor,
) -> int | None:
    """Zero entries of unmasked parameters that get no gradient once ``masks`` are applied.

    The model is left as it was (weights, buffers, gradients, mode). None when the probe
    cannot run: the model's output is not a floating-point tensor (no generic loss to probe
    with) or the forward or backward pass fails on ``inputs``.
    """
    from shrinkbench_core.pruning.strategy import preserved_state  # no import cycle

    params = dict(model.named_parameters())
    watched = {
        name: p for name, p in params.items() if name not in masks and bool((p == 0).any())
    }
    if not watched:
        return 0
    saved = {name: params[name].detach().clone() for name in masks}
    device = next(iter(params.values())).device
    try:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name].device, params[name].dtype))
        with preserved_state(model, train=True):
            model.zero_grad(set_to_none=True)
            try:
                output = model(inputs.to(device))
                if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                    return None
                generator = torch.Generator().manual_seed(0)
                weights = torch.randn(output.shape, generator=generator).to(output)
                (output * weights).sum().backward()
            except Exception:  # inputs the model does not take, out of memory: no probe
                return None
            dead = 0
            for p in watched.values():
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                dead += int(((p.detach() == 0) & (grad == 0)).sum())
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)
    return dead

"""Compression accounting, as the paper defines it.

compression ratio = all parameters / nonzero parameters (every parameter of
the model counts, prunable or not).

A budget counts as pruned only what a mask will hold at zero: the zeros of the
prunable parameters (pruned before, or ranked below every nonzero weight and so
masked now). Parameters outside the prunable set are never masked, so all their
entries count as kept, zeros included: a bias or BatchNorm shift initialized to
zero becomes nonzero in training, and counting it as pruned would leave the
fine-tuned model short of the requested ratio (64.01x pruned at initialization,
59.85x after fine-tuning, on a CIFAR ResNet-20 at 64x). The zeros the selection leaves
unable to move (shifts of channels pruned whole) are counted by the strategy instead
(:mod:`shrinkbench_core.pruning.dead_zeros`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from shrinkbench_core.errors import CompressionError


@dataclass(frozen=True)
class Budget:
    """How many prunable weights to keep to reach a compression ratio."""

    compression: float
    total: int  # all parameters of the model
    prunable: int  # prunable parameters
    fixed_nonzero: int  # parameters outside the prunable set (no mask holds them: all kept)
    prunable_nonzero: int  # nonzero prunable parameters now
    keep: int  # prunable weights to keep
    with_zeros: frozenset[str] = frozenset()  # prunable parameters holding zeros already

    @property
    def fraction(self) -> float:
        """Fraction of prunable weights kept."""
        return self.keep / self.prunable if self.prunable else 1.0

    @property
    def achieved(self) -> float:
        """The compression ratio reached by keeping ``keep`` nonzero prunable weights."""
        return self.total / (self.fixed_nonzero + self.keep)


def count_nonzero(tensors: Iterable[torch.Tensor]) -> int:
    """Number of nonzero entries across ``tensors``."""
    return sum(int(torch.count_nonzero(t)) for t in tensors)


def compression_budget(model: nn.Module, prunable: list[str], compression: float) -> Budget:
    """The exact number of prunable weights to keep for ``compression``.

    Zeros of the prunable parameters count as pruned (pruning an already pruned
    model to a higher ratio prunes only the difference; they are masked again).
    Parameters outside ``prunable`` count whole, zeros included, since no mask
    holds them (see the module docstring). Raises :class:`CompressionError`
    for a ratio below 1, or one that cannot be reached, naming the largest
    reachable value.
    """
    if not compression >= 1:
        raise CompressionError(
            f"compression must be >= 1 (all parameters / nonzero parameters), got {compression}"
        )
    params = dict(model.named_parameters())
    prunable_set = set(prunable)
    total = sum(p.numel() for p in params.values())
    prunable_total = sum(params[n].numel() for n in prunable)
    fixed_nonzero = sum(p.numel() for n, p in params.items() if n not in prunable_set)
    nonzero = {n: int(torch.count_nonzero(params[n].detach())) for n in prunable}
    prunable_nonzero = sum(nonzero.values())
    with_zeros = frozenset(n for n in prunable if nonzero[n] < params[n].numel())
    if prunable_total == 0:
        raise CompressionError("the model has no prunable parameters under the current rule")
    target_nonzero = round(total / compression)
    keep = target_nonzero - fixed_nonzero
    largest = total / (fixed_nonzero + 1)
    if keep < 1:
        raise CompressionError(
            f"compression {compression:g} cannot be reached: {fixed_nonzero} parameters "
            f"are not prunable (of {total}). The largest reachable compression is {largest:.4g}."
        )
    current = total / (fixed_nonzero + prunable_nonzero) if fixed_nonzero + prunable_nonzero else 0
    if keep > prunable_nonzero:
        raise CompressionError(
            f"compression {compression:g} is below the model's current compression "
            f"{current:.4g}; pruning cannot add weights back."
        )
    return Budget(
        compression, total, prunable_total, fixed_nonzero, prunable_nonzero, keep, with_zeros
    )


def fraction_to_keep(compression: float, model: nn.Module, prunable: list[str]) -> float:
    """Fraction of the prunable weights to keep so the model reaches ``compression``."""
    return compression_budget(model, prunable, compression).fraction

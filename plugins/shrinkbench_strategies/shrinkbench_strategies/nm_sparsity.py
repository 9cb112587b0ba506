"""N:M semi-structured sparsity by magnitude (2:4 by default).

In every group of ``m`` consecutive weights along the input-channel dimension
at most ``n`` are nonzero: the ``n`` of largest ``|w|`` are kept (ties by
position; weights that are already zero are never kept). Groups follow NVIDIA's
sparse tensor cores (Mishra et al. 2021) and apex's ASP: a Linear weight
``(out, in)`` is grouped along ``in``; a convolution weight ``(out, in, *k)``
along ``in`` at each output channel and kernel position.

Compression. The pattern, not the requested ratio, fixes the sparsity: every
compatible prunable parameter keeps ``n/m`` of its weights. The ``compression``
argument is therefore *ignored* (only checked to be >= 1); when it differs from
what the pattern reaches by more than 1%, a warning names both numbers, and the
achieved ratio is in ``achieved_compression``.

Incompatible parameters (fewer than 2 dimensions, or an input dimension that
is not a multiple of ``m``) stop the run by default; with
``incompatible="skip"`` they stay dense and are listed in ``skipped``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import CompressionError, MaskError, UserError, warn
from shrinkbench_core.pruning import Masks, Strategy
from shrinkbench_strategies.params import NMParameters


def nm_incompatibility(shape: tuple[int, ...], m: int) -> str | None:
    """Why a parameter of ``shape`` cannot be grouped by ``m`` (``None`` if it can)."""
    if len(shape) < 2:
        return f"has {len(shape)} dimension(s); N:M needs an input-channel dimension"
    if shape[1] % m:
        return f"input dimension {shape[1]} is not a multiple of m={m}"
    return None


def _to_groups(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """View ``(out, in, *k)`` as ``(groups, m)``: consecutive input channels per group."""
    moved = tensor.movedim(1, -1)  # (out, *k, in)
    return moved.reshape(-1, m)


def _from_groups(groups: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    moved_shape = (shape[0], *shape[2:], shape[1])
    return groups.reshape(moved_shape).movedim(-1, 1)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest ``|w|`` of every group of ``m``; zeros are never kept."""
    groups = _to_groups(weight.detach().abs().float(), m)
    alive = _to_groups(weight.detach() != 0, m)
    ranked = torch.where(alive, groups, torch.tensor(float("-inf"), device=groups.device))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :n]
    kept = torch.zeros_like(alive).scatter_(1, order, True) & alive
    return _from_groups(kept, tuple(weight.shape))


def nm_violations(mask: torch.Tensor, n: int, m: int) -> int:
    """Number of groups of ``m`` with more than ``n`` kept entries."""
    return int((_to_groups(mask, m).sum(1) > n).sum())


def satisfies_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of ``m`` (along dim 1) keeps at most ``n`` entries."""
    return nm_incompatibility(tuple(mask.shape), m) is None and nm_violations(mask, n, m) == 0


def model_compression(model: nn.Module) -> float:
    """All parameters / nonzero parameters of ``model`` now."""
    params = list(model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    return sum(p.numel() for p in params) / nonzero if nonzero else float("inf")


class NMMagnitude(Strategy):
    """Keep the ``n`` largest-magnitude weights in every group of ``m`` input channels."""

    Parameters = NMParameters

    def __init__(self, model: nn.Module, compression: float, **kwargs: Any) -> None:
        if not compression >= 1:
            raise CompressionError(
                f"compression must be >= 1 (all parameters / nonzero parameters), got {compression}"
            )
        # The pattern fixes the sparsity: budget the current model, keep the request to report.
        super().__init__(model, model_compression(model), **kwargs)
        self.compression = compression
        self.skipped: dict[str, str] = {}
        self.achieved_compression: float | None = None

    def model_masks(self) -> Masks:
        n, m = self.options.n, self.options.m
        params = self.params()
        reasons = {
            name: reason
            for name, p in params.items()
            if (reason := nm_incompatibility(tuple(p.shape), m)) is not None
        }
        if reasons and self.options.incompatible == "error":
            listed = "; ".join(f"{name} {why}" for name, why in list(reasons.items())[:5])
            raise UserError(
                f"N:M {n}:{m} cannot be applied to {len(reasons)} prunable parameter(s): {listed}. "
                "Set `-p strategy.incompatible=skip` to leave them dense, or exclude them "
                "with the prunable rule."
            )
        self.skipped = reasons
        if reasons:
            warn(f"N:M {n}:{m}: left {len(reasons)} parameter(s) dense: {', '.join(reasons)}")
        masks: Masks = {}
        for name, p in params.items():
            masks[name] = p != 0 if name in reasons else nm_mask(p, n, m)
            if name not in reasons and nm_violations(masks[name], n, m):
                raise MaskError(f"internal error: the {n}:{m} mask of {name} breaks the pattern")
        self._report(masks)
        return masks

    def _report(self, masks: Masks) -> None:
        total = self.budget.total
        kept = sum(int(mask.sum()) for mask in masks.values())
        self.achieved_compression = total / (self.budget.fixed_nonzero + kept)
        requested = self.compression
        if abs(self.achieved_compression - requested) > 0.01 * requested:
            warn(
                f"N:M {self.options.n}:{self.options.m} reaches compression "
                f"{self.achieved_compression:.4g}; the requested {requested:g} is ignored "
                "(the pattern fixes the sparsity)"
            )

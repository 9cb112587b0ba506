"""OWL (Yin et al. 2024): non-uniform layerwise sparsity from the outlier ratio of each block.

A block's outlier ratio is the share of its Wanda scores ``|W_ij| ||X_j||``
(all linear layers of the block together) above ``M`` times their mean. Ratios
are rescaled to ``[0, 2 lambda]``, centred on the target density ``1 - s``, and
each block keeps that fraction: blocks with more outliers are pruned less, the
mean sparsity stays ``s`` and every block stays within ``s +- lambda``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||_2`` from the per-input sums of squares ``sum_t x_tj^2``."""
    return weight.detach().abs().float() * input_sq_norms.float().sqrt().reshape(1, -1)


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """Fraction of all entries of ``scores`` above ``m`` x their common mean."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    return float((flat > m * flat.mean()).sum()) / flat.numel()


def owl_sparsities(ratios: Sequence[float], sparsity: float, lamda: float) -> list[float]:
    """Per-block sparsities: ``1 - (r'_k - mean(r') + 1 - s)`` with ``r'`` in ``[0, 2 lambda]``.

    Equal ratios give the uniform sparsity ``s``. Values are clamped to [0, 1).
    """
    r = torch.tensor(list(ratios), dtype=torch.float64)
    spread = r.max() - r.min()
    scaled = (r - r.min()) / spread * (2 * lamda) if spread > 0 else torch.zeros_like(r)
    density = scaled - scaled.mean() + (1 - sparsity)
    return [min(max(1.0 - float(d), 0.0), 0.999) for d in density]

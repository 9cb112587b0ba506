"""Mask selection inside one weight matrix: per layer, per output row, or N:M groups.

Every function takes scores shaped like the weight ``[out, in]`` (higher = more
important) and returns a bool keep-mask of the same shape. Ties are broken by
position (stable sort), so results are deterministic.
"""

from __future__ import annotations

import torch


def even_split(total: int, parts: int) -> torch.Tensor:
    """``parts`` integers summing to ``total``, differing by at most one (first ones larger)."""
    base, extra = divmod(int(total), int(parts))
    counts = torch.full((parts,), base, dtype=torch.long)
    counts[:extra] += 1
    return counts


def prune_lowest_per_row(scores: torch.Tensor, prune: torch.Tensor) -> torch.Tensor:
    """Keep-mask removing the ``prune[r]`` lowest scores of every row ``r``."""
    order = scores.float().argsort(dim=1, stable=True)
    ranks = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    keep_sorted = ranks >= prune.to(scores.device).unsqueeze(1)
    mask = torch.empty_like(keep_sorted)
    mask.scatter_(1, order, keep_sorted)
    return mask


def row_mask(scores: torch.Tensor, prune_count: int) -> torch.Tensor:
    """Remove ``prune_count`` weights, spread evenly over the rows (Wanda's comparison groups)."""
    return prune_lowest_per_row(scores, even_split(prune_count, scores.shape[0]))


def layer_mask(scores: torch.Tensor, prune_count: int) -> torch.Tensor:
    """Remove the ``prune_count`` lowest scores of the whole matrix."""
    flat = scores.reshape(1, -1)
    return prune_lowest_per_row(flat, torch.tensor([prune_count])).reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs of a row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} input features are not a multiple of m={m}")
    groups = scores.reshape(-1, m)
    mask = prune_lowest_per_row(groups, torch.full((groups.shape[0],), m - n))
    return mask.reshape(rows, cols)


def prune_count_of(numel: int, sparsity: float) -> int:
    """Weights removed from a matrix of ``numel`` at ``sparsity`` (rounded to nearest)."""
    return min(numel, max(0, round(numel * sparsity)))

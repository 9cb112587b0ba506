"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning by OBS reconstruction of one layer.

For a linear layer with weight ``W [out, in]`` and the Hessian of the layer-wise
squared error ``H = X^T X / tokens`` (``X``: the layer's calibration inputs),
columns are processed left to right. Removing ``w_rj`` and compensating with the
columns still to come is the optimal brain surgeon update, whose terms are read
from the upper Cholesky factor ``U`` of ``H^{-1}`` (``U_jj^2`` is the ``[0, 0]``
entry of the inverse of ``H`` restricted to columns ``j..``). Masks are chosen per
block of ``blocksize`` columns by the OBS error ``w^2 / U_jj^2`` (adaptive mask
selection), or per group of ``m`` columns for N:M. Updates inside a block are
immediate; the rest of the matrix is updated once per block (lazy batching).
"""

from __future__ import annotations

import torch

from .selection import layer_mask, nm_mask


def inverse_hessian_factor(
    hessian: torch.Tensor, percdamp: float, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of ``(H + damp I)^{-1}`` and the mask of dead inputs.

    Inputs that were always zero (``H_jj = 0``) get ``H_jj = 1`` so the matrix is
    invertible; damp = ``percdamp`` x mean of the diagonal. ``inplace`` lets the
    computation overwrite a float32 ``hessian`` (one ``[in, in]`` matrix less held).
    """
    h = hessian if inplace and hessian.dtype == torch.float32 else hessian.float().clone()
    diagonal = h.diagonal()
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal += percdamp * torch.mean(diagonal)
    lower = torch.linalg.cholesky(h)
    del h, diagonal
    inverse = torch.cholesky_inverse(lower)
    del lower
    return torch.linalg.cholesky(inverse, upper=True), dead


def block_prune_counts(prune_count: int, columns: int, blocksize: int) -> list[int]:
    """How many of ``prune_count`` weights each column block removes (exact sum)."""
    bounds = list(range(0, columns, blocksize)) + [columns]
    cumulative = [round(prune_count * b / columns) for b in bounds]
    return [cumulative[i + 1] - cumulative[i] for i in range(len(bounds) - 1)]


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    prune_count: int = 0,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    overwrite_hessian: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pruned and reconstructed weight (input dtype) and its bool keep-mask.

    Unstructured: exactly ``prune_count`` weights removed, split over column
    blocks in proportion to their width. ``nm=(n, m)``: ``n`` kept of every ``m``
    consecutive inputs of each row (``blocksize`` must be a multiple of ``m``).
    ``overwrite_hessian`` lets it use a float32 ``hessian``'s memory.
    """
    rows, columns = weight.shape
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize {blocksize} is not a multiple of m={nm[1]}")
    w = weight.detach().clone().float()
    factor, dead = inverse_hessian_factor(hessian.to(w.device), percdamp, overwrite_hessian)
    w[:, dead] = 0
    keep = torch.ones(rows, columns, dtype=torch.bool, device=w.device)
    counts = block_prune_counts(prune_count, columns, blocksize)
    for block, start in enumerate(range(0, columns, blocksize)):
        end = min(start + blocksize, columns)
        w1 = w[:, start:end].clone()
        u1 = factor[start:end, start:end]
        diag = torch.diag(u1)
        errors = torch.zeros_like(w1)
        if nm is None:
            keep[:, start:end] = layer_mask(w1.pow(2) / diag.pow(2), counts[block])
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                group = slice(i, i + nm[1])
                saliency = w1[:, group].pow(2) / diag[group].pow(2)
                keep[:, start + i : start + i + nm[1]] = nm_mask(saliency, *nm)
            column = w1[:, i]
            kept = column * keep[:, start + i]
            error = (column - kept) / u1[i, i]
            w1[:, i:] -= error.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            w1[:, i] = kept
            errors[:, i] = error
        w[:, start:end] = w1
        w[:, end:] -= errors @ factor[start:end, end:]
    w *= keep
    return w.to(weight.dtype), keep

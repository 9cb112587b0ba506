"""SparseGPT against a direct dense OBS computation with explicit inverses."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("shrinkbench_llm")

from shrinkbench_llm.sparsegpt import block_prune_counts, sparsegpt_prune  # noqa: E402


def dense_obs_reference(weight, hessian, prune_count, nm, blocksize, percdamp):
    """SparseGPT's procedure written out with explicit inverses, no Cholesky, in float64.

    Column j is removed from row r with the OBS update of the columns j.. still to
    come: w_r[j:] -= w_rj / [H_j^-1]_00 * [H_j^-1]_0,: where H_j = H[j:, j:] (dampened).
    Masks: per block, the lowest w^2 / [H_j^-1]_00 at the block start (or per m-group).
    """
    w = weight.double().clone()
    h = hessian.double().clone()
    rows, cols = w.shape
    h += percdamp * torch.diag(h).mean() * torch.eye(cols, dtype=torch.float64)
    inv_first = torch.stack([torch.linalg.inv(h[j:, j:])[0, 0] for j in range(cols)])
    keep = torch.ones(rows, cols, dtype=torch.bool)
    counts = block_prune_counts(prune_count, cols, blocksize)
    for block, start in enumerate(range(0, cols, blocksize)):
        end = min(start + blocksize, cols)
        if nm is None:
            saliency = w[:, start:end] ** 2 / inv_first[start:end]
            order = saliency.flatten().argsort(stable=True)[: counts[block]]
            block_keep = torch.ones(saliency.numel(), dtype=torch.bool)
            block_keep[order] = False
            keep[:, start:end] = block_keep.view(rows, end - start)
        for j in range(start, end):
            if nm is not None and (j - start) % nm[1] == 0:
                n, m = nm
                saliency = w[:, j : j + m] ** 2 / inv_first[j : j + m]
                lowest = saliency.argsort(dim=1, stable=True)[:, : m - n]
                group = torch.ones(rows, m, dtype=torch.bool)
                group.scatter_(1, lowest, False)
                keep[:, j : j + m] = group
            hj = torch.linalg.inv(h[j:, j:])
            for r in range(rows):
                if not keep[r, j]:
                    w[r, j:] -= w[r, j] / hj[0, 0] * hj[0, :]
                    w[r, j] = 0.0
    return w * keep, keep


def _layer(rows=6, cols=16, tokens=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator)
    x = torch.randn(tokens, cols, generator=generator) @ torch.randn(
        cols, cols, generator=generator
    )
    return weight, x, x.t() @ x / tokens


@pytest.mark.parametrize(
    ("prune_count", "nm", "blocksize"),
    [(48, None, 4), (40, None, 16), (37, None, 8), (0, (2, 4), 8), (0, (1, 4), 4)],
)
def test_sparsegpt_equals_dense_obs_reference(prune_count, nm, blocksize):
    weight, _x, hessian = _layer()
    ours, keep = sparsegpt_prune(
        weight.double(), hessian.double(), prune_count, nm=nm, blocksize=blocksize, percdamp=0.01
    )
    expected, expected_keep = dense_obs_reference(weight, hessian, prune_count, nm, blocksize, 0.01)
    assert torch.equal(keep, expected_keep)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-4, atol=1e-4)
    if nm is None:
        assert int((~keep).sum()) == prune_count
    else:
        n, m = nm
        assert torch.all(keep.view(-1, m).sum(1) == n)


def test_reconstruction_beats_plain_masking_with_the_same_mask():
    weight, x, hessian = _layer(rows=8, cols=32, tokens=256, seed=3)
    pruned, keep = sparsegpt_prune(weight, hessian, prune_count=128, blocksize=8)
    masked = weight * keep
    error_obs = ((x @ (weight - pruned).t()) ** 2).sum()
    error_mask = ((x @ (weight - masked).t()) ** 2).sum()
    assert error_obs < 0.8 * error_mask
    assert torch.equal(pruned == 0, ~keep | (weight == 0))


def test_one_pruned_weight_gets_the_exact_obs_optimum():
    """Removing one weight of the first column: the update is the closed-form OBS optimum."""
    weight, _x, hessian = _layer(rows=1, cols=6, seed=5)
    weight[0, 0] = 1e-3  # smallest saliency: the one weight removed
    damped = hessian + 0.01 * torch.diag(hessian).mean() * torch.eye(6)
    pruned, keep = sparsegpt_prune(weight, hessian, prune_count=1, blocksize=6)
    inverse = torch.linalg.inv(damped.double())
    optimum = weight.double() - weight[0, 0] / inverse[0, 0] * inverse[0:1, :]
    assert not keep[0, 0]
    torch.testing.assert_close(pruned.double(), optimum, rtol=1e-4, atol=1e-6)


def test_block_prune_counts_are_exact():
    assert block_prune_counts(37, 16, 8) == [18, 19]
    assert sum(block_prune_counts(1001, 300, 128)) == 1001


def test_dead_inputs_are_handled():
    weight, _x, hessian = _layer(rows=4, cols=8, seed=7)
    hessian[2, :] = 0
    hessian[:, 2] = 0
    pruned, keep = sparsegpt_prune(weight, hessian, prune_count=16, blocksize=8)
    assert torch.isfinite(pruned).all()
    assert torch.all(pruned[:, 2] == 0)

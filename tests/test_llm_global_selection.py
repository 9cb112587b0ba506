"""Global selection on bf16 weights (LLM-sized dtypes): exact counts, ties by position."""

from __future__ import annotations

import pytest
import torch

from shrinkbench_core.pruning.importance import map_importances, top_count_masks


def _reference(params, keep):
    flat = torch.cat([p.float().abs().reshape(-1) for p in params.values()])
    order = torch.argsort(-flat, stable=True)[:keep]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order] = True
    out, start = {}, 0
    for name, p in params.items():
        out[name] = chosen[start : start + p.numel()].view(p.shape)
        start += p.numel()
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_streamed_selection_equals_a_stable_sort_on_low_precision_weights(dtype):
    generator = torch.Generator().manual_seed(0)
    # 2^19 + some weights: above the sample size, so the bracket and scan path runs;
    # bf16 has only 128 values per binade, so hundreds of weights tie at the threshold
    params = {
        "a": torch.randn(512, 640, generator=generator).to(dtype),
        "b": torch.randn(300, 1024, generator=generator).to(dtype),
    }
    total = sum(p.numel() for p in params.values())
    for keep in (total // 2, total // 10, 12345):
        masks = top_count_masks(map_importances(torch.abs, params, elementwise=True), keep)
        assert sum(int(m.sum()) for m in masks.values()) == keep
        expected = _reference(params, keep)
        for name in params:
            assert torch.equal(masks[name], expected[name]), (dtype, keep, name)

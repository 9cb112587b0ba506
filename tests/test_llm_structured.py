"""Structured (channel) pruning of the plugin's tiny-gpt: traced by fx with token ids."""

from __future__ import annotations

import pytest
import torch

import shrinkbench_core as sb
from shrinkbench_core.pruning.shrink import shrink_model

pytest.importorskip("shrinkbench_llm")
from shrinkbench_llm.tiny_gpt import TinyGPT  # noqa: E402


def test_tiny_gpt_is_traceable_and_loses_mlp_units_with_outputs_kept() -> None:
    torch.manual_seed(0)
    model = TinyGPT(vocab_size=65, layers=2, width=32, heads=4, max_positions=32)
    ids = torch.randint(0, 65, (2, 32))
    with _no_fallback_warning():
        pruned = sb.prune(model, "GlobalChannelNorm", compression=1.5, example_input=ids)
    result = shrink_model(model, pruned.masks, ids)
    changed = {c.name: c for c in result.layers if c.out_after != c.out_before}
    # the MLP hidden units go (fc rows with proj columns); attention and the stream stay
    assert set(changed) == {"blocks.0.mlp.fc", "blocks.1.mlp.fc"}
    assert all(c.out_after < 128 for c in changed.values())
    assert result.params_after < result.params_before
    assert result.max_abs_diff <= 1e-5
    assert {u.operation for u in result.unsupported} <= {"split", "add"}


def test_tiny_gpt_still_refuses_a_sequence_longer_than_its_positions() -> None:
    model = TinyGPT(vocab_size=65, layers=1, width=16, heads=2, max_positions=8)
    with pytest.raises(AssertionError, match="max_positions"):
        model(torch.zeros(1, 9, dtype=torch.long))


class _no_fallback_warning:
    """Fails when the channel strategy warns that it fell back to per-layer channels."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
        fallbacks = [str(w.message) for w in self._seen if "cannot be followed" in str(w.message)]
        assert not fallbacks, fallbacks

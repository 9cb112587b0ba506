"""Perplexity against a hand computation on a fixed bigram model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

pytest.importorskip("shrinkbench_llm")

from shrinkbench_llm.parameters import PerplexityParameters  # noqa: E402
from shrinkbench_llm.perplexity import compute  # noqa: E402
from shrinkbench_llm.windows import TokenWindows  # noqa: E402

from shrinkbench_core.errors import UserError  # noqa: E402
from shrinkbench_core.metrics import MetricContext  # noqa: E402

TABLE = [[0.0, 2.0, -1.0], [1.0, 0.0, 3.0], [0.5, 1.5, 0.0]]  # logits of the next token
TOKENS = [0, 1, 2, 1, 0, 2, 2, 1, 0]


class Bigram(nn.Module):
    """Logits of the next token depend only on the current one (a fixed table)."""

    max_positions = 8

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(3, 3)
        with torch.no_grad():
            self.table.weight.copy_(torch.tensor(TABLE))

    def forward(self, ids):
        return self.table(ids)


def nll(previous: int, following: int) -> float:
    row = TABLE[previous]
    return -(row[following] - math.log(sum(math.exp(v) for v in row)))


def _context(seqlen=4, tokens=TOKENS):
    windows = TokenWindows(torch.tensor(tokens), seqlen, {"kind": "test"}, name="test")
    loader = DataLoader(windows, batch_size=2)
    return MetricContext(
        model=Bigram(),
        example_input=windows[0][0][None],
        device=torch.device("cpu"),
        loaders={"test": loader},
    )


def test_nonoverlapping_windows_by_hand():
    # windows of 4: [0 1 2 1] [0 2 2 1]; the trailing 0 is dropped; first token of each unscored
    pairs = [(0, 1), (1, 2), (2, 1), (0, 2), (2, 2), (2, 1)]
    expected = sum(nll(a, b) for a, b in pairs) / len(pairs)
    result = compute(_context(), PerplexityParameters())
    assert result["tokens_scored"] == 6 and result["windows"] == 2
    assert result["nll"] == pytest.approx(expected)
    assert result["perplexity"] == pytest.approx(math.exp(expected))
    assert result["seqlen"] == 4 and result["tokenizer"] == {"kind": "test"}


def test_seqlen_parameter_rewindows_the_stream():
    # windows of 3: [0 1 2] [1 0 2] [2 1 0]
    pairs = [(0, 1), (1, 2), (1, 0), (0, 2), (2, 1), (1, 0)]
    expected = sum(nll(a, b) for a, b in pairs) / len(pairs)
    result = compute(_context(), PerplexityParameters(seqlen=3))
    assert result["nll"] == pytest.approx(expected) and result["windows"] == 3


def test_sliding_window_scores_every_token_once():
    pairs = list(zip(TOKENS[:-1], TOKENS[1:], strict=True))
    expected = sum(nll(a, b) for a, b in pairs) / len(pairs)
    result = compute(_context(), PerplexityParameters(stride=2))
    assert result["tokens_scored"] == 8
    assert result["nll"] == pytest.approx(expected)


def test_errors_before_evaluating():
    with pytest.raises(UserError, match="maximum positions 8"):
        compute(_context(), PerplexityParameters(seqlen=9))
    with pytest.raises(UserError, match="too short"):
        compute(_context(seqlen=2, tokens=[0, 1, 2]), PerplexityParameters(seqlen=5))
    with pytest.raises(UserError, match="no 'validation' split"):
        compute(_context(), PerplexityParameters(split="validation"))
    with pytest.raises(UserError, match="too short for one window"):
        TokenWindows(torch.tensor([1, 2, 3]), 8, {}, name="test")

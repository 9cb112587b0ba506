"""Accuracy of sequence outputs (N, T, C) against targets (N, T)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.metrics.accuracy import evaluate_accuracy


class TokenScores(nn.Module):
    """Returns fixed per-token scores (N, T, C), whatever the input."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores, requires_grad=False)

    def forward(self, x):
        return self.scores[x[:, 0]]


def test_sequence_scores_count_every_position():
    torch.manual_seed(0)
    scores = torch.randn(4, 3, 5)  # 4 sequences, 3 positions, 5 classes
    targets = torch.randint(0, 5, (4, 3))
    targets[0, 1] = scores[0, 1].argmax()  # at least one hit
    targets[3, 2] = -100  # padding: not scored
    loader = [(torch.tensor([[0], [1]]), targets[:2]), (torch.tensor([[2], [3]]), targets[2:])]
    report = evaluate_accuracy(TokenScores(scores), loader, topk=(1, 3))
    keep = targets != -100
    flat_scores, flat_targets = scores[keep], targets[keep]
    assert report.examples == 11
    assert report.num_classes == 5
    assert report.correct[1] == int((flat_scores.argmax(-1) == flat_targets).sum())
    top3 = flat_scores.topk(3, dim=-1).indices == flat_targets[:, None]
    assert report.correct[3] == int(top3.any(-1).sum())
    expected = F.cross_entropy(flat_scores, flat_targets, reduction="sum").item()
    assert report.loss_sum == pytest.approx(expected, rel=1e-6)


def test_mismatched_sequence_shapes_are_a_user_error():
    scores = torch.randn(2, 3, 5)
    loader = [(torch.tensor([[0], [1]]), torch.zeros(2, 4, dtype=torch.long))]
    with pytest.raises(UserError, match=r"scores \(N, T, C\) with targets \(N, T\)"):
        evaluate_accuracy(TokenScores(scores), loader)

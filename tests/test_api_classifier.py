"""A strategy used directly leaves the classifier dense by default (issue 15)."""

from __future__ import annotations

import warnings

import pytest
import torch
from shrinkbench_strategies.magnitude import GlobalMagWeight
from torch import nn
from torchvision.models import resnet18

from shrinkbench_core.pruning import PrunableRule
from shrinkbench_core.pruning.prunable import graph_classifier, locate_classifier


def test_direct_strategy_keeps_resnet18_fc_dense():
    model = resnet18(num_classes=10)
    before = model.fc.weight.detach().clone()
    strategy = GlobalMagWeight(model, 4)
    masks = strategy.apply()
    assert strategy.classifier == "fc"
    assert "fc.weight" not in masks and "fc.weight" not in strategy.prunable
    assert torch.equal(model.fc.weight, before)
    assert "conv1.weight" in masks


def test_rule_can_keep_the_classifier_prunable():
    model = resnet18(num_classes=10)
    strategy = GlobalMagWeight(model, 4, rule=PrunableRule(exclude_classifier=False))
    assert strategy.classifier is None
    assert "fc.weight" in strategy.prunable


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        hidden = self.body(x)
        if hidden.sum() > 1e9:  # never true; enough to stop symbolic tracing
            hidden = hidden * 2
        return self.head(hidden)


def test_untraceable_model_uses_the_example_input_or_warns():
    model = Untraceable()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.fx raises
        graph_classifier(model)
    assert GlobalMagWeight(model, 2, input_shape=(8,)).classifier == "head"
    with pytest.warns(UserWarning, match="could not find the classifier of Untraceable"):
        strategy = GlobalMagWeight(model, 2)
    assert "head.weight" in strategy.prunable


def test_explicit_classifier_skips_the_search():
    model = Untraceable()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GlobalMagWeight(model, 2, classifier="head").classifier == "head"


def test_locate_classifier_reports_why_it_failed():
    problems: list[str] = []
    assert locate_classifier(Untraceable(), None, problems) is None
    assert any("torch.fx cannot trace it" in p for p in problems)
    assert any("no example input" in p for p in problems)

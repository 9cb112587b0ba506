"""The `structured` metric: speedups of masked vs shrunk models reported side by side."""

from __future__ import annotations

import json

import torch
from shrinkbench_strategies.channel import LayerChannelNorm
from torch import nn

from shrinkbench_core.builtin.metrics import StructuredParameters
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.metrics.structured import compute
from shrinkbench_core.pruning import apply_masks
from shrinkbench_core.pruning.structured import complete_channel_masks


def vgg_like() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def test_structured_metric_reports_three_speedups_side_by_side():
    model = vgg_like()
    example = torch.randn(1, 3, 16, 16)
    masks = LayerChannelNorm(model, 2, classifier="8").compute_masks()
    masks = complete_channel_masks(model, masks, example)
    apply_masks(model, masks)
    context = MetricContext(
        model=model, example_input=example, device=torch.device("cpu"), masks=masks, batch_size=4
    )
    result = compute(context, StructuredParameters(batch_size=4, repeats=2))
    for key in ("theoretical_speedup", "masked_speedup", "shrunk_speedup"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["theoretical_speedup"] > 1.5  # half the channels of both convs are gone


def test_untraceable_model_is_reported_not_fatal():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.conv(x)
            return self.conv(-x)

    model = Dynamic()
    context = MetricContext(
        model=model, example_input=torch.randn(1, 3, 8, 8), device=torch.device("cpu"), masks={}
    )
    result = compute(context, StructuredParameters(batch_size=2, repeats=1))
    assert "error" in result and result["error"]


def test_unsupported_patterns_reach_the_result_and_the_screen(capsys):
    class Sliced(nn.Module):
        """Channel slicing by constants: the analysis keeps the sliced convolution whole."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.head(torch.cat([y[:, 4:], y[:, :4]], 1))

    torch.manual_seed(0)
    model = Sliced().eval()
    masks = {"conv.weight": torch.ones_like(model.conv.weight, dtype=torch.bool)}
    masks["conv.weight"][:4] = False
    context = MetricContext(
        model=model, example_input=torch.randn(1, 3, 8, 8), device=torch.device("cpu"), masks=masks
    )
    result = compute(context, StructuredParameters(batch_size=2, repeats=1))
    assert result["unsupported_count"] == len(result["unsupported"]) >= 1
    assert any("getitem" in line and "conv" in line for line in result["unsupported"])
    json.dumps(result)  # what metrics.json stores
    assert "kept channels intact" in capsys.readouterr().err

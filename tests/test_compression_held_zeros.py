"""The compression budget counts as pruned only what a mask holds (issue 19, held zeros)."""

from __future__ import annotations

import torch
from shrinkbench_cifar.models import CifarResNet
from shrinkbench_strategies.magnitude import GlobalMagWeight
from torch import nn

from shrinkbench_core.metrics.size import count_parameters
from shrinkbench_core.pruning import compression_budget
from shrinkbench_core.pruning.masks import hold_masks


def fine_tune(model: nn.Module, masks, steps: int = 3) -> None:
    """A few real SGD steps on random data with the masks held (moves every zero bias)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    holder = hold_masks(model, masks, optimizer)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        inputs = torch.randn(8, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    holder.remove()


def nonzero_and_total(model: nn.Module) -> tuple[int, int]:
    total = count_parameters(model, prunable=[]).total_parameters
    return sum(int(torch.count_nonzero(p)) for p in model.parameters()), total


def test_pruning_at_initialization_reaches_the_request_after_fine_tuning():
    torch.manual_seed(0)
    model = CifarResNet(20)
    zero_biases = sum(int((p == 0).sum()) for n, p in model.named_parameters() if p.dim() == 1)
    assert zero_biases > 500  # BatchNorm shifts and the fc bias start at zero
    masks = GlobalMagWeight(model, 8, classifier="fc").apply()
    fine_tune(model, masks)
    nonzero, total = nonzero_and_total(model)
    assert nonzero == round(total / 8)  # the request, to the weight


def test_only_untrainable_zeros_exceed_the_request():
    """At 64x whole channels die: their BatchNorm shifts get no gradient and stay zero,
    so the fine-tuned model exceeds the request by exactly those zeros, never falls short."""
    torch.manual_seed(0)
    model = CifarResNet(20)
    masks = GlobalMagWeight(model, 64, classifier="fc").apply()
    fine_tune(model, masks)
    nonzero, total = nonzero_and_total(model)
    stuck = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n not in masks)
    assert nonzero + stuck == round(total / 64)
    assert total / nonzero >= 64


def test_zeros_outside_the_prunable_set_count_as_kept():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
    with torch.no_grad():
        model[0].bias.zero_()
        model[0].weight[0].zero_()  # a prunable zero: a mask will hold it
    prunable = ["0.weight", "1.weight"]
    budget = compression_budget(model, prunable, 2)
    total = 10 * 10 + 10 + 10 * 2 + 2
    assert budget.fixed_nonzero == 12  # both biases, whole
    assert budget.prunable_nonzero == 120 - 10
    assert budget.keep == round(total / 2) - 12

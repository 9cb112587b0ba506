"""Pruning at initialization reaches the requested compression after fine-tuning (issue 19,
"zeros that no mask holds"): zeros the selection makes unable to move (the BatchNorm shifts
of channels whose every weight is masked, zero at initialization) count as pruned, and the
strategy keeps as many more weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datagen import write_cifar10
from shrinkbench_cifar.models import CifarResNet
from shrinkbench_strategies.magnitude import GlobalMagWeight
from shrinkbench_strategies.random import RandomPruning
from torch import nn

from shrinkbench_core.cli import run_main
from shrinkbench_core.pruning.dead_zeros import dead_zeros, probe_batch
from shrinkbench_core.pruning.masks import hold_masks

SHAPE = (3, 32, 32)


def nonzero_and_total(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(int(torch.count_nonzero(p)) for p in params), sum(p.numel() for p in params)


def fine_tune(model: nn.Module, masks, steps: int = 6) -> None:
    """Real SGD steps (momentum, weight decay) on random data with the masks held."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    holder = hold_masks(model, masks, optimizer)
    model.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        inputs = torch.randn(8, *SHAPE, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    holder.remove()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("compression", [8, 64])
def test_the_request_is_reached_after_fine_tuning(compression, one_thread):
    torch.manual_seed(0)
    model = CifarResNet(20)
    strategy = GlobalMagWeight(model, compression, classifier="fc", input_shape=SHAPE)
    masks = strategy.apply(count_dead=True)  # as a run prunes
    fine_tune(model, masks)
    nonzero, total = nonzero_and_total(model)
    assert nonzero == round(total / compression)  # to the weight
    if compression == 8:
        assert strategy.dead_zero_count == 0  # nothing dies: the selection is unchanged
    else:  # whole channels died; as many more weights were kept
        assert strategy.dead_zero_count > 100
        assert sum(int(m.sum()) for m in masks.values()) == strategy.keep


@pytest.mark.parametrize("how", ["plain", "no probe"])
def test_the_plain_budget_keeps_exactly_its_count_and_overshoots(how, one_thread):
    """Without count_dead (the exact budget, for direct use) or without a probe input
    (no input_shape or calibration) nothing changes; the fine-tuned model then exceeds
    the request: the gap count_dead closes."""
    torch.manual_seed(0)
    model = CifarResNet(20)
    if how == "plain":
        strategy = GlobalMagWeight(model, 64, classifier="fc", input_shape=SHAPE)
        masks = strategy.apply()
    else:
        strategy = GlobalMagWeight(model, 64, classifier="fc")
        masks = strategy.apply(count_dead=True)
    assert strategy.dead_zero_count == 0
    assert sum(int(m.sum()) for m in masks.values()) == strategy.keep
    fine_tune(model, masks)
    nonzero, total = nonzero_and_total(model)
    assert total / nonzero > 66  # far above 64x: the dead shifts stay zero


def test_dead_zeros_are_exactly_the_zeros_that_never_move(one_thread):
    torch.manual_seed(0)
    model = CifarResNet(20)
    masks = GlobalMagWeight(model, 64, classifier="fc").compute_masks()
    dead = dead_zeros(model, masks, probe_batch(None, SHAPE))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for name, mask in masks.items():
            dict(model.named_parameters())[name].mul_(mask)
    fine_tune(model, masks, steps=12)
    stuck = sum(
        int(((p == 0) & (before[n] == 0)).sum())
        for n, p in model.named_parameters() if n not in masks
    )
    assert dead == stuck > 0


@pytest.mark.parametrize("name", ["SNIP", "LayerMagWeight"])
def test_other_strategies_at_initialization_reach_64x(name, one_thread):
    """The README's SNIP recipe (calibration data as the probe) and a layerwise budget."""
    from shrinkbench_strategies import init_pruning, magnitude

    cls = getattr(init_pruning, name, None) or getattr(magnitude, name)
    generator = torch.Generator().manual_seed(0)
    calibration = [(torch.randn(16, *SHAPE, generator=generator),
                    torch.randint(0, 10, (16,), generator=generator))]
    torch.manual_seed(0)
    model = CifarResNet(20)
    strategy = cls(model, 64, classifier="fc", calibration=calibration)
    masks = strategy.apply(count_dead=True)
    fine_tune(model, masks)
    nonzero, total = nonzero_and_total(model)
    assert nonzero == round(total / 64) and strategy.dead_zero_count > 0


def test_a_model_the_probe_cannot_run_keeps_the_plain_budget():
    """Token inputs guessed as floats fail in the embedding: nothing is counted, no error."""
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(32, 4))
    with torch.no_grad():
        model[2].bias.zero_()
    strategy = GlobalMagWeight(model, 2, prunable=["0.weight", "2.weight"], input_shape=(4,))
    masks = strategy.apply(count_dead=True)
    assert strategy.dead_zero_count == 0
    assert sum(int(m.sum()) for m in masks.values()) == strategy.keep


def test_a_seeded_random_selection_stays_seeded(one_thread):
    models = [CifarResNet(20) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    masks = [
        RandomPruning(m, 64, classifier="fc", input_shape=SHAPE, seed=3).compute_masks(True)
        for m in models
    ]
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


def test_a_run_at_initialization_on_cifar_reaches_64x(tmp_path, capsys):
    root = tmp_path / "cifar"
    write_cifar10(root, n_train=64, n_test=32)
    code = run_main([
        "--strategy", "GlobalMagWeight", "--compression", "64", "--dataset", "cifar10",
        "--model", "resnet20", "-p", f"dataset.root={root}", "-p", "dataset.validation_size=16",
        "-p", "dense.epochs=0", "-p", "finetune.epochs=1", "-p", "dataset.batch_size=16",
        "-p", "metrics=[size]", "--output", str(tmp_path / "out"), "--quiet",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (run,) = Path(tmp_path / "out" / "runs").iterdir()
    size = json.loads((run / "metrics.json").read_text())["finetuned"]["size"]
    assert size["nonzero_parameters"] == round(size["total_parameters"] / 64)

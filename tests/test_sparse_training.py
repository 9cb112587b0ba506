"""Dynamic sparse training engine: ERK densities, exact counts, SET / RigL updates."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shrinkbench_core.pruning.sparse_training import (
    DynamicSparsity,
    cosine_drop_fraction,
    erk_densities,
    initial_masks,
    keep_counts,
    uniform_densities,
)


def _params(*shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {f"l{i}": torch.randn(shape) for i, shape in enumerate(shapes)}


def test_erk_densities_match_a_hand_computation():
    # l0: 20x10 (raw (20+10)/200 = 0.15), l1: 5x20 (raw 25/100 = 0.25); keep 150 of 300:
    # eps = 150 / (0.15*200 + 0.25*100) = 150/55
    densities = erk_densities(_params((20, 10), (5, 20)), 0.5)
    assert densities["l0"] == pytest.approx(0.15 * 150 / 55)
    assert densities["l1"] == pytest.approx(0.25 * 150 / 55)


def test_erk_makes_a_layer_dense_when_its_density_would_exceed_one():
    # l2: 2x2 has raw score 1.0; eps = 152/59 would give it 2.58 -> dense, the rest share
    # 152 - 4 = 148: eps = 148/55. A conv kernel counts its kernel dims in sum(shape).
    densities = erk_densities(_params((20, 10), (5, 20), (2, 2)), 0.5)
    assert densities["l2"] == 1.0
    assert densities["l0"] == pytest.approx(0.15 * 148 / 55)
    assert densities["l1"] == pytest.approx(0.25 * 148 / 55)
    conv = erk_densities(_params((4, 3, 3, 3), (8, 4, 3, 3)), 0.3)
    raw = {"l0": 13 / 108, "l1": 18 / 288}
    eps = 0.3 * (108 + 288) / (raw["l0"] * 108 + raw["l1"] * 288)
    assert conv == pytest.approx({name: eps * value for name, value in raw.items()})


def test_uniform_densities_and_exact_counts():
    params = _params((20, 10), (5, 20), (2, 2))
    assert set(uniform_densities(params, 0.1).values()) == {0.1}
    for keep in (1, 31, 150, 303):
        counts = keep_counts(params, erk_densities(params, keep / 304), keep)
        assert sum(counts.values()) == keep
        assert all(0 <= counts[n] <= params[n].numel() for n in params)


@pytest.mark.parametrize("init", ["random", "magnitude"])
@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_initial_masks_keep_exactly_the_global_count(init, distribution):
    params = _params((30, 16), (10, 30), (4, 3, 3, 3))
    masks = initial_masks(params, 123, distribution, init, seed=1)
    assert sum(int(m.sum()) for m in masks.values()) == 123
    if init == "magnitude":
        for name, mask in masks.items():
            kept, dropped = params[name].abs()[mask], params[name].abs()[~mask]
            assert kept.numel() == 0 or dropped.numel() == 0 or kept.min() >= dropped.max()
    again = initial_masks(params, 123, distribution, init, seed=1)
    assert all(torch.equal(masks[n], again[n]) for n in masks)


def test_cosine_drop_fraction_decays_to_zero_at_the_end():
    assert cosine_drop_fraction(0, 100, 0.3) == pytest.approx(0.3)
    assert cosine_drop_fraction(50, 100, 0.3) == pytest.approx(0.15)
    assert cosine_drop_fraction(100, 100, 0.3) == 0.0
    assert cosine_drop_fraction(25, 100, 0.3) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))


def _model_and_masks(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 6))
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    return model, initial_masks(weights, 60, "erk", "random", seed=seed)


def _train_steps(model, optimizer, steps: int, sparsity: DynamicSparsity | None = None):
    updates = []
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        inputs = torch.randn(16, 12, generator=generator)
        targets = torch.randint(0, 6, (16,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        if sparsity is not None and (update := sparsity.step()) is not None:
            updates.append(update)
    return updates


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_updates_keep_exact_counts_and_return_what_changed(method):
    model, masks = _model_and_masks()
    counts = {n: int(m.sum()) for n, m in masks.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sparsity = DynamicSparsity(model, masks, optimizer, method, total_steps=40,
                               update_interval=5, seed=0)
    params = dict(model.named_parameters())
    updates = _train_steps(model, optimizer, 40, sparsity)
    assert [u.step for u in updates] == [5, 10, 15, 20, 25]  # stops at 75% of 40 steps
    assert updates[0].changed > 0  # late updates may move nothing: the fraction decays
    assert [u.drop_fraction for u in updates] == sorted(u.drop_fraction for u in updates)[::-1]
    for name, mask in sparsity.masks.items():
        assert int(mask.sum()) == counts[name]
        assert torch.count_nonzero(params[name][~mask]) == 0
    assert any(not torch.equal(sparsity.masks[n], masks[n]) for n in masks)
    assert all(u.changed == 2 * sum(u.per_layer.values()) for u in updates)


def test_static_never_updates():
    model, masks = _model_and_masks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsity = DynamicSparsity(model, masks, optimizer, "static", total_steps=20, update_interval=2)
    assert _train_steps(model, optimizer, 20, sparsity) == []
    assert all(torch.equal(sparsity.masks[n], masks[n]) for n in masks)


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_regrown_weights_start_at_zero_with_their_optimizer_state_reset(method, optimizer_name):
    model, masks = _model_and_masks(1)
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    sparsity = DynamicSparsity(model, masks, optimizer, method, total_steps=100,
                               update_interval=1000)
    _train_steps(model, optimizer, 3, sparsity)
    params = dict(model.named_parameters())
    name = "0.weight"
    before = {k: v.clone() for k, v in optimizer.state[params[name]].items()
              if isinstance(v, torch.Tensor) and v.shape == params[name].shape}
    assert before and all(v[~masks[name]].abs().sum() > 0 for v in before.values())
    old = sparsity.masks[name].clone()
    update = sparsity.update(1)
    regrown = sparsity.masks[name] & ~old
    assert int(regrown.sum()) == update.per_layer[name] > 0
    assert torch.all(params[name][regrown] == 0)
    state = optimizer.state[params[name]]
    for key, value in before.items():
        assert torch.all(state[key][regrown] == 0)
        untouched = ~regrown
        assert torch.equal(state[key][untouched], value[untouched])


def test_rigl_regrows_where_the_dense_gradient_is_largest():
    layer = nn.Linear(10, 10, bias=False)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:5] = True  # rows 0-4 active
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    sparsity = DynamicSparsity(layer, {"weight": mask}, optimizer, "rigl", total_steps=1000,
                               drop_fraction=0.2, update_interval=1)
    with torch.no_grad():
        layer.weight[:5] = torch.arange(1, 51, dtype=torch.float).view(5, 10)  # smallest: row 0
    layer.weight.grad = torch.zeros(10, 10)
    largest = [(7, 1), (8, 4), (9, 9), (6, 0), (5, 5), (9, 2), (7, 7), (8, 8), (6, 6), (5, 0)]
    for rank, (row, col) in enumerate(largest):
        layer.weight.grad[row, col] = 100.0 - rank
    update = sparsity.update(0)  # fraction 0.2 of 50 active: 10 dropped, 10 grown
    new = sparsity.masks["weight"]
    assert not new[0].any()  # the 10 smallest magnitudes were dropped
    grown = {(int(r), int(c)) for r, c in (new & ~mask).nonzero()}
    assert grown == set(largest)
    assert update.changed == 20
    assert int(new.sum()) == 50


def test_rigl_says_when_gradients_are_missing():
    layer = nn.Linear(4, 4, bias=False)
    mask = torch.rand(4, 4) > 0.5
    sparsity = DynamicSparsity(layer, {"weight": mask}, torch.optim.SGD(layer.parameters(), 0.1),
                               "rigl", total_steps=10, update_interval=1)
    with pytest.raises(RuntimeError, match="dense gradient"):
        sparsity.update(1)


def test_bad_arguments_are_rejected():
    params = _params((4, 4))
    with pytest.raises(ValueError, match="density"):
        erk_densities(params, 0)
    with pytest.raises(ValueError, match="cannot keep"):
        keep_counts(params, {"l0": 1.0}, 17)
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="method"):
        DynamicSparsity(layer, {}, torch.optim.SGD(layer.parameters(), 0.1), "magic")

"""Pruning schedules: geometric rounds, rewinding, and AGP's cubic sparsity, on real training."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from shrinkbench_strategies.magnitude import GlobalMagWeight
from shrinkbench_strategies.wanda import Wanda
from torch import nn

from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment.schedules import (
    AGPController,
    PruningRound,
    Rewinder,
    ScheduleConfig,
    agp_pruning_steps,
    agp_sparsity,
    geometric_compressions,
    model_sparsity,
    pruning_rounds,
    run_rounds,
)
from shrinkbench_core.pruning import hold_masks


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 4),
    )


def data(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 16, generator=generator), torch.randint(0, 4, (16,), generator=generator))
        for _ in range(n)
    ]


def nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def total(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_steps(model, optimizer, batches, on_step=None):
    model.train()
    for step, (x, y) in enumerate(batches, start=1):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)


# -- configuration -------------------------------------------------------------------
def test_schedule_config_validates_fields_per_kind_and_round_trips():
    assert ScheduleConfig().kind == "oneshot" and ScheduleConfig().label() == "oneshot"
    iterative = ScheduleConfig(kind="iterative", rounds=4, rewind="epoch", rewind_point=2)
    assert iterative.label() == "iterative-4x-rewind-epoch2"
    assert ScheduleConfig.model_validate(iterative.model_dump()) == iterative  # dump/reload
    assert ScheduleConfig(kind="gradual", frequency=10).label() == "gradual-0-end-f10"
    with pytest.raises(ValidationError, match="`rounds` applies only to kind='iterative'"):
        ScheduleConfig(rounds=5)
    with pytest.raises(ValidationError, match="`frequency` applies only to kind='gradual'"):
        ScheduleConfig(kind="iterative", frequency=5)
    with pytest.raises(ValidationError, match="rewind_point` needs rewind='epoch'"):
        ScheduleConfig(kind="iterative", rewind="init", rewind_point=3)
    with pytest.raises(ValidationError, match="before `start_step`"):
        ScheduleConfig(kind="gradual", start_step=10, end_step=5)
    with pytest.raises(ValidationError, match="kind"):
        ScheduleConfig(kind="two words")
    # any other name is a plugin's schedule, checked against the registry at resolve time
    assert ScheduleConfig(kind="cyclic", params={"every": 2}).label() == "cyclic"
    with pytest.raises(ValidationError, match="`params` applies only to plugin schedules"):
        ScheduleConfig(kind="iterative", params={"every": 2})


def test_gradual_schedule_resolves_its_end_step():
    gradual = ScheduleConfig(kind="gradual", start_step=5, frequency=10)
    assert gradual.resolved(200).end_step == 200
    assert ScheduleConfig(kind="gradual", end_step=50).resolved(200).end_step == 50
    with pytest.raises(ConfigError, match="only 40 optimizer steps"):
        ScheduleConfig(kind="gradual", end_step=50).resolved(40)


# -- iterative ------------------------------------------------------------------------
def test_geometric_compressions_reach_the_target_exactly():
    assert geometric_compressions(8, 3) == pytest.approx([2, 4, 8])
    assert geometric_compressions(8, 3)[-1] == 8.0
    assert geometric_compressions(10, 1) == [10.0]
    values = geometric_compressions(64, 5)
    assert values[-1] == 64.0 and all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[1] / values[0] == pytest.approx(values[2] / values[1])
    with pytest.raises(ValueError, match=">= 1"):
        geometric_compressions(0.5, 2)


def test_pruning_rounds_for_oneshot_and_iterative():
    assert pruning_rounds(ScheduleConfig(), 4) == [PruningRound(1, 4.0, 0, True)]
    rounds = pruning_rounds(ScheduleConfig(kind="iterative", rounds=3, epochs_per_round=2), 27)
    assert [r.compression for r in rounds] == pytest.approx([3, 9, 27])
    assert [r.train_epochs for r in rounds] == [2, 2, 0] and [r.last for r in rounds] == [
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="AGPController"):
        pruning_rounds(ScheduleConfig(kind="gradual"), 4)


@pytest.mark.parametrize("rewind", ["none", "init", "iteration"])
@pytest.mark.parametrize("strategy", [GlobalMagWeight, Wanda], ids=lambda s: s.__name__)
def test_iterative_pruning_reaches_the_exact_target_after_the_last_round(rewind, strategy):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = ScheduleConfig(
        kind="iterative",
        rounds=4,
        epochs_per_round=1,
        rewind=rewind,
        rewind_point=3 if rewind == "iteration" else 0,
    )
    rewinder = Rewinder.from_schedule(schedule)
    if rewinder is not None:  # record during "dense training"
        rewinder.maybe_record(model, iteration=0)
        train_steps(
            model, optimizer, data(), lambda step: rewinder.maybe_record(model, iteration=step)
        )
        assert rewinder.recorded
    else:
        train_steps(model, optimizer, data())
    target, size = 6.0, total(model)
    seen = []

    def prune(compression):
        masks = strategy(model, compression, calibration=data(2, 9), classifier="6").apply()
        seen.append((compression, nonzero(model)))
        return masks

    def train(pruning_round, masks):
        holder = hold_masks(model, masks, optimizer)
        train_steps(model, optimizer, data(3, pruning_round.index))
        holder.remove()

    masks = run_rounds(model, pruning_rounds(schedule, target), prune, train, rewinder)
    assert [c for c, _ in seen] == pytest.approx(geometric_compressions(target, 4))
    assert all(count == round(size / c) for c, count in seen)  # every round is exact
    assert seen[-1][1] == round(size / target)  # the last pruning step is exact
    holder = hold_masks(model, masks, optimizer)
    train_steps(model, optimizer, data(3, 7))  # the fine-tuning that ends the last round
    holder.remove()
    assert nonzero(model) == round(size / target)
    for name, param in model.named_parameters():
        if name in masks:
            assert torch.count_nonzero(param[~masks[name]]) == 0


def test_rewinding_restores_recorded_weights_exactly_for_unpruned_entries():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rewinder = Rewinder("epoch", 1)
    assert not rewinder.due(epoch=0) and rewinder.due(epoch=1)
    train_steps(model, optimizer, data(3))
    assert rewinder.maybe_record(model, epoch=1) and not rewinder.maybe_record(model, epoch=1)
    recorded = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, optimizer, data(4, 5))  # the weights move on
    masks = GlobalMagWeight(model, 5, classifier="6").apply()
    kept = masks["1.weight"]
    assert not torch.equal(model[1].weight[kept], recorded["1.weight"][kept])
    rewinder.restore(model, masks)
    state = model.state_dict()
    for name, value in recorded.items():
        if name in masks:
            assert torch.equal(state[name][masks[name]], value[masks[name]]), name
            assert torch.count_nonzero(state[name][~masks[name]]) == 0, name
        else:  # biases, BatchNorm weights and running statistics come back too
            assert torch.equal(state[name], value), name
    copy = Rewinder("epoch", 1)
    copy.load_state_dict(rewinder.state_dict())
    assert copy.recorded
    with pytest.raises(RuntimeError, match="nothing recorded"):
        Rewinder("init").restore(model, masks)


def test_rewind_points():
    assert Rewinder("init", 7).due(epoch=0, iteration=0) and not Rewinder("init").due(epoch=1)
    assert Rewinder("iteration", 30).due(epoch=2, iteration=30)
    assert not Rewinder("iteration", 30).due(iteration=29)
    assert Rewinder.from_schedule(ScheduleConfig()) is None
    assert Rewinder.from_schedule(ScheduleConfig(kind="iterative")) is None
    assert Rewinder.from_schedule(ScheduleConfig(kind="iterative", rewind="init")).rewind == "init"
    with pytest.raises(ValueError, match="rewind must be"):
        Rewinder("none")


# -- gradual (AGP) ----------------------------------------------------------------------
def test_agp_sparsity_follows_the_cubic_formula_by_hand():
    def s(step, **kw):
        args = {"final_sparsity": 0.9, "start_step": 0, "end_step": 100, "frequency": 10} | kw
        return agp_sparsity(step, **args)

    assert s(0) == 0.0 and s(9) == 0.0
    assert s(10) == pytest.approx(0.9 * (1 - 0.9**3))  # 0.2439
    assert s(55) == pytest.approx(0.9 * (1 - 0.5**3))  # last pruning step 50
    assert s(99) == pytest.approx(0.9 * (1 - 0.1**3))
    assert s(100) == 0.9 and s(1000) == 0.9
    assert s(30, initial_sparsity=0.5) == pytest.approx(0.9 + (0.5 - 0.9) * 0.7**3)
    assert s(15, start_step=20, end_step=120) == 0.0
    assert s(20, start_step=20, end_step=120, initial_sparsity=0.2) == pytest.approx(0.2)
    assert s(90, end_step=95) == pytest.approx(0.9 * (1 - (1 - 90 / 95) ** 3))
    assert agp_pruning_steps(0, 95, 10) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    with pytest.raises(ValueError, match="initial_sparsity <= final_sparsity"):
        agp_sparsity(5, 0.5, 0, 10, 1, initial_sparsity=0.6)


def test_agp_controller_prunes_to_the_cubic_schedule_during_training():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    target = 6.0
    schedule = ScheduleConfig(
        kind="gradual", start_step=2, end_step=22, frequency=4, initial_sparsity=0.1
    ).resolved(30)
    calls = []

    def prune(compression):
        calls.append(compression)
        return GlobalMagWeight(model, compression, classifier="6").apply()

    controller = AGPController(model, optimizer, prune, target, schedule)
    size = total(model)
    observed = {0: model_sparsity(model)}
    controller.step(0)

    def after_step(step):
        controller.step(step)
        observed[step] = model_sparsity(model)

    train_steps(model, optimizer, data(30, 3), after_step)
    final = 1 - 1 / target
    for step, sparsity in observed.items():
        scheduled = agp_sparsity(step, final, 2, 22, 4, 0.1)
        if step >= 2:  # within one weight of the formula at every step
            assert abs(sparsity - scheduled) <= 0.5 / size, step
    assert [int(h["step"]) for h in controller.history] == agp_pruning_steps(2, 22, 4)
    assert calls[-1] == target and nonzero(model) == round(size / target)
    before_last = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, optimizer, data(3, 8))  # masks still held after the schedule
    for name, mask in controller.masks.items():
        param = dict(model.named_parameters())[name]
        assert torch.count_nonzero(param[~mask]) == 0
        assert not mask.any() or not torch.equal(param, before_last[name])  # still training
    controller.remove()
    assert controller.holder is None
    resumed = AGPController(model, optimizer, prune, target, schedule)
    resumed.resume(controller.masks, 30)  # e.g. after loading a checkpoint
    assert not resumed.step(31) and len(calls) == len(agp_pruning_steps(2, 22, 4))
    train_steps(model, optimizer, data(1, 9))
    assert nonzero(model) <= round(size / target)


def test_agp_controller_needs_a_resolved_gradual_schedule():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="resolved"):
        AGPController(model, optimizer, lambda c: {}, 4, ScheduleConfig(kind="gradual"))
    with pytest.raises(ValueError, match="resolved"):
        AGPController(model, optimizer, lambda c: {}, 4, ScheduleConfig())

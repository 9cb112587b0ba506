"""*MagGrad and *MagAct: train/eval measurement and the two activation statistics, against
the original ShrinkBench's recipes re-derived here by hand (issue 19, claims of equality)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from shrinkbench_strategies.activation import GlobalMagAct, LayerMagAct
from shrinkbench_strategies.gradient import GlobalMagGrad, LayerMagGrad
from shrinkbench_strategies.params import MagActParameters, MagGradParameters
from shrinkbench_strategies.plugin import strategy_specs
from torch import nn


def bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def one_batch() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    # signed, off-centre inputs: channel means differ from zero and from mean |x|
    inputs = torch.randn(16, 3, 6, 6, generator=generator) * 2 + 0.3
    return [(inputs, torch.randint(0, 10, (16,), generator=generator))]


def original_gradients(model: nn.Module, batch) -> dict[str, torch.Tensor]:
    """The original get_param_gradients: train mode, one batch, cross-entropy."""
    model = copy.deepcopy(model).train()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def original_input_statistic(model: nn.Module, module: str, batch) -> torch.Tensor:
    """The original activation_importance: batch mean, |.|, averaged over positions (train)."""
    model = copy.deepcopy(model).train()
    seen = {}

    def keep_input(_module, inputs, _output) -> None:
        seen.setdefault("x", inputs[0])

    dict(model.named_modules())[module].register_forward_hook(keep_input)
    with torch.no_grad():
        model(batch[0])
    per_position = seen["x"].mean(0).abs()
    return per_position.reshape(per_position.shape[0], -1).mean(1)


def test_maggrad_train_mode_equals_the_original_gradients():
    model, data = bn_cnn(), one_batch()
    expected = original_gradients(model, data[0])
    strategy = GlobalMagGrad(model, 4, calibration=data, classifier="8")
    for name, grad in strategy.gradients().items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-7)


def test_maggrad_eval_mode_differs_on_batchnorm_networks():
    model, data = bn_cnn(), one_batch()
    train = GlobalMagGrad(model, 4, calibration=data, classifier="8").compute_masks()
    evaluated = GlobalMagGrad(
        model, 4, calibration=data, classifier="8", params={"bn_mode": "eval"}
    ).compute_masks()
    assert any(not torch.equal(train[n], evaluated[n]) for n in train)
    # eval mode: the gradient of the function with running statistics
    reference = copy.deepcopy(model).eval()
    F.cross_entropy(reference(data[0][0]), data[0][1]).backward()
    grads = GlobalMagGrad(
        model, 4, calibration=data, classifier="8", params={"bn_mode": "eval"}
    ).gradients()
    torch.testing.assert_close(grads["0.weight"], reference[0].weight.grad, rtol=1e-5, atol=1e-7)


def test_train_mode_measurement_leaves_batchnorm_statistics_alone():
    model = bn_cnn().eval()
    before = copy.deepcopy(model.state_dict())
    for strategy in (GlobalMagGrad, LayerMagGrad, GlobalMagAct, LayerMagAct):
        strategy(model, 4, calibration=one_batch(), classifier="8").compute_masks()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_magact_abs_mean_equals_the_original_statistic():
    model, data = bn_cnn(), one_batch()
    strategy = GlobalMagAct(model, 4, calibration=data, classifier="8",
                            params={"statistic": "abs_mean"})
    acts = strategy.activations()
    for module in ("0", "3"):
        expected = original_input_statistic(model, module, data[0])
        weight = acts[f"{module}.weight"]
        torch.testing.assert_close(weight[0, :, 0, 0], expected.float(), rtol=1e-5, atol=1e-6)


def test_magact_default_is_mean_abs_and_differs_on_signed_inputs():
    model, data = bn_cnn(), one_batch()
    default = GlobalMagAct(model, 4, calibration=data, classifier="8")
    assert default.options.statistic == "mean_abs"
    expected = data[0][0].abs().mean(dim=(0, 2, 3))  # first layer: mean |x| per channel
    torch.testing.assert_close(default.activations()["0.weight"][0, :, 0, 0], expected)
    original = GlobalMagAct(model, 4, calibration=data, classifier="8",
                            params={"statistic": "abs_mean"})
    first = default.compute_masks()["0.weight"], original.compute_masks()["0.weight"]
    assert not torch.equal(*first)


def test_specs_declare_the_options_and_reject_unknown_values():
    specs = {spec.name: spec for spec in strategy_specs()}
    for name in ("GlobalMagGrad", "LayerMagGrad"):
        assert specs[name].parameters is MagGradParameters
        assert GlobalMagGrad.Parameters is MagGradParameters
    for name in ("GlobalMagAct", "LayerMagAct"):
        assert specs[name].parameters is MagActParameters
        assert LayerMagAct.Parameters is MagActParameters
    assert MagGradParameters().bn_mode == "train"
    with pytest.raises(ValidationError, match="bn_mode"):
        MagGradParameters(bn_mode="batch")
    with pytest.raises(ValidationError, match="statistic"):
        MagActParameters(statistic="median")

"""The public Python API: ``import shrinkbench_core as sb`` (issue 15, point 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models import resnet18

import shrinkbench_core as sb
from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import ConfigError, UnknownComponentError, UserError
from shrinkbench_core.pruning import masks_equal
from shrinkbench_core.registry import get_registry

CLASH = """
from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec

@hookimpl
def shrinkbench_register_strategies():
    return [StrategySpec(name="Same", summary="test strategy", scope="global",
                         factory="shrinkbench_strategies.magnitude:GlobalMagWeight")]
"""


def test_import_is_cheap_and_api_is_lazy():
    code = (
        "import sys, shrinkbench_core as sb\n"
        "assert 'torch' not in sys.modules\n"
        "names = sb.list_components('strategies')\n"
        "assert 'torch' not in sys.modules, 'listing imported torch'\n"
        "assert 'GlobalMagWeight' in names\n"
        "assert callable(sb.prune) and callable(sb.export)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_api_function_is_documented():
    for name in sb.__all__:
        if name != "__version__":
            assert (getattr(sb, name).__doc__ or "").strip(), name
    assert set(sb.__all__) <= set(dir(sb))
    with pytest.raises(AttributeError):
        sb.not_an_api_function  # noqa: B018


def test_list_components_filters_and_accepts_singular_kinds():
    assert "GlobalMagWeight" in sb.list_components("strategies", "global*")
    assert "LayerMagWeight" not in sb.list_components("strategy", "Global*")
    assert sb.list_components("datasets") == sorted(sb.list_components("dataset"), key=str.lower)
    with pytest.raises(UserError, match="unknown component kind 'widgets'"):
        sb.list_components("widgets")


def test_unknown_name_errors_are_the_registrys():
    with pytest.raises(UnknownComponentError) as from_api:
        sb.get_strategy("GlobalMagWieght")
    with pytest.raises(UnknownComponentError) as from_registry:
        get_registry().get("strategies", "GlobalMagWieght")
    assert str(from_api.value) == str(from_registry.value)
    assert "Did you mean: GlobalMagWeight" in str(from_api.value)
    with pytest.raises(UnknownComponentError, match="unknown model 'resnet-18'"):
        sb.get_model("resnet-18", num_classes=10, input_shape=(3, 32, 32))


def test_ambiguous_names_list_the_candidates(fake_dists):
    fake_dists.add("sb-one", "sb_one", CLASH)
    fake_dists.add("sb-two", "sb_two", CLASH)
    with pytest.raises(UnknownComponentError, match="ambiguous.*sb-one:Same.*sb-two:Same"):
        sb.get_strategy("Same")
    assert sb.get_strategy("sb-one:Same").__name__ == "GlobalMagWeight"
    assert {"sb-one:Same", "sb-two:Same"} <= set(sb.list_components("strategies", "*Same"))


def test_get_model_and_dataset():
    model = sb.get_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[16])
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert model.features[1].out_features == 16
    with pytest.raises(ConfigError, match=r"model\.hidden: unknown field \(allowed: hidden_sizes"):
        sb.get_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=[16])
    with pytest.raises(UserError, match=r"lenet5 accepts inputs of shape .*not \(1, 8, 8\)"):
        sb.get_model("lenet5", num_classes=10, input_shape=(1, 8, 8))
    splits = sb.get_dataset("digits", validation_size=100)
    assert isinstance(splits, DataSplits) and splits.num_classes == 10
    assert len(splits.validation) == 100


# -- prune ------------------------------------------------------------------------
def test_prune_torchvision_resnet18_excludes_the_traced_classifier():
    model = resnet18(num_classes=10)
    fc_before = model.fc.weight.detach().clone()
    result = sb.prune(model, "GlobalMagWeight", 4, example_input=torch.randn(1, 3, 32, 32))
    assert result.model is model  # in place by default
    assert result.classifier == "fc" and "fc.weight" not in result.masks
    assert torch.equal(model.fc.weight, fc_before)
    assert result.compression == pytest.approx(4, rel=0.01)
    assert 1.5 < result.theoretical_speedup < 10
    table = result.layers
    assert list(table.columns[:2]) == ["parameter", "shape"] and len(table) == len(result.masks)
    assert (table["kept"] < table["size"]).any()
    assert "compression 4.0" in result.summary()


def test_prune_by_class_equals_by_name_and_copies_when_asked():
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    example = torch.randn(1, 3, 32, 32)
    by_name = sb.prune(model, "LayerMagWeight", 3, example_input=example, inplace=False)
    by_class = sb.prune(
        model, sb.get_strategy("LayerMagWeight"), 3, example_input=example, inplace=False
    )
    assert by_name.model is not model and masks_equal(by_name.masks, by_class.masks)
    assert by_class.strategy == "LayerMagWeight"
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())


class DictOutput(nn.Module):
    """Untraceable by torch.fx and returning a dict: the classifier cannot be found."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        hidden = torch.relu(self.body(x))
        if hidden.sum() > 1e9:
            hidden = hidden * 2
        return {"scores": self.head(hidden)}


def test_untraceable_model_asks_for_classifier():
    example = torch.randn(1, 8)
    with pytest.raises(UserError, match=r"(?s)classifier of DictOutput.*classifier="):
        sb.prune(DictOutput(), "GlobalMagWeight", 2, example_input=example)
    result = sb.prune(DictOutput(), "GlobalMagWeight", 2, example_input=example, classifier="head")
    assert set(result.masks) == {"body.weight"}
    everything = sb.prune(DictOutput(), "GlobalMagWeight", 2, example_input=example,
                          classifier=False)
    assert set(everything.masks) == {"body.weight", "head.weight"}
    named = sb.prune(DictOutput(), "GlobalMagWeight", 1.2, example_input=example,
                     prunable=["head.weight"])
    assert set(named.masks) == {"head.weight"}
    by_rule = sb.prune(DictOutput(), "GlobalMagWeight", 1.2, example_input=example,
                       prunable={"exclude": ["body.*"], "exclude_classifier": False})
    assert set(by_rule.masks) == {"head.weight"}
    with pytest.raises(ConfigError, match="prunable.colour: unknown field"):
        sb.prune(DictOutput(), "GlobalMagWeight", 2, example_input=example, prunable={"colour": 1})


def test_prune_checks_strategy_options_and_calibration():
    example = torch.randn(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="strategy.norm"):
        sb.prune(resnet18(num_classes=10), "GlobalChannelNorm", 2, example_input=example,
                 norm="l3")
    with pytest.raises(UserError, match="needs calibration data"):
        sb.prune(resnet18(num_classes=10), "GlobalMagGrad", 2, example_input=example)
    with pytest.raises(UserError, match="registered name .* or a Strategy subclass"):
        sb.prune(resnet18(num_classes=10), 42, 2, example_input=example)


def test_prune_with_a_calibration_loader():
    splits = sb.get_dataset("digits")
    model = sb.get_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[64, 64])
    loader = DataLoader(splits.train, batch_size=32)
    result = sb.prune(model, "GlobalMagGrad", 2, example_input=splits.test[0][0][None],
                      calibration=loader, calibration_batches=2)
    assert result.classifier == "classifier"
    assert result.compression == pytest.approx(2, rel=0.01)


# -- evaluate ---------------------------------------------------------------------
def test_evaluate_dense_and_with_masks():
    splits = sb.get_dataset("digits")
    model = sb.get_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[64])
    dense = sb.evaluate(model, splits)
    assert set(dense) == {"size", "flops", "accuracy"}
    assert dense["size"]["compression_ratio"] == pytest.approx(1)
    assert dense["accuracy"]["test_examples"] == len(splits.test)
    assert "validation_top1" in dense["accuracy"]
    pruned = sb.prune(model, "GlobalMagWeight", 3, example_input=splits.test[0][0][None],
                      inplace=False)
    # masks given for the unpruned model: evaluated on a masked copy, the model is untouched
    masked = sb.evaluate(model, splits.test, metrics=["size", "flops"], masks=pruned.masks)
    assert masked["size"]["compression_ratio"] == pytest.approx(3, rel=0.01)
    assert masked["flops"]["theoretical_speedup"] > 2
    assert sb.evaluate(model, splits.test, metrics=["size"])["size"]["compression_ratio"] == 1
    with pytest.raises(ConfigError, match=r"metrics\[1\]: unknown metric 'acuracy'"):
        sb.evaluate(model, splits, metrics=["size", "acuracy"])
    with pytest.raises(UserError, match="data must be a DataSplits"):
        sb.evaluate(model, [1, 2, 3])

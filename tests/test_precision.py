"""Mixed precision helpers: autocast per precision, fp16 refused on CPU, masks held exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment.precision import (
    autocast,
    backward_and_step,
    check_precision,
    grad_scaler,
    to_channels_last,
)
from shrinkbench_core.pruning import hold_masks


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_fp16_on_cpu_is_a_config_error_naming_the_alternatives():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device.*bf16") as error:
        check_precision("fp16", "cpu")
    assert error.value.exit_code == 2
    with pytest.raises(ConfigError, match="fp64"):
        check_precision("fp64", "cpu")
    with pytest.raises(ConfigError):
        grad_scaler("fp16", "cpu")


def test_autocast_lowers_operations_only_for_bf16():
    layer = nn.Linear(4, 4)
    inputs = torch.randn(2, 4)
    with autocast("bf16", "cpu"):
        assert layer(inputs).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert layer(inputs).dtype == torch.float32
    assert grad_scaler("bf16", "cpu") is None
    assert grad_scaler("fp32", "cpu") is None


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_masked_weights_stay_exactly_zero_under_bf16(optimizer_name, channels_last):
    model = _conv_net()
    if channels_last:
        to_channels_last(model)
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(1)
    masks = {name: torch.rand(p.shape, generator=generator) > 0.7
             for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1}
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
                 if optimizer_name == "sgd" else torch.optim.AdamW(model.parameters(), lr=0.01))
    hold_masks(model, masks, optimizer)
    params = dict(model.named_parameters())
    start = {name: params[name].detach().clone() for name in masks}
    scaler = grad_scaler("bf16", "cpu")
    for _ in range(4):
        inputs = torch.randn(4, 3, 8, 8, generator=generator)
        if channels_last:
            inputs = to_channels_last(inputs)
        optimizer.zero_grad()
        with autocast("bf16", "cpu"):
            loss = nn.functional.cross_entropy(model(inputs), torch.tensor([0, 1, 2, 3]))
        backward_and_step(loss, optimizer, scaler)
    for name, mask in masks.items():
        assert params[name].dtype == torch.float32
        assert torch.count_nonzero(params[name][~mask]) == 0
        assert not torch.equal(params[name][mask], start[name][mask])  # it did train


def test_channels_last_leaves_other_tensors_alone():
    flat = torch.randn(3, 5)
    assert to_channels_last(flat) is flat
    assert to_channels_last(torch.randn(2, 3, 4, 4)).is_contiguous(
        memory_format=torch.channels_last
    )


def test_default_precision_and_layout_leave_digests_unchanged():
    from shrinkbench_core.config import ExperimentConfig, config_digest

    config = ExperimentConfig()
    before = config.model_dump(
        mode="json",
        exclude={"output", "trackers", "schedule", "precision", "channels_last", "calibration"},
        context={"all_fields": True},
    )
    assert config.digest() == config_digest(before)  # what the digest was without the fields
    bf16, nhwc = ExperimentConfig(precision="bf16"), ExperimentConfig(channels_last=True)
    assert len({config.digest(), bf16.digest(), nhwc.digest()}) == 3
    assert len({config.dense_digest(), bf16.dense_digest(), nhwc.dense_digest()}) == 3


def test_a_bf16_channels_last_run_holds_its_masks_and_records_both(tmp_path):
    import json

    from datagen import write_cifar10

    from shrinkbench_core.cli import main

    write_cifar10(tmp_path / "data", n_train=96, n_test=32)
    assert main(["run", "--output", str(tmp_path), "--dataset", "cifar10", "--model", "resnet20",
                 "--data-root", str(tmp_path / "data"), "--quiet", "-p", "precision=bf16",
                 "-p", "channels_last=true", "-p", "dataset.validation_size=16",
                 "-p", "dataset.batch_size=32", "-p", "dense.epochs=1",
                 "-p", "finetune.epochs=1", "-p", "metrics=[size,accuracy]"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["precision"] == "bf16" and config["channels_last"] is True
    masks = torch.load(run / "masks.pt", weights_only=True)
    weights = torch.load(run / "model.pt", weights_only=True)
    weights = weights.get("model", weights)
    assert any(weights[name].dim() == 4 for name in masks)
    for name, mask in masks.items():
        assert weights[name].dtype == torch.float32
        assert torch.count_nonzero(weights[name][~mask]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(4, rel=1e-3)
    assert math.isfinite(metrics["finetuned"]["accuracy"]["test_loss"])


def test_fp16_on_cpu_exits_2_before_anything_runs(tmp_path, capsys):
    from shrinkbench_core.cli import main

    assert main(["run", "--output", str(tmp_path), "--device", "cpu",
                 "-p", "precision=fp16"]) == 2
    assert "precision: fp16 needs a CUDA device" in capsys.readouterr().err
    assert not tmp_path.joinpath("runs").exists()

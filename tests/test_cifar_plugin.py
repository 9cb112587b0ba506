"""shrinkbench-cifar: CIFAR data from real-format pickles, the CIFAR ResNets and VGG, end to end."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import write_cifar10, write_cifar100
from shrinkbench_cifar import models, plugin
from shrinkbench_cifar.data import CIFAR10_MEAN, CIFAR10_STD, build_cifar10, build_cifar100
from shrinkbench_cifar.factories import build_resnet20, build_vgg16_bn
from shrinkbench_cifar.parameters import CifarDataParameters, CifarModelParameters
from torch import nn

from shrinkbench_core.errors import CheckpointError, ConfigError, DataMissingError

# Exact counts for 10 classes; the paper rounds them to 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
PUBLISHED_MILLIONS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}
EXACT_COUNTS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def one_thread():
    """One intra-op thread: small forward passes on a busy 2-core machine are much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=64, n_test=32)
    write_cifar100(root, n_train=120, n_test=40)
    return root


# -- architectures ----------------------------------------------------------------------------
@pytest.mark.parametrize("depth", sorted(PUBLISHED_MILLIONS))
def test_resnet_parameter_counts_match_he_et_al(depth):
    model = getattr(models, f"resnet{depth}")()
    count = count_parameters(model)
    decimals = 1 if depth == 110 else 2
    assert round(count / 1e6, decimals) == PUBLISHED_MILLIONS[depth]
    assert count == EXACT_COUNTS[depth]


@pytest.mark.parametrize("depth", sorted(PUBLISHED_MILLIONS))
def test_resnet_layout_is_three_stages_of_16_32_64(depth):
    model = getattr(models, f"resnet{depth}")()
    blocks = (depth - 2) // 6
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth  # 6n + 1 convolutions and one linear layer
    for stage, width in zip((model.layer1, model.layer2, model.layer3), (16, 32, 64), strict=True):
        assert len(stage) == blocks
        assert {block.conv2.out_channels for block in stage} == {width}
    # Option A: no projection convolutions anywhere.
    assert all(
        count_parameters(block.shortcut) == 0
        for s in (1, 2, 3)
        for block in getattr(model, f"layer{s}")
    )


def test_option_a_shortcut_subsamples_and_pads_zero_channels():
    shortcut = models.ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 32, 32)
    out = shortcut(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


def test_vgg16_bn_layout():
    model = models.vgg16_bn()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [c for c in models.VGG16_CONFIG if c != "M"]
    layers = list(model.features)
    assert all(isinstance(layers[layers.index(c) + 1], nn.BatchNorm2d) for c in convs)
    assert count_parameters(model) == 14_991_946  # 15.0M
    assert model.get_submodule("classifier.5").out_features == 10


@pytest.mark.parametrize(
    "name", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16_bn"]
)
@pytest.mark.parametrize("classes", [10, 100])
def test_forward_gives_one_logit_per_class(name, classes, one_thread):
    model = getattr(models, name)(num_classes=classes).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, classes)


def test_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.CifarResNet(21)


# -- registration -----------------------------------------------------------------------------
def test_registered_specs_name_the_real_classifier():
    specs = {spec.name: spec for spec in plugin.shrinkbench_register_models()}
    assert set(specs) == {
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "vgg16_bn_cifar",
    }
    for spec in specs.values():
        model = spec.load()(spec.parameters(), num_classes=100, input_shape=(3, 32, 32))
        layer = model.get_submodule(spec.classifier)
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        assert layer is last and layer.out_features == 100
        assert spec.input_shapes == ((3, 32, 32),)
    datasets = {spec.name: spec for spec in plugin.shrinkbench_register_datasets()}
    assert (datasets["cifar10"].num_classes, datasets["cifar100"].num_classes) == (10, 100)


def test_plugin_module_does_not_import_torch():
    code = (
        "import sys, shrinkbench_cifar.plugin as p; p.shrinkbench_register_models(); "
        "p.shrinkbench_register_datasets(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_factory_rejects_other_input_shapes():
    with pytest.raises(ConfigError, match="takes \\(3, 32, 32\\)"):
        build_resnet20(CifarModelParameters(), num_classes=10, input_shape=(3, 64, 64))


# -- checkpoints ------------------------------------------------------------------------------
def test_checkpoint_is_loaded(tmp_path):
    source = models.resnet20()
    torch.save(source.state_dict(), tmp_path / "resnet20.pt")
    model = build_resnet20(
        CifarModelParameters(checkpoint=str(tmp_path / "resnet20.pt")),
        num_classes=10,
        input_shape=(3, 32, 32),
    )
    for (name, value), expected in zip(
        model.state_dict().items(), source.state_dict().values(), strict=True
    ):
        assert torch.equal(value, expected), name


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    torch.save(models.resnet32().state_dict(), tmp_path / "resnet32.pt")
    params = CifarModelParameters(checkpoint=str(tmp_path / "resnet32.pt"))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        build_resnet20(params, num_classes=10, input_shape=(3, 32, 32))
    torch.save(models.vgg16_bn(num_classes=100).state_dict(), tmp_path / "vgg100.pt")
    params = CifarModelParameters(checkpoint=str(tmp_path / "vgg100.pt"))
    with pytest.raises(CheckpointError, match="classifier.5.weight"):
        build_vgg16_bn(params, num_classes=10, input_shape=(3, 32, 32))


def test_missing_checkpoint_file_is_a_checkpoint_error(tmp_path):
    params = CifarModelParameters(checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="nope.pt"):
        build_resnet20(params, num_classes=10, input_shape=(3, 32, 32))


# -- data -------------------------------------------------------------------------------------
def test_cifar10_splits_sizes_labels_and_normalisation(cifar_root):
    splits = build_cifar10(CifarDataParameters(root=str(cifar_root), validation_size=16), seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (48, 16, 32)
    assert (splits.num_classes, splits.input_shape) == (10, (3, 32, 32))
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        batch = pickle.load(handle, encoding="latin1")
    image, label = splits.test[5]
    assert label == batch["labels"][5]
    raw = torch.tensor(batch["data"][5].reshape(3, 32, 32), dtype=torch.float32) / 255
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
    assert torch.allclose(image, (raw - mean) / std, atol=1e-5)
    assert splits.info["classes"][0] == "airplane"


def test_validation_split_is_seeded_and_disjoint(cifar_root):
    params = CifarDataParameters(root=str(cifar_root), validation_size=16)
    first, again, other = (build_cifar10(params, seed=s) for s in (0, 0, 1))
    assert first.validation.indices == again.validation.indices
    assert first.validation.indices != other.validation.indices
    assert not set(first.validation.indices) & set(first.train.indices)
    assert first.train_eval.indices == first.train.indices


def test_only_training_images_are_augmented(cifar_root):
    splits = build_cifar10(CifarDataParameters(root=str(cifar_root), validation_size=16), seed=0)
    torch.manual_seed(0)
    augmented = [splits.train[0][0] for _ in range(8)]
    assert any(not torch.equal(augmented[0], other) for other in augmented[1:])
    for split in (splits.train_eval, splits.validation, splits.test):
        assert torch.equal(split[0][0], split[0][0])


def test_cifar100_uses_fine_labels(cifar_root):
    splits = build_cifar100(CifarDataParameters(root=str(cifar_root), validation_size=0), seed=0)
    assert splits.validation is None
    assert (len(splits.train), len(splits.test), splits.num_classes) == (120, 40, 100)
    with open(cifar_root / "cifar-100-python" / "train", "rb") as handle:
        fine = pickle.load(handle, encoding="latin1")["fine_labels"]
    assert [splits.train[i][1] for i in range(10)] == fine[:10]


def test_root_comes_from_shrinkbench_data_or_names_the_folder(cifar_root, monkeypatch):
    monkeypatch.setenv("SHRINKBENCH_DATA", str(cifar_root))
    assert len(build_cifar10(CifarDataParameters(validation_size=0), seed=0).train) == 64
    folder = str(cifar_root / "cifar-10-batches-py")
    assert (
        len(build_cifar10(CifarDataParameters(root=folder, validation_size=0), seed=0).test) == 32
    )


def test_missing_data_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataMissingError) as caught:
        build_cifar10(CifarDataParameters(root=str(tmp_path)), seed=0)
    message = str(caught.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "-p dataset.download=true" in message


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DataMissingError, match="could not be downloaded"):
        build_cifar10(CifarDataParameters(root=str(tmp_path), download=True), seed=0)


def test_validation_size_must_leave_training_images(cifar_root):
    with pytest.raises(ConfigError, match="validation_size"):
        build_cifar10(CifarDataParameters(root=str(cifar_root), validation_size=64), seed=0)


def test_generated_pickles_match_the_real_format(cifar_root):
    import torchvision

    class Unchecked(torchvision.datasets.CIFAR10):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = []

    data = Unchecked(str(cifar_root), train=True)
    assert data.data.shape == (64, 32, 32, 3) and data.data.dtype == np.uint8
    assert sorted(set(data.targets)) == list(range(10))


# -- end to end -------------------------------------------------------------------------------
def _run_command() -> list[str]:
    script = shutil.which("shrinkbench-run")
    if script:
        return [script]
    return [
        sys.executable,
        "-c",
        "import sys; from shrinkbench_core.cli import run_main; sys.exit(run_main())",
    ]


def test_shrinkbench_run_resnet20_on_generated_cifar10(cifar_root, tmp_path):
    command = _run_command() + [
        "--strategy", "GlobalMagWeight", "--compression", "2", "--dataset", "cifar10",
        "--model", "resnet20", "-p", f"dataset.root={cifar_root}",
        "-p", "dataset.validation_size=16", "-p", "dense.epochs=1", "-p", "finetune.epochs=1",
        "-p", "metrics=[size,accuracy]",
        "--output", str(tmp_path / "out"), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "SHRINKBENCH_DATA": str(tmp_path / "elsewhere")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "out" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dense"]["size"]["total_parameters"] == EXACT_COUNTS[20]
    assert metrics["finetuned"]["accuracy"]["test_examples"] == 32
    assert metrics["finetuned"]["accuracy"]["validation_examples"] == 16
    assert metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(2.0, rel=0.01)
    masks = torch.load(run / "masks.pt", weights_only=True)
    assert "conv1.weight" in masks and "fc.weight" not in masks  # the classifier is not pruned
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["dataset"]["params"]["root"] == str(cifar_root)


def test_shrinkbench_run_without_data_says_how_to_get_it(tmp_path, capsys):
    from shrinkbench_core.cli import run_main

    code = run_main(
        ["--strategy", "GlobalMagWeight", "--dataset", "cifar10", "--model", "resnet20",
         "-p", f"dataset.root={tmp_path}", "--output", str(tmp_path / "out"), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "cifar-10-batches-py" in err and "download=true" in err
    assert "Traceback" not in err


def test_default_validation_size_on_a_small_set_is_caught_by_the_data_check(tmp_path):
    from datagen import write_cifar10, write_cifar100
    from shrinkbench_cifar.checks import check_cifar10, check_cifar100

    write_cifar10(tmp_path, n_train=64, n_test=32)
    write_cifar100(tmp_path, n_train=200, n_test=100)
    (problem,) = check_cifar10(CifarDataParameters(root=str(tmp_path)))  # default 5000
    assert problem.startswith("validation_size: 5000 leaves no training images (CIFAR-10 in")
    assert "has 64" in problem
    assert check_cifar10(CifarDataParameters(root=str(tmp_path), validation_size=63)) == []
    (problem,) = check_cifar100(CifarDataParameters(root=str(tmp_path), validation_size=200))
    assert "has 200" in problem

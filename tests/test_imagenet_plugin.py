"""shrinkbench-imagenet: real-layout ImageNet/Places365 folders, every torchvision classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from datagen import write_image_folder, write_imagenet, write_places365
from PIL import Image
from pydantic import ValidationError
from shrinkbench_imagenet import catalogue, plugin
from shrinkbench_imagenet.classifier import skipped_initialisation
from shrinkbench_imagenet.imagenet import build as build_imagenet
from shrinkbench_imagenet.models import build_torchvision_model, cached_weights_file
from shrinkbench_imagenet.parameters import (
    ImageNetParameters,
    Places365Parameters,
    TorchvisionModelParameters,
)
from shrinkbench_imagenet.places365 import build as build_places365
from torch import nn

from shrinkbench_core.errors import CheckpointError, ConfigError, DataMissingError

CATALOGUE = catalogue.load_catalogue()
LARGE = 250e6  # parameters; these models take seconds just to allocate and run


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_imagenet(root, num_classes=4, train_per_class=5, val_per_class=3, size=40)
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder") / "imagenet"
    write_imagenet(
        root, num_classes=10, train_per_class=7, val_per_class=3, size=40, layout="folder"
    )
    return root.parent


# -- the catalogue ----------------------------------------------------------------------------
def test_catalogue_is_torchvision_registry():
    names = torchvision.models.list_models(module=torchvision.models)
    assert sorted(CATALOGUE) == sorted(names)
    for name, entry in CATALOGUE.items():
        enum = torchvision.models.get_model_weights(name)
        assert entry["default_weights"] == enum.DEFAULT.name
        assert sorted(entry["weights"]) == sorted(w.name for w in enum)
        default = enum.DEFAULT
        described = entry["weights"][default.name]
        assert described["num_params"] == default.meta["num_params"]
        assert described["acc@1"] == default.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert described["gflops"] == default.meta["_ops"]


def test_registered_models_carry_metadata_and_classifier():
    specs = {spec.name: spec for spec in plugin.shrinkbench_register_models()}
    assert set(specs) == set(CATALOGUE)
    resnet50 = specs["resnet50"]
    assert resnet50.classifier == "fc" and resnet50.input_shapes == ()
    assert resnet50.metadata["default_weights"] == "IMAGENET1K_V2"
    assert resnet50.metadata["acc@1"] == pytest.approx(80.858)
    assert resnet50.metadata["num_params"] == 25_557_032
    assert "80.86%" in resnet50.summary
    assert {
        "squeezenet1_0": "classifier.1",
        "vit_b_16": "heads.head",
        "swin_t": "head",
    }.items() <= {name: spec.classifier for name, spec in specs.items()}.items()
    assert all(spec.classifier for spec in specs.values())


def test_listing_imports_no_torch_with_a_warm_cache():
    code = (
        "import sys, shrinkbench_imagenet.plugin as p; n = len(p.shrinkbench_register_models()); "
        "p.shrinkbench_register_datasets(); print(n, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(CATALOGUE)), "False"]


@pytest.mark.slow
def test_cold_cache_is_generated_in_a_subprocess(tmp_path):
    code = (
        "import sys, shrinkbench_imagenet.plugin as p; n = len(p.shrinkbench_register_models()); "
        "print(n, 'torch' in sys.modules)"
    )
    env = {**os.environ, "SHRINKBENCH_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == [str(len(CATALOGUE)), "False"]
    (written,) = tmp_path.glob("torchvision-*-catalogue-v*.json")
    assert torchvision.__version__.split("+")[0] in written.name
    assert json.loads(written.read_text())["models"] == CATALOGUE


def test_cache_file_is_used_when_valid_and_ignored_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINKBENCH_CACHE", str(tmp_path))
    path = catalogue.catalogue_path()
    assert path.parent == tmp_path
    assert catalogue.torchvision_version() in path.name
    entry = {**CATALOGUE["resnet18"], "classifier": "marker"}
    valid = {
        "format": catalogue.CATALOGUE_FORMAT,
        "torchvision": catalogue.torchvision_version(),
        "models": {"resnet18": entry},
    }
    path.write_text(json.dumps(valid))
    assert catalogue._read(path)["models"]["resnet18"]["classifier"] == "marker"
    catalogue._load.cache_clear()
    try:
        assert catalogue.load_catalogue() == {"resnet18": entry}
    finally:
        catalogue._load.cache_clear()
    for stale in ({**valid, "format": -1}, {**valid, "torchvision": "0.0.1"}, "not json"):
        path.write_text(json.dumps(stale) if isinstance(stale, dict) else stale)
        assert catalogue._read(path) is None


# -- every torchvision classifier --------------------------------------------------------------
@pytest.fixture
def one_thread():
    """One intra-op thread: these forward passes are tiny, and on a busy 2-core machine
    OpenMP's spinning threads made them up to 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _size(name: str) -> int:
    return CATALOGUE[name]["probe_size"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow)
        if max((w["num_params"] or 0) for w in CATALOGUE[name]["weights"].values()) > LARGE
        else name
        for name in sorted(CATALOGUE)
    ],
)
def test_every_torchvision_classifier_builds_with_its_classifier_found(name, one_thread):
    """Built through the plugin's factory for 10 classes, then one training-mode forward pass.

    Initialisation is skipped and the weights zeroed (the values do not matter
    here, and initialising the largest models takes many seconds); see
    test_real_initialisation for fully initialised builds. The forward pass
    checks the output (one tensor of 10 logits: no auxiliary outputs) and that
    the registered classifier is the last layer with 10 outputs to run.
    """
    size = _size(name)
    spec_classifier = CATALOGUE[name]["classifier"]
    with skipped_initialisation():
        model = build_torchvision_model(
            name, TorchvisionModelParameters(), num_classes=10, input_shape=(3, size, size)
        )
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.zero_()
    layer = model.get_submodule(spec_classifier)
    assert isinstance(layer, (nn.Linear, nn.Conv2d))
    executed = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.register_forward_hook(lambda *_, n=module_name: executed.append(n))
    with torch.no_grad():
        output = model.train()(torch.zeros(2, 3, size, size))
    assert isinstance(output, torch.Tensor) and output.shape == (2, 10)
    assert executed[-1] == spec_classifier


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1", "googlenet", "mobilenet_v3_small"])
def test_real_initialisation(name):
    model = build_torchvision_model(
        name, TorchvisionModelParameters(), num_classes=7, input_shape=(3, 64, 64)
    )
    model.train()
    output = model(torch.randn(2, 3, 64, 64))
    assert isinstance(output, torch.Tensor) and output.shape == (2, 7)
    assert model.get_submodule(CATALOGUE[name]["classifier"]).weight.std() > 0


def test_builder_kwargs_are_passed_and_guarded():
    model = build_torchvision_model(
        "vit_b_32",
        TorchvisionModelParameters(builder_kwargs={"image_size": 64}),
        num_classes=3,
        input_shape=(3, 64, 64),
    )
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValidationError, match="num_classes"):
        TorchvisionModelParameters(builder_kwargs={"num_classes": 3})


# -- pretrained weights -----------------------------------------------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return tmp_path / "hub" / "checkpoints"


def _cache_weights(name: str, weights: str) -> dict[str, torch.Tensor]:
    member = torchvision.models.get_model_weights(name)[weights]
    state = torchvision.models.get_model(name).state_dict()
    torch.save(state, cached_weights_file(member))
    return state


def test_pretrained_weights_come_from_the_hub_cache(hub):
    state = _cache_weights("resnet18", "IMAGENET1K_V1")
    assert (hub / "resnet18-f37072fd.pth").is_file()
    params = TorchvisionModelParameters(weights="IMAGENET1K_V1")
    model = build_torchvision_model("resnet18", params, num_classes=1000, input_shape=(3, 224, 224))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    params = TorchvisionModelParameters(weights="ResNet18_Weights.DEFAULT")
    model = build_torchvision_model("resnet18", params, num_classes=10, input_shape=(3, 32, 32))
    assert model.fc.out_features == 10
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_pretrained_convolutional_head_is_replaced(hub):
    state = _cache_weights("squeezenet1_1", "IMAGENET1K_V1")
    params = TorchvisionModelParameters(weights="DEFAULT")
    model = build_torchvision_model("squeezenet1_1", params, num_classes=5, input_shape=(3, 64, 64))
    head = model.get_submodule("classifier.1")
    assert isinstance(head, nn.Conv2d) and head.out_channels == 5
    assert torch.equal(model.features[0].weight, state["features.0.weight"])
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_missing_weights_without_internet_say_where_they_were_looked_for(hub, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    params = TorchvisionModelParameters(weights="IMAGENET1K_V1")
    with pytest.raises(CheckpointError) as caught:
        build_torchvision_model("resnet18", params, num_classes=10, input_shape=(3, 32, 32))
    message = str(caught.value)
    assert str(hub / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_corrupted_cached_weights_are_a_checkpoint_error(hub):
    (hub / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    params = TorchvisionModelParameters(weights="IMAGENET1K_V1")
    with pytest.raises(CheckpointError, match="delete the file"):
        build_torchvision_model("resnet18", params, num_classes=10, input_shape=(3, 32, 32))


def test_unknown_weights_name_lists_the_allowed_ones():
    params = TorchvisionModelParameters(weights="IMAGENET1K_V9")
    with pytest.raises(ConfigError, match="allowed: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        build_torchvision_model("resnet50", params, num_classes=10, input_shape=(3, 32, 32))


def test_local_checkpoint_is_loaded_after_the_build(tmp_path):
    source = torchvision.models.resnet18(num_classes=10)
    torch.save(source.state_dict(), tmp_path / "r18.pt")
    params = TorchvisionModelParameters(checkpoint=str(tmp_path / "r18.pt"))
    model = build_torchvision_model("resnet18", params, num_classes=10, input_shape=(3, 32, 32))
    assert torch.equal(model.fc.weight, source.fc.weight)
    with pytest.raises(CheckpointError, match="fc.weight"):
        build_torchvision_model("resnet18", params, num_classes=5, input_shape=(3, 32, 32))


# -- ImageNet data ----------------------------------------------------------------------------
def test_imagenet_layout_reads_meta_bin(imagenet_root):
    params = ImageNetParameters(root=str(imagenet_root), image_size=32, resize_size=36)
    splits = build_imagenet(params, seed=0)
    assert splits.info["layout"] == "imagenet"
    assert (splits.num_classes, splits.input_shape) == (4, (3, 32, 32))
    assert (len(splits.train), len(splits.test), splits.validation) == (20, 12, None)
    assert splits.info["first_classes"][0].startswith("('synthetic class 0'")
    image, label = splits.test[11]
    assert image.shape == (3, 32, 32) and label == 3


def test_folder_layout_keeps_training_class_indices(tmp_path):
    write_image_folder(tmp_path / "train", ["cat", "dog", "eel"], per_class=3, size=24)
    write_image_folder(tmp_path / "val", ["dog", "eel"], per_class=2, size=24)
    params = ImageNetParameters(root=str(tmp_path), image_size=16, resize_size=20)
    splits = build_imagenet(params, seed=0)
    assert splits.info["layout"] == "folder" and splits.num_classes == 3
    assert [splits.test[i][1] for i in range(4)] == [1, 1, 2, 2]
    write_image_folder(tmp_path / "val", ["fox"], per_class=1, size=24)
    with pytest.raises(DataMissingError, match="fox"):
        build_imagenet(params, seed=0)


def test_dataset_found_in_the_imagenet_subfolder_of_shrinkbench_data(folder_root, monkeypatch):
    monkeypatch.setenv("SHRINKBENCH_DATA", str(folder_root))
    splits = build_imagenet(ImageNetParameters(image_size=32, resize_size=36), seed=0)
    assert splits.info["root"] == str(folder_root / "imagenet")
    assert (splits.num_classes, len(splits.train), len(splits.test)) == (10, 70, 30)


def test_validation_holdout_and_seeded_test_subset(folder_root):
    params = ImageNetParameters(
        root=str(folder_root), image_size=32, resize_size=36, validation_size=10, subset_size=12
    )
    first, again, other = (build_imagenet(params, seed=s) for s in (0, 0, 1))
    assert (len(first.train), len(first.validation), len(first.test)) == (60, 10, 12)
    assert first.test.indices == again.test.indices != other.test.indices
    assert first.validation.indices == again.validation.indices
    assert not set(first.validation.indices) & set(first.train.indices)
    assert first.info["sizes"]["test_full"] == 30
    with pytest.raises(ConfigError, match="subset_size"):
        build_imagenet(params.model_copy(update={"subset_size": 31}), seed=0)


def test_preprocessing_is_the_standard_pipeline(folder_root):
    params = ImageNetParameters(root=str(folder_root), image_size=32, resize_size=36)
    splits = build_imagenet(params, seed=0)
    path, _ = splits.test.base.samples[0]
    expected = torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize(36),
            torchvision.transforms.CenterCrop(32),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )(Image.open(path).convert("RGB"))
    assert torch.equal(splits.test[0][0], expected)
    torch.manual_seed(0)
    crops = [splits.train[0][0] for _ in range(6)]
    assert any(not torch.equal(crops[0], crop) for crop in crops[1:])
    assert torch.equal(splits.train_eval[0][0], splits.train_eval[0][0])
    with pytest.raises(ValidationError, match="resize_size"):
        ImageNetParameters(image_size=224, resize_size=128)


def test_missing_imagenet_explains_the_manual_steps(tmp_path, folder_root):
    with pytest.raises(DataMissingError) as caught:
        build_imagenet(ImageNetParameters(root=str(tmp_path)), seed=0)
    message = str(caught.value)
    assert str(tmp_path) in message and str(tmp_path / "imagenet") in message
    assert "image-net.org" in message and "ILSVRC2012_devkit_t12.tar.gz" in message
    with pytest.raises(DataMissingError, match="'imagenet' layout"):
        build_imagenet(ImageNetParameters(root=str(folder_root), layout="imagenet"), seed=0)


# -- Places365 --------------------------------------------------------------------------------
def test_places365_small_image_layout(tmp_path):
    categories = write_places365(tmp_path, num_classes=5, train_per_class=4, val_per_class=2)
    params = Places365Parameters(root=str(tmp_path), image_size=32, resize_size=36)
    splits = build_places365(params, seed=0)
    assert (splits.num_classes, len(splits.train), len(splits.test)) == (5, 20, 10)
    assert splits.train.base.classes == categories
    assert [splits.test[i][1] for i in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert splits.test[0][0].shape == (3, 32, 32)
    (tmp_path / "data_256_standard").rename(tmp_path / "data_256")  # the official archive's name
    assert len(build_places365(params, seed=0).train) == 20


def test_missing_places365_says_how_to_get_it(tmp_path):
    with pytest.raises(DataMissingError) as caught:
        build_places365(Places365Parameters(root=str(tmp_path)), seed=0)
    message = str(caught.value)
    assert "categories_places365.txt" in message and "-p dataset.download=true" in message


# -- end to end -------------------------------------------------------------------------------
def test_shrinkbench_run_resnet18_on_a_generated_folder_set(folder_root, tmp_path, capsys):
    from shrinkbench_core.cli import run_main

    code = run_main(
        [
            "--strategy", "GlobalMagWeight", "--compression", "2", "--dataset", "imagenet",
            "--model", "resnet18", "-p", f"dataset.root={folder_root}",
            "-p", "dataset.image_size=32", "-p", "dataset.resize_size=36",
            "-p", "dense.epochs=1", "-p", "finetune.epochs=1", "-p", "metrics=[size,accuracy]",
            "--output", str(tmp_path / "out"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (run,) = (tmp_path / "out" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finetuned"]["accuracy"]["test_examples"] == 30
    assert metrics["finetuned"]["accuracy"]["test_num_classes"] == 10
    assert metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(2.0, rel=0.01)
    masks = torch.load(run / "masks.pt", weights_only=True)
    assert "layer1.0.conv1.weight" in masks and "fc.weight" not in masks


def test_shrinkbench_run_without_imagenet_is_a_short_error(tmp_path, capsys):
    from shrinkbench_core.cli import run_main

    code = run_main(
        ["--strategy", "GlobalMagWeight", "--dataset", "places365", "--model", "resnet18",
         "-p", f"dataset.root={tmp_path}", "--output", str(tmp_path / "out"), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Places365 not found" in err and "Traceback" not in err

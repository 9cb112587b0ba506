"""ImageNet/Places365: an explicit layout is honoured; split sizes checked before a run."""

from __future__ import annotations

import pytest
from datagen import write_imagenet, write_places365
from shrinkbench_imagenet.checks import check_imagenet, check_places365
from shrinkbench_imagenet.imagenet import build as build_imagenet
from shrinkbench_imagenet.parameters import ImageNetParameters, Places365Parameters

from shrinkbench_core.errors import DataMissingError


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    """Plain class folders, plus the devkit archive and a meta.bin lying beside them."""
    root = tmp_path_factory.mktemp("both")
    write_imagenet(root, num_classes=3, train_per_class=4, val_per_class=2, size=24,
                   layout="folder")
    (root / "meta.bin").write_bytes(b"not torchvision's: this is the folder layout")
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"")
    return root


def params(root, **options) -> ImageNetParameters:
    return ImageNetParameters(root=str(root), image_size=16, resize_size=20, **options)


def test_explicit_folder_layout_is_honoured_beside_imagenet_files(both_layouts):
    splits = build_imagenet(params(both_layouts, layout="folder"), seed=0)
    assert splits.info["layout"] == "folder"
    assert (splits.num_classes, len(splits.train), len(splits.test)) == (3, 12, 6)
    assert check_imagenet(params(both_layouts, layout="folder")) == []


def test_auto_still_prefers_torchvision_layout_and_explicit_missing_layout_is_refused(tmp_path):
    write_imagenet(tmp_path / "tv", num_classes=2, train_per_class=2, val_per_class=1, size=24)
    assert build_imagenet(params(tmp_path / "tv"), seed=0).info["layout"] == "imagenet"
    write_imagenet(tmp_path / "plain", num_classes=2, train_per_class=2, val_per_class=1,
                   size=24, layout="folder")
    with pytest.raises(DataMissingError, match="'imagenet' layout"):
        build_imagenet(params(tmp_path / "plain", layout="imagenet"), seed=0)
    (problem,) = check_imagenet(params(tmp_path / "plain", layout="imagenet"))
    assert problem.startswith("root: ImageNet not found: looked for the 'imagenet' layout")


def test_split_sizes_larger_than_the_data_are_reported_before_loading(both_layouts):
    (problem,) = check_imagenet(params(both_layouts, layout="folder", validation_size=12))
    assert problem.startswith("validation_size: 12 must be less than the 12 training images")
    (problem,) = check_imagenet(params(both_layouts, layout="folder", subset_size=7))
    assert problem == "subset_size: 7 is more than the 6 test images found"
    assert check_imagenet(params(both_layouts, layout="folder", validation_size=11,
                                 subset_size=6)) == []


def test_places365_split_sizes_checked_from_its_file_lists(tmp_path):
    write_places365(tmp_path, num_classes=2, train_per_class=3, val_per_class=2, size=24)
    assert check_places365(Places365Parameters(root=str(tmp_path), validation_size=5)) == []
    (problem,) = check_places365(Places365Parameters(root=str(tmp_path), validation_size=6))
    assert problem.startswith("validation_size: 6 must be less than the 6 training images")


def test_the_run_stops_at_validation_with_the_dataset_s_own_message(both_layouts, tmp_path,
                                                                     capsys):
    from shrinkbench_core.cli import run_main

    code = run_main(
        ["--dataset", "imagenet", "--model", "resnet18", "-p", f"dataset.root={both_layouts}",
         "-p", "dataset.layout=folder", "-p", "dataset.validation_size=100",
         "--output", str(tmp_path / "out"), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "dataset.params.validation_size: 100 must be less than the 12 training images" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()

"""Coverage of torchvision classifiers: each shrunk at half of every group's removal units
(uniform lowest-L1 selection) with outputs verified equal to the masked model's.

The default run covers one small model of each family the pattern tests do not
(tests/test_structured_patterns.py covers MobileNetV3, RegNet, ConvNeXt, ViT and
Swin). All 80 classifiers take about half an hour on one CPU core; they run with
``SHRINKBENCH_FULL_COVERAGE=1`` (each in a child process with a 6 GB memory
limit), and ``benchmarks/structured_coverage.py`` prints the README table.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torchvision

from shrinkbench_core.pruning.channels.selection import lowest_norm_channels
from shrinkbench_core.pruning.shrink import shrink_model
from shrinkbench_core.pruning.structured import analyze_channels, mask_channels

FAST = [
    "resnet18", "mobilenet_v2", "mnasnet0_5", "shufflenet_v2_x0_5", "squeezenet1_1",
    "efficientnet_b0", "googlenet", "regnet_x_400mf",
]  # fmt: skip
FULL = os.environ.get("SHRINKBENCH_FULL_COVERAGE") == "1"


def coverage_script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "structured_coverage.py"
    spec = importlib.util.spec_from_file_location("structured_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return coverage_script()


@pytest.mark.parametrize("name", FAST)
def test_small_model_of_each_family_shrinks_verified_to_1_5x(script, name):
    torch.set_num_threads(1)
    model = script.build(name)
    example = torch.randn(1, 3, script.input_size(name), script.input_size(name))
    analysis = analyze_channels(model, example)
    masks = mask_channels(model, lowest_norm_channels(model, analysis.groups(), 0.5))
    result = shrink_model(model, masks, example, analysis=analysis)  # raises if outputs differ
    assert result.max_abs_diff is not None
    assert result.compression >= 1.5


def test_the_classifier_list_is_the_one_the_table_covers():
    assert len(torchvision.models.list_models(module=torchvision.models)) == 80


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="all 80 classifiers: set SHRINKBENCH_FULL_COVERAGE=1")
@pytest.mark.parametrize("name", torchvision.models.list_models(module=torchvision.models))
def test_every_torchvision_classifier_shrinks_verified(script, name):
    result = script.isolated("ours", name, 6.0, 1800.0)
    if "memory limit" in result.get("error", ""):
        pytest.skip(result["error"])
    assert "error" not in result, result["error"]
    assert result["max_abs_diff"] is not None and result["compression"] > 1.0

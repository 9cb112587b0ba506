"""Shrunk models leave the framework: exported with ``torch.onnx.export`` and run in ONNX
Runtime, with the same outputs as in torch (squeeze-excite, pruned heads of
``nn.MultiheadAttention`` and of Swin window attention, a torchvision MobileNetV3)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torchvision
from test_structured_patterns import Encoder, SqueezeExcite, Windowed
from test_structured_shrink import randomize
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

from shrinkbench_core.pruning.channels.selection import lowest_norm_channels
from shrinkbench_core.pruning.shrink import shrink_model
from shrinkbench_core.pruning.structured import analyze_channels, mask_channels

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def shrunk_half(model: nn.Module, example: torch.Tensor) -> nn.Module:
    analysis = analyze_channels(model, example)
    masks = mask_channels(model, lowest_norm_channels(model, analysis.groups(), 0.5))
    result = shrink_model(model, masks, example, analysis=analysis)
    assert result.params_after < result.params_before
    return result.model


def onnx_outputs(model: nn.Module, batch: torch.Tensor):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints in shapes
        torch.onnx.export(model.eval(), (batch,), buffer, dynamo=False,
                          input_names=["input"], output_names=["output"])  # fmt: skip
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])


CASES = {
    "squeeze_excite": (SqueezeExcite, (3, 8, 8)),
    "multihead_attention": (Encoder, (5, 6)),
    "swin_v2_attention": (lambda: Windowed(ShiftedWindowAttentionV2), (3, 8, 8)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
                           (3, 32, 32)),  # fmt: skip
}


@pytest.mark.parametrize("case", list(CASES))
def test_shrunk_model_runs_in_onnxruntime_with_torch_outputs(case):
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = shrunk_half(randomize(build()), torch.randn(1, *shape))
    batch = torch.randn(2, *shape)
    with torch.no_grad():
        expected = model.eval()(batch)
    actual = onnx_outputs(model, batch)
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))

"""Structured shrinking of modern patterns: squeeze-excite gates, grouped convolutions,
channel-last blocks (permute, LayerNorm, Linear on the last dim), attention heads and
transformer MLP units.

Each pattern is checked on a small hand-built module (which groups the analysis
forms, what it reports) and on a torchvision model that uses it: half of every
group's removal units go, and the shrunk model must give the masked model's
outputs on fresh inputs, with random nonzero weights so the check cannot pass by
accident.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_structured_shrink import assert_close, masked_copy, randomize, run
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from shrinkbench_core.pruning.channels.attention import PrunedMultiheadAttention
from shrinkbench_core.pruning.channels.norms import PaddedLayerNorm
from shrinkbench_core.pruning.channels.selection import lowest_norm_channels, removal_units
from shrinkbench_core.pruning.shrink import shrink_model
from shrinkbench_core.pruning.structured import (
    analyze_channels,
    complete_channel_masks,
    mask_channels,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def shrink_half(model: nn.Module, example, fresh):
    """Remove half of every group's removal units; check shrunk == masked on ``fresh``."""
    analysis = analyze_channels(model, example)
    masks = mask_channels(model, lowest_norm_channels(model, analysis.groups(), 0.5))
    result = shrink_model(model, masks, example, analysis=analysis)
    completed = complete_channel_masks(model, masks, example, analysis=analysis)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))
    return analysis, result


def groups_by_producers(analysis):
    return {group.producers: group for group in analysis.groups()}


# -- squeeze-excite ------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.reduce = nn.Conv2d(8, 4, 1)
        self.expand = nn.Conv2d(4, 8, 1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(x * gate)


def test_squeeze_excite_ties_the_expand_rows_to_the_gated_channels():
    model = randomize(SqueezeExcite())
    analysis, result = shrink_half(model, torch.randn(1, 3, 8, 8), torch.randn(2, 3, 8, 8))
    groups = groups_by_producers(analysis)
    assert set(groups) == {("conv.weight", "expand.weight"), ("reduce.weight",), ("head.weight",)}
    gated = groups[("conv.weight", "expand.weight")]
    assert all(c.producers["conv.weight"] == c.producers["expand.weight"] for c in gated.channels)
    assert len(gated.removable) == 8 and len(groups[("reduce.weight",)].removable) == 4
    shrunk = result.model
    assert shrunk.conv.out_channels == shrunk.expand.out_channels == shrunk.head.in_channels == 4
    assert (shrunk.reduce.out_channels, shrunk.expand.in_channels) == (2, 2)
    assert result.unsupported == []


def test_mobilenet_v3_squeeze_excite_shrinks():
    model = randomize(torchvision.models.mobilenet_v3_small(num_classes=10))
    _, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert result.unsupported == [] and result.compression > 2.5


# -- grouped convolutions ------------------------------------------------------------------


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(3, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 8, 3, padding=1, groups=4)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.grouped(F.relu(self.bn(self.reduce(x))))))


def test_grouped_convolution_loses_as_many_channels_in_every_group():
    model = randomize(Grouped())
    example = torch.randn(1, 3, 8, 8)
    groups = groups_by_producers(analyze_channels(model, example))
    reduce = groups[("reduce.weight",)]
    assert reduce.slots() == [i // 4 for i in range(16)]
    units = removal_units(reduce, list(range(16, 0, -1)))
    assert len(units) == 3  # every convolution group keeps one of its 4 channels
    assert all(sorted(reduce.slots()[reduce.channels.index(c)] for c in u.channels) == [0, 1, 2, 3]
               for u in units)  # fmt: skip
    _, result = shrink_half(model, example, torch.randn(2, 3, 8, 8))
    assert result.unsupported == []
    assert (result.model.grouped.in_channels, result.model.grouped.out_channels) == (8, 4)
    assert result.model.grouped.groups == 4


def test_regnet_grouped_convolutions_and_squeeze_excite_shrink():
    model = randomize(torchvision.models.regnet_y_400mf(num_classes=10))
    _, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert result.unsupported == [] and result.compression > 3.0


# -- channel-last blocks -------------------------------------------------------------------


class ChannelLastBlock(nn.Module):
    """A ConvNeXt block: depthwise conv, permute, LayerNorm, Linear-GELU-Linear, permute,
    layer scale, residual; a LayerNorm over the stream's channels before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.LayerNorm(8)
        self.up = nn.Linear(8, 32)
        self.down = nn.Linear(32, 8)
        self.scale = nn.Parameter(torch.full((8, 1, 1), 0.5))
        self.final = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.down(F.gelu(self.up(y))).permute(0, 3, 1, 2)
        x = x + self.scale * y
        return self.head(self.final(x.mean((2, 3))))


def test_channel_last_block_mlp_units_and_normalized_stream_shrink():
    model = randomize(ChannelLastBlock())
    analysis, result = shrink_half(model, torch.randn(1, 3, 6, 6), torch.randn(2, 3, 6, 6))
    groups = groups_by_producers(analysis)
    hidden = groups[("up.weight",)]
    assert hidden.size == 32 and len(hidden.removable) == 32
    assert all(c.consumers == {"down.weight": c.producers["up.weight"]} for c in hidden.channels)
    stream = groups[("stem.weight", "dw.weight", "down.weight")]
    assert len(stream.removable) == 8
    assert {"norm.weight", "norm.bias", "scale", "final.weight"} <= set(stream.channels[0].attached)
    assert result.unsupported == []
    shrunk = result.model
    assert (shrunk.up.out_features, shrunk.down.in_features) == (16, 16)
    assert shrunk.down.out_features == shrunk.head.in_features == 4
    assert isinstance(shrunk.norm, PaddedLayerNorm) and shrunk.norm.full_width == 8
    assert shrunk.norm.weight.shape == (4,) and shrunk.scale.shape == (4, 1, 1)


def test_layer_norm_over_channels_that_are_not_zero_when_removed_is_reported():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sigmoid(), nn.Flatten(2))
    model = randomize(_LastNorm(model))
    [report] = analyze_channels(model, torch.randn(1, 3, 4, 4)).unsupported()
    assert "not zero when removed" in report.reason and report.layers == ("body.0",)


class _LastNorm(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.body(x).transpose(1, 2))


def test_convnext_stream_and_mlp_units_shrink():
    model = randomize(torchvision.models.convnext_tiny(num_classes=10))
    _, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert result.unsupported == [] and result.compression > 3.5


# -- attention heads -----------------------------------------------------------------------


class Encoder(nn.Module):
    """Token embedding, self-attention with a residual, LayerNorm, MLP, mean-pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(1))


def test_multihead_attention_heads_and_mlp_units_are_removed_whole():
    model = randomize(Encoder())
    analysis, result = shrink_half(model, torch.randn(1, 5, 6), torch.randn(3, 7, 6))
    groups = groups_by_producers(analysis)
    heads = groups[("attn.in_proj_weight",)]
    assert heads.size == 4 and len(heads.removable) == 4
    # A head: its q, k and v rows, its out_proj columns.
    assert heads.channels[1].producers["attn.in_proj_weight"] == (4, 5, 6, 7, 20, 21, 22, 23,
                                                                  36, 37, 38, 39)  # fmt: skip
    assert heads.channels[1].consumers == {"attn.out_proj.weight": (4, 5, 6, 7)}
    assert groups[("mlp.0.weight",)].size == 24
    attn = result.model.attn
    assert isinstance(attn, PrunedMultiheadAttention) and attn.num_heads == 2
    # The residual stream (normalized by LayerNorm) lost half its width too: 16 -> 8.
    assert groups[("embed.weight", "attn.out_proj.weight", "mlp.2.weight")].size == 16
    assert attn.in_proj_weight.shape == (24, 8) and attn.out_proj.weight.shape == (8, 8)
    assert result.model.mlp[0].out_features == 12


def test_vit_heads_and_mlp_units_shrink():
    model = randomize(torchvision.models.vit_b_32(num_classes=10))
    model.encoder.layers = model.encoder.layers[:2]  # two blocks keep the test fast
    _, result = shrink_half(model, torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224))
    layer = result.model.encoder.layers[0]
    assert layer.self_attention.num_heads == 6 and layer.mlp[0].out_features == 1536


class Windowed(nn.Module):
    def __init__(self, attention: type[nn.Module]) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        self.attn = attention(16, [4, 4], [2, 2], 4)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.permute(0, 2, 3, 1))
        x = x + self.attn(x)
        return self.head(x.mean((1, 2)))


@pytest.mark.parametrize("attention", [ShiftedWindowAttention, ShiftedWindowAttentionV2])
def test_swin_window_attention_heads_are_removed_whole(attention):
    model = randomize(Windowed(attention))
    analysis, result = shrink_half(model, torch.randn(1, 3, 8, 8), torch.randn(2, 3, 10, 6))
    heads = groups_by_producers(analysis)[("attn.qkv.weight",)]
    assert heads.size == 4
    attn = result.model.attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 24 and attn.proj.in_features == 8
    assert isinstance(attn, attention)  # a subclass: same parameter names, same state dict


def test_swin_heads_and_mlp_units_shrink():
    model = randomize(torchvision.models.swin_t(num_classes=10))
    _, result = shrink_half(model, torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))
    assert result.unsupported == [] and result.compression > 3.5


class SizeFromStream(nn.Module):
    """A branch reshaped with another tensor's channel count as a size (as MaxViT's attention
    reshapes with its input's width)."""

    def __init__(self) -> None:
        super().__init__()
        self.stream = nn.Conv2d(3, 8, 1)
        self.branch = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 2)
        self.side = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stream(x)
        b = self.branch(x)
        b = b.reshape(b.shape[0], b.shape[1], -1, s.shape[1])  # the stream's width as a size
        return self.head(b.mean((2, 3))) + self.side(s.mean((2, 3)))


def test_channel_count_used_in_another_reshape_is_reported_and_kept():
    model = randomize(SizeFromStream())
    example = torch.randn(1, 3, 4, 4)
    analysis = analyze_channels(model, example)
    stream = groups_by_producers(analysis)[("stream.weight",)]
    assert stream.removable == []
    assert len(groups_by_producers(analysis)[("branch.weight",)].removable) == 8
    masks = mask_channels(model, [c for g in analysis.groups() for c in g.channels[:4]])
    result = shrink_model(model, masks, example, analysis=analysis)
    assert result.model.stream.out_channels == 8  # kept: the reshape still works
    assert result.model.branch.out_channels == 4
    assert any("channel count as the size" in u.reason for u in result.unsupported)


@pytest.mark.parametrize(
    "build", [ChannelLastBlock, Encoder, lambda: Windowed(ShiftedWindowAttentionV2)],
    ids=["layer_norm_and_scale", "multihead_attention", "swin_attention"],
)
def test_resize_like_rebuilds_shrunk_heads_norms_and_scales(build):
    from shrinkbench_core.pruning.shrink import resize_like

    model = randomize(build())
    example = torch.randn(1, 5, 6) if isinstance(model, Encoder) else torch.randn(1, 3, 8, 8)
    _, result = shrink_half(model, example, example)
    rebuilt = resize_like(build(), result.channel_config)
    rebuilt.load_state_dict(result.model.state_dict())
    assert torch.equal(run(rebuilt, example), run(result.model, example))

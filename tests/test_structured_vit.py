"""A ViT's embedding width as one tied group, and MaxViT's relative attention heads.

Each rule is checked on a small hand-built module and on torchvision models: half
of every group's removal units go (lowest L1 norm), and the shrunk model must
give the masked model's outputs on fresh inputs, with random nonzero weights so
the check cannot pass by accident. The full-size vit_b_16 and maxvit_t are
marked slow.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from test_structured_patterns import groups_by_producers, shrink_half
from test_structured_shrink import randomize, run
from torch import nn
from torchvision.models.maxvit import MaxVit, RelativePositionalMultiHeadAttention
from torchvision.models.vision_transformer import VisionTransformer

from shrinkbench_core.pruning.channels.attention import PrunedMultiheadAttention
from shrinkbench_core.pruning.channels.maxvit import PrunedRelativePositionalMultiHeadAttention
from shrinkbench_core.pruning.channels.norms import PaddedLayerNorm
from shrinkbench_core.pruning.channels.vit import StreamParameter
from shrinkbench_core.pruning.shrink import resize_like, shrink_model
from shrinkbench_core.pruning.structured import analyze_channels, complete_channel_masks

pytestmark = pytest.mark.usefixtures("single_thread")


# -- stream parameters: class token and position embedding --------------------------------


class TokenStream(nn.Module):
    """Tokens embedded by a Linear, a class token concatenated in front, a position
    embedding added, an MLP block with a LayerNorm, the class token classified."""

    def __init__(self, width: int = 8, tokens: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.zeros(1, tokens + 1, width))
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 12), nn.GELU(), nn.Linear(12, width))
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position
        x = x + self.mlp(self.norm(x))
        return self.head(x[:, 0])


def test_class_token_and_position_embedding_follow_the_stream():
    model = randomize(TokenStream())
    analysis, result = shrink_half(model, torch.randn(1, 5, 3), torch.randn(4, 5, 3))
    stream = groups_by_producers(analysis)[("embed.weight", "mlp.2.weight")]
    assert stream.size == 8 and len(stream.removable) == 8
    sites = {site.name: site for site in analysis.stream}
    assert set(sites) == {"class_token", "position"}
    assert all(isinstance(site, StreamParameter) for site in sites.values())
    assert result.unsupported == []
    shrunk = result.model
    assert shrunk.class_token.shape == (1, 1, 4) and shrunk.position.shape == (1, 6, 4)
    assert shrunk.embed.out_features == shrunk.mlp[2].out_features == shrunk.head.in_features == 4
    assert isinstance(shrunk.norm, PaddedLayerNorm) and shrunk.norm.full_width == 8


def test_removed_stream_channels_mask_the_class_token_and_position_entries():
    model = randomize(TokenStream())
    example = torch.randn(1, 5, 3)
    analysis = analyze_channels(model, example)
    stream = groups_by_producers(analysis)[("embed.weight", "mlp.2.weight")]
    channel = stream.channels[3]
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()}
    for name, rows in channel.producers.items():
        masks[name][list(rows)] = False
    completed = complete_channel_masks(model, masks, example, analysis=analysis)
    assert not completed["class_token"][..., 3].any() and completed["class_token"].sum() == 7
    assert not completed["position"][..., 3].any() and completed["position"][..., :3].all()


class WideningCat(TokenStream):
    """A parameter concatenated along the channels widens the stream: not a stream
    parameter; the channels stay and the pattern is reported."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = torch.cat([x, self.class_token.expand(x.shape[0], x.shape[1], -1)], dim=2)
        return self.head(x[:, 0, :8] + x[:, 0, 8:])


def test_parameter_concatenated_along_the_channels_is_reported_and_kept():
    model = randomize(WideningCat())
    analysis = analyze_channels(model, torch.randn(1, 5, 3))
    assert analysis.stream == []
    assert groups_by_producers(analysis)[("embed.weight",)].removable == []
    assert any("concatenation" in u.reason for u in analysis.unsupported())


# -- torchvision ViT: the whole embedding width -------------------------------------------


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                             hidden_dim=16, mlp_dim=24, num_classes=5)  # fmt: skip


def test_vit_embedding_width_is_one_tied_group():
    model = randomize(tiny_vit())
    analysis, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(3, 3, 32, 32))
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(2)]
    producers = ("conv_proj.weight", *(f"{block}.{name}" for block in blocks
                 for name in ("self_attention.out_proj.weight", "mlp.3.weight")))  # fmt: skip
    stream = groups_by_producers(analysis)[producers]
    assert stream.size == 16 and len(stream.removable) == 16
    attached = stream.channels[0].attached
    assert {"encoder.ln.weight", f"{blocks[1]}.ln_2.bias"} <= set(attached)
    consumers = stream.channels[0].consumers
    assert {"heads.head.weight", f"{blocks[0]}.mlp.0.weight",
            f"{blocks[0]}.self_attention.in_proj_weight"} <= set(consumers)  # fmt: skip
    assert [(type(s).__name__, s.name) for s in analysis.stream] == [
        ("WidthAttribute", "hidden_dim"),
        ("StreamParameter", "class_token"),
        ("StreamParameter", "encoder.pos_embedding"),
    ]
    assert result.unsupported == []
    shrunk = result.model
    assert shrunk.hidden_dim == 8 and shrunk.conv_proj.out_channels == 8
    assert shrunk.class_token.shape == (1, 1, 8)
    assert shrunk.encoder.pos_embedding.shape == (1, 17, 8)
    assert shrunk.heads.head.in_features == 8
    layer = shrunk.encoder.layers[0]
    assert isinstance(layer.self_attention, PrunedMultiheadAttention)
    assert layer.self_attention.num_heads == 2
    assert layer.self_attention.in_proj_weight.shape == (24, 8)  # 2 heads x q, k, v of 4; 8 in
    assert (layer.mlp[0].in_features, layer.mlp[0].out_features) == (8, 12)
    assert isinstance(shrunk.encoder.ln, PaddedLayerNorm) and shrunk.encoder.ln.full_width == 16
    # Measured: 7413 -> 2813 parameters (2.64x; the 5-class head keeps its rows).
    assert result.compression > 2.5


class NotAViT(nn.Module):
    """A hard-coded reshape to a ``hidden_dim`` attribute outside torchvision's ViT."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden_dim = 8
        self.conv = nn.Conv2d(3, 8, 2, stride=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).reshape(x.shape[0], self.hidden_dim, -1).permute(0, 2, 1)
        return self.head(x.mean(1))


def test_hard_coded_width_outside_a_vision_transformer_is_reported_and_kept():
    model = randomize(NotAViT())
    analysis = analyze_channels(model, torch.randn(1, 3, 4, 4))
    assert analysis.stream == []
    assert groups_by_producers(analysis)[("conv.weight",)].removable == []
    [report] = analysis.unsupported()
    assert "hard-coded size 8" in report.reason


def test_vit_shrunk_state_dict_reloads_with_resize_like():
    model = randomize(tiny_vit())
    example = torch.randn(2, 3, 32, 32)
    _, result = shrink_half(model, example[:1], example)
    assert {"hidden_dim", "class_token", "encoder.pos_embedding"} <= set(result.channel_config)
    rebuilt = resize_like(tiny_vit(), result.channel_config)
    rebuilt.load_state_dict(result.model.state_dict())
    assert rebuilt.hidden_dim == 8
    assert torch.equal(run(rebuilt, example), run(result.model, example))


def test_vit_b_32_two_blocks_loses_half_its_embedding_width():
    model = randomize(torchvision.models.vit_b_32(num_classes=10))
    model.encoder.layers = model.encoder.layers[:2]  # two blocks keep the test fast
    _, result = shrink_half(model, torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224))
    assert result.unsupported == []
    assert result.model.hidden_dim == 384 and result.model.encoder.pos_embedding.shape[-1] == 384
    # Measured 16.58M -> 4.75M parameters, 3.49x (1.75x with heads and MLP units only).
    assert result.compression > 3.3


@pytest.mark.slow
def test_vit_b_16_shrinks_its_embedding_width():
    model = randomize(torchvision.models.vit_b_16())
    _, result = shrink_half(model, torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224))
    assert result.unsupported == [] and result.model.hidden_dim == 384
    assert result.compression > 3.8  # measured 86.57M -> 22.05M, 3.93x (1.96x before)


# -- MaxViT relative attention ---------------------------------------------------------------


class Partitioned(nn.Module):
    """(B, G, P, C) tokens through MaxViT's relative attention, with a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        self.attn = RelativePositionalMultiHeadAttention(16, 4, 4)  # 4 heads, 2x2 partitions
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attn(x)
        return self.head(x.mean((1, 2)))


def test_maxvit_relative_attention_heads_are_removed_whole():
    model = randomize(Partitioned())
    analysis, result = shrink_half(model, torch.randn(1, 3, 4, 3), torch.randn(2, 6, 4, 3))
    heads = groups_by_producers(analysis)[("attn.to_qkv.weight",)]
    assert heads.size == 4 and len(heads.removable) == 4
    # A head: its q, k and v rows, its merge columns.
    assert heads.channels[1].producers["attn.to_qkv.weight"] == (4, 5, 6, 7, 20, 21, 22, 23,
                                                                 36, 37, 38, 39)  # fmt: skip
    assert heads.channels[1].consumers == {"attn.merge.weight": (4, 5, 6, 7)}
    assert result.unsupported == []
    attn = result.model.attn
    assert isinstance(attn, PrunedRelativePositionalMultiHeadAttention)
    assert isinstance(attn, RelativePositionalMultiHeadAttention)  # same state dict names
    assert attn.n_heads == 2 and attn.relative_position_bias_table.shape == (9, 2)
    assert (attn.to_qkv.in_features, attn.to_qkv.out_features) == (8, 24)
    assert (attn.merge.in_features, attn.merge.out_features) == (8, 8)


def test_maxvit_attention_reloads_with_resize_like():
    model = randomize(Partitioned())
    example = torch.randn(2, 6, 4, 3)
    _, result = shrink_half(model, example[:1], example)
    rebuilt = resize_like(Partitioned(), result.channel_config)
    rebuilt.load_state_dict(result.model.state_dict())
    assert torch.equal(run(rebuilt, example), run(result.model, example))


def tiny_maxvit() -> MaxVit:
    return MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                  block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0,
                  num_classes=5)  # fmt: skip


def test_tiny_maxvit_streams_heads_and_mlp_units_shrink():
    model = randomize(tiny_maxvit())
    analysis, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert sum(site.kind == "maxvit" for site in analysis.attention) == 4
    assert result.unsupported == []
    window = result.model.blocks[1].layers[0].layers.window_attention
    assert window.attn_layer[1].n_heads == 4 and window.mlp_layer[1].out_features == 64
    assert window.attn_layer[0].weight.shape == (16,)  # the stage's stream: 32 -> 16
    assert result.compression > 3.4  # measured 48004 -> 13202 parameters (3.64x)


@pytest.mark.slow
def test_maxvit_t_shrinks_heads_mlp_units_and_streams():
    model = randomize(torchvision.models.maxvit_t())
    _, result = shrink_half(model, torch.randn(1, 3, 224, 224), torch.randn(1, 3, 224, 224))
    assert result.unsupported == []
    assert result.compression > 3.8  # measured 30.92M -> 7.92M, 3.90x (1.65x before)


def test_vit_inside_a_wrapper_follows_its_own_hidden_dim():
    model = randomize(nn.Sequential(tiny_vit(), nn.Identity()))
    analysis, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert [site.name for site in analysis.stream] == [
        "0.hidden_dim",
        "0.class_token",
        "0.encoder.pos_embedding",
    ]
    assert result.model[0].hidden_dim == 8 and result.unsupported == []


@pytest.mark.parametrize("strategy", ["GlobalChannelNorm", "ChannelTaylor"])
def test_channel_strategies_shrink_the_vit_stream(strategy):
    import shrinkbench_strategies.channel as channel

    from shrinkbench_core.config import PrunableRule

    model = randomize(tiny_vit())
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))) for _ in range(2)]
    chosen = getattr(channel, strategy)(
        model, 2, params={"uniform": True}, rule=PrunableRule(include=("*.in_proj_weight",)),
        classifier="heads.head", input_shape=(3, 32, 32), calibration=data,
    )  # fmt: skip
    masks = chosen.compute_masks()
    result = shrink_model(model, masks, torch.randn(1, 3, 32, 32))
    assert result.unsupported == []
    assert result.model.hidden_dim < 16
    assert result.model.class_token.shape[-1] == result.model.hidden_dim


@pytest.mark.parametrize("build", [tiny_vit, tiny_maxvit], ids=["vit", "maxvit"])
def test_shrunk_vit_and_maxvit_run_in_onnxruntime_with_torch_outputs(build):
    pytest.importorskip("onnx")
    from test_structured_onnx import onnx_outputs

    model = randomize(build())
    _, result = shrink_half(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32))
    batch = torch.randn(2, 3, 32, 32)
    expected = run(result.model, batch)
    torch.testing.assert_close(onnx_outputs(result.model, batch), expected, rtol=1e-4, atol=1e-5)

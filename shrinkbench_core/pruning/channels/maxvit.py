"""MaxViT's relative attention with heads removed (torchvision's
``RelativePositionalMultiHeadAttention``).

The module is traced as a leaf, like Swin's window attention: its ``to_qkv`` rows
of one head (query, key and value) are one tied channel, its ``merge`` columns of
that head the consumers. torchvision's forward reshapes its output to the input's
width, so a module whose heads were partly removed (or whose input lost channels)
needs its own forward: :class:`PrunedRelativePositionalMultiHeadAttention` keeps
every attribute and parameter name (state dicts and masks still fit), including
the score scale ``feat_dim ** -0.5`` fixed at construction, and takes the inner
width from ``n_heads * head_dim``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention

from shrinkbench_core.pruning.channels.graph import Channels

if TYPE_CHECKING:
    from shrinkbench_core.pruning.channels.attention import AttentionSite
    from shrinkbench_core.pruning.channels.rules import _Propagator

__all__ = ["PrunedRelativePositionalMultiHeadAttention", "resize_like", "shrink_site", "visit"]


def visit(prop: _Propagator, node: torch.fx.Node, module: nn.Module, x: Any) -> Any:
    """Follow the heads of a MaxViT attention on ``(B, G, P, D)`` tokens (channel-last)."""
    from shrinkbench_core.pruning.channels.attention import AttentionSite, _heads

    name = str(node.target)
    width, inner, heads = module.to_qkv.in_features, module.merge.in_features, module.n_heads
    inputs = prop.last_dim_inputs(node, x, width, type(module).__name__)
    qkv = prop.layer(f"{name}.to_qkv", module.to_qkv, "linear", 3 * inner)
    prop.record_inputs(qkv, inputs)
    site = AttentionSite(name, "maxvit", _heads(prop, qkv.rows, inner, heads))
    prop.analysis.attention.append(site)
    merge = prop.layer(f"{name}.merge", module.merge, "linear", module.merge.out_features)
    prop.record_inputs(merge, [frozenset({qkv.rows[2 * inner + i]}) for i in range(inner)])
    rank = len(node.meta["tensor_meta"].shape)
    return prop.same_channels(
        node, Channels((frozenset({e}) for e in merge.rows), rank - 1), "attention output"
    )


def relative_attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Multi-head self-attention with a learned relative position bias within each of the
    ``G`` partitions of ``x`` (B, G, P, D); the inner width is ``n_heads * head_dim``."""
    batch, partitions, tokens, _ = x.shape
    heads, head_width = module.n_heads, module.head_dim
    split = module.to_qkv(x).reshape(batch, partitions, tokens, 3, heads, head_width)
    q, k, v = split.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, G, H, P, head_width)
    scores = q @ (k * module.scale_factor).transpose(-2, -1)
    weights = F.softmax(scores + module.get_relative_positional_bias(), dim=-1)
    out = (weights @ v).permute(0, 1, 3, 2, 4).reshape(batch, partitions, tokens, -1)
    return module.merge(out)


class PrunedRelativePositionalMultiHeadAttention(RelativePositionalMultiHeadAttention):
    """``RelativePositionalMultiHeadAttention`` whose inner width (heads x head width) and
    input width may differ from the width it was built with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relative_attention(self, x)


def _keep_heads(module: nn.Module, kept: list[int]) -> None:
    index = torch.tensor(kept, dtype=torch.long)
    module.n_heads = len(kept)
    table = module.relative_position_bias_table
    module.relative_position_bias_table = nn.Parameter(
        table.detach()[:, index.to(table.device)].contiguous(), requires_grad=table.requires_grad
    )
    module.__class__ = PrunedRelativePositionalMultiHeadAttention


def shrink_site(model: nn.Module, site: AttentionSite, kept: list[int]) -> dict[str, Any] | None:
    """After ``to_qkv`` and ``merge`` were resized: keep heads ``kept`` (``n_heads``, bias table
    columns) and give the module the forward that takes its widths from its layers. Returns
    its ``channel_config`` entry, or None when neither its heads nor its input changed."""
    module = model.get_submodule(site.module)
    width = module.to_qkv.in_features
    if len(kept) == module.n_heads and width == module.merge.out_features == module.n_heads * (
        module.head_dim
    ):
        return None
    _keep_heads(module, kept)
    return {"maxvit_heads": len(kept)}


def resize_like(model: nn.Module, name: str, sizes: dict[str, Any]) -> None:
    """:func:`~shrinkbench_core.pruning.shrink.resize_like` for a MaxViT attention (its
    ``to_qkv`` and ``merge`` have entries of their own)."""
    module = model.get_submodule(name)
    _keep_heads(module, list(range(sizes["maxvit_heads"])))

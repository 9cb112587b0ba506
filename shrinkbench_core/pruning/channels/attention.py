"""Attention heads as tied channels: ``nn.MultiheadAttention`` and torchvision's Swin
window attention (MaxViT's relative attention: :mod:`.maxvit`).

A head is one tied channel: its query, key and value rows of the input projection
are its producers, its columns of the output projection its consumers. Masking a
head's q/k/v rows makes its values zero, so the head contributes exactly zero
whatever its attention weights are, and removing it gives the same outputs.

* ``nn.MultiheadAttention`` (self-attention, as in torchvision's ViT): a shrunk
  one cannot keep its class (its inner width must equal the embedding width), so
  it is replaced by :class:`PrunedMultiheadAttention`, which has the same call
  signature, parameter names and outputs.
* torchvision's ``ShiftedWindowAttention`` / ``ShiftedWindowAttentionV2`` (Swin):
  traced as a leaf; its ``qkv`` and ``proj`` Linear layers are resized like any
  other, then ``num_heads`` and the per-head tables (relative position bias,
  logit scale, continuous position bias MLP output) are sliced.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from shrinkbench_core.pruning.channels.graph import Channels

if TYPE_CHECKING:
    from shrinkbench_core.pruning.channels.rules import _Propagator

__all__ = ["AttentionSite", "PrunedMultiheadAttention", "is_attention", "leaf_types"]


@dataclass
class AttentionSite:
    """An attention module followed per head: ``heads[h]`` is an element of head ``h``."""

    module: str
    kind: str  # "mha" or "swin"
    heads: list[int]


def attention_types() -> tuple[type[nn.Module], ...]:
    """Attention modules traced as leaves (their forward is not traced into)."""
    try:
        from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
        from torchvision.models.swin_transformer import (
            ShiftedWindowAttention,
            ShiftedWindowAttentionV2,
        )
    except ImportError:  # torchvision is optional for the core
        return ()
    return (ShiftedWindowAttention, ShiftedWindowAttentionV2, RelativePositionalMultiHeadAttention)


def leaf_types() -> tuple[type[nn.Module], ...]:
    """Modules traced as leaves: attention, and ConvNeXt's LayerNorm2d (one norm over dim 1)."""
    try:
        from torchvision.models.convnext import LayerNorm2d
    except ImportError:
        return attention_types()
    return (*attention_types(), LayerNorm2d)


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, (nn.MultiheadAttention, PrunedMultiheadAttention, *attention_types()))


class LeafTracer(torch.fx.Tracer):
    """The default fx tracer, with the attention modules of :func:`leaf_types` as leaves."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, leaf_types()) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace`` with attention modules kept whole."""
    graph = LeafTracer().trace(model)
    name = model.__class__.__name__
    return torch.fx.GraphModule(model, graph, name)


# -- propagation -------------------------------------------------------------------------


def visit(prop: _Propagator, node: torch.fx.Node, module: nn.Module, x: Channels | None) -> Any:
    """Follow the heads of an attention module; returns the channels of its output."""
    if isinstance(module, nn.MultiheadAttention):
        return _visit_mha(prop, node, module, x)
    if isinstance(module, PrunedMultiheadAttention):
        return prop.barrier(node, "attention already shrunk")
    from shrinkbench_core.pruning.channels import maxvit  # needs torchvision, as these do

    if isinstance(module, maxvit.RelativePositionalMultiHeadAttention):
        return maxvit.visit(prop, node, module, x)
    return _visit_swin(prop, node, module, x)


def _heads(prop: _Propagator, rows: list[int], width: int, heads: int) -> list[int]:
    """Tie the q, k and v rows of each head (rows: 3 x width, heads contiguous)."""
    size = width // heads
    firsts = []
    for head in range(heads):
        members = [
            rows[part * width + head * size + i] for part in range(3) for i in range(size)
        ]
        for member in members[1:]:
            prop.analysis.union(members[0], member)
        firsts.append(members[0])
    return firsts


def _visit_mha(
    prop: _Propagator, node: torch.fx.Node, module: nn.MultiheadAttention, x: Channels | None
) -> Any:
    name = str(node.target)
    args = list(node.args) + [node.kwargs.get(k) for k in ("query", "key", "value")]
    query, key, value = (args + [None, None, None])[:3]
    weights_used = any(
        user.target is operator.getitem and user.args[1] == 1 and user.users
        for user in node.users
    )
    if (
        not (query is key is value)
        or not module._qkv_same_embed_dim
        or module.bias_k is not None
        or weights_used
    ):
        return prop.barrier(
            node, "only self-attention with unused attention weights is followed per head"
        )
    width, heads = module.embed_dim, module.num_heads
    inputs = prop.last_dim_inputs(node, x, width, "MultiheadAttention")
    layer = prop.layer(
        name, module, "mha", 3 * width,
        weight_name=f"{name}.in_proj_weight", bias_name=f"{name}.in_proj_bias",
    )  # fmt: skip
    prop.record_inputs(layer, inputs)
    site = AttentionSite(name, "mha", _heads(prop, layer.rows, width, heads))
    prop.analysis.attention.append(site)
    out = prop.layer(f"{name}.out_proj", module.out_proj, "linear", width)
    prop.record_inputs(out, [frozenset({layer.rows[2 * width + i]}) for i in range(width)])
    rank = len(getattr(node.args[0], "meta", {}).get("tensor_meta").shape)
    return [Channels((frozenset({e}) for e in out.rows), rank - 1), None]


def _visit_swin(prop: _Propagator, node: torch.fx.Node, module: nn.Module, x: Any) -> Any:
    name = str(node.target)
    width, heads = module.proj.in_features, module.num_heads
    inputs = prop.last_dim_inputs(node, x, width, type(module).__name__)
    qkv = prop.layer(f"{name}.qkv", module.qkv, "linear", 3 * width)
    prop.record_inputs(qkv, inputs)
    site = AttentionSite(name, "swin", _heads(prop, qkv.rows, width, heads))
    prop.analysis.attention.append(site)
    proj = prop.layer(f"{name}.proj", module.proj, "linear", module.proj.out_features)
    prop.record_inputs(proj, [frozenset({qkv.rows[2 * width + i]}) for i in range(width)])
    rank = len(node.meta["tensor_meta"].shape)
    return prop.same_channels(
        node, Channels((frozenset({e}) for e in proj.rows), rank - 1), "attention output"
    )


# -- shrinking ---------------------------------------------------------------------------


class PrunedMultiheadAttention(nn.Module):
    """Self-attention of ``nn.MultiheadAttention`` whose heads were partly removed.

    Same call signature and parameter names (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``) as the module it replaces; its inner width ``num_heads * head_dim``
    may be smaller than the embedding width. Attention weights are not returned
    (the second output is None); the analysis only shrinks modules whose weights
    are unused.
    """

    def __init__(self, source: nn.MultiheadAttention, rows: list[int], columns: list[int]):
        super().__init__()
        self.head_dim = source.head_dim
        self.num_heads = len(rows) // (3 * self.head_dim)
        self.batch_first = source.batch_first
        self.dropout = source.dropout
        index, cols = torch.tensor(rows), torch.tensor(columns)
        weight = source.in_proj_weight.detach()
        picked = weight[index.to(weight.device)][:, cols.to(weight.device)]
        self.in_proj_weight = nn.Parameter(picked)
        bias = source.in_proj_bias
        self.in_proj_bias = (
            nn.Parameter(bias.detach()[index.to(bias.device)]) if bias is not None else None
        )
        self.out_proj = source.out_proj

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, _ = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (
            t.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for t in (q, k, v)
        )
        mask = _attention_mask(attn_mask, key_padding_mask, q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )  # fmt: skip
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _attention_mask(
    attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """One additive float mask from ``nn.MultiheadAttention``'s two (True = not attended)."""
    masks = []
    for mask, shape in ((attn_mask, None), (key_padding_mask, "padding")):
        if mask is None:
            continue
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                mask, float("-inf")
            )
        if shape == "padding":
            mask = mask[:, None, None, :]
        masks.append(mask)
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else masks[0] + masks[1]


def resize_mha(model: nn.Module, name: str, rows: list[int], columns: list[int]) -> None:
    """Replace ``nn.MultiheadAttention`` ``name`` by a :class:`PrunedMultiheadAttention`."""
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, PrunedMultiheadAttention(model.get_submodule(name), rows, columns))


def resize_heads(model: nn.Module, site: AttentionSite, kept: list[int]) -> None:
    """Per-head state of a Swin window attention after its q/k/v/proj were resized."""
    module = model.get_submodule(site.module)
    if site.kind != "swin" or len(kept) == module.num_heads:
        return
    from shrinkbench_core.pruning.channels.swin import pruned_class

    index = torch.tensor(kept)
    module.num_heads = len(kept)
    module.__class__ = pruned_class(module) or type(module)
    table = getattr(module, "relative_position_bias_table", None)
    if isinstance(table, nn.Parameter):
        module.relative_position_bias_table = nn.Parameter(table.detach()[:, index].contiguous())
    scale = getattr(module, "logit_scale", None)
    if isinstance(scale, nn.Parameter):
        module.logit_scale = nn.Parameter(scale.detach()[index].contiguous())
    mlp = getattr(module, "cpb_mlp", None)
    if mlp is not None:
        last = mlp[-1]
        last.weight = nn.Parameter(last.weight.detach()[index].contiguous())
        if last.bias is not None:
            last.bias = nn.Parameter(last.bias.detach()[index].contiguous())
        last.out_features = len(kept)

"""A ViT's embedding width as one tied group: parameters on the token stream and the width
attribute of a hard-coded reshape.

torchvision's ``VisionTransformer`` builds its residual stream from the patch
embedding (``conv_proj``, flattened with ``reshape(n, self.hidden_dim, -1)``), a
class token concatenated in front of the tokens and a position embedding added to
them. Two rules make that stream followable:

* a *stream parameter* (:class:`StreamParameter`): an ``nn.Parameter`` whose last
  dimension has one entry per channel of a channel-last tensor, added to it or
  concatenated with it along another dimension (class token, position embedding).
  Entry ``i`` of its last dimension belongs to channel ``i``: it is masked when the
  channel goes (so a removed channel stays exactly zero in the masked model) and
  sliced away when the model shrinks;
* a *width attribute* (:class:`WidthAttribute`): a reshape whose hard-coded channel
  size is the ``hidden_dim`` of the ``VisionTransformer`` running it. The size then
  follows the channels: the shrunk model's ``hidden_dim`` is set to the kept count,
  so its own forward reshapes to the new width.

Together with the padded LayerNorms (:mod:`.norms`), heads (:mod:`.attention`)
and Linear rules, every channel of the stream (conv_proj rows, class token and
position embedding entries, LayerNorm entries, attention in-projection columns and
out-projection rows, MLP columns and rows, classifier columns) is one tied channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch import nn

from shrinkbench_core.pruning.channels.graph import Channels, Position
from shrinkbench_core.pruning.masks import Masks

if TYPE_CHECKING:
    from shrinkbench_core.pruning.channels.graph import ChannelAnalysis
    from shrinkbench_core.pruning.channels.rules import _Propagator
    from shrinkbench_core.pruning.shrink import LayerChange

__all__ = ["StreamParameter", "WidthAttribute", "resize_like", "shrink_stream"]


@dataclass
class StreamParameter:
    """A parameter whose last dimension holds one entry per channel at ``positions``."""

    name: str
    positions: list[Position]

    def complete(
        self,
        analysis: ChannelAnalysis,
        model: nn.Module,
        masks: Masks,
        pruned: set[int],
        removed: set[int],
    ) -> None:
        """Mask (in ``masks``) the entries of removed channels and of channels that sum only
        masked rows, so that those channels stay exactly zero in the masked model."""
        gone = [
            i for i, position in enumerate(self.positions)
            if analysis.root_of(position) in removed or analysis._is_zero(position, pruned)
        ]  # fmt: skip
        if not gone:
            return
        mask = masks.get(self.name)
        if mask is None:
            parameter = model.get_parameter(self.name)
            mask = masks[self.name] = torch.ones_like(parameter, dtype=torch.bool)
        mask[..., torch.tensor(gone, device=mask.device)] = False


@dataclass
class WidthAttribute:
    """An integer attribute of module ``module`` ("" for the model) that counts the channels
    at ``positions`` (``VisionTransformer.hidden_dim``)."""

    module: str
    attribute: str
    positions: list[Position]

    def complete(self, *args: Any) -> None:
        """Nothing to mask: the attribute has no weights."""

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}" if self.module else self.attribute


# -- propagation -------------------------------------------------------------------------


def _parameter(prop: _Propagator, value: Any) -> tuple[str, nn.Parameter] | None:
    """``(name, parameter)`` when ``value`` is a parameter read in forward, possibly expanded
    (``p.expand(n, -1, -1)``, which only repeats it along dimensions of size 1)."""
    if not isinstance(value, torch.fx.Node):
        return None
    if value.op == "call_method" and value.target == "expand":
        value = value.args[0]
    if not isinstance(value, torch.fx.Node) or value.op != "get_attr":
        return None
    owner, _, attribute = str(value.target).rpartition(".")
    module = prop.graph_module.get_submodule(owner) if owner else prop.graph_module
    parameter = getattr(module, attribute, None)
    return (str(value.target), parameter) if isinstance(parameter, nn.Parameter) else None


def _record(prop: _Propagator, name: str, positions: Channels) -> None:
    sites = [s for s in prop.analysis.stream if isinstance(s, StreamParameter) and s.name == name]
    if not sites:
        prop.analysis.stream.append(StreamParameter(name, list(positions)))
        return
    site = sites[0]  # used twice: the channels it meets are tied
    for index, (old, new) in enumerate(zip(site.positions, positions, strict=True)):
        prop.analysis.union(next(iter(old)), next(iter(new)))
        site.positions[index] = old | new


def visit_stream_parameter(prop: _Propagator, node: torch.fx.Node, key: Any) -> Any:
    """Channels of ``x + p``, ``x - p`` or ``cat([p, x], dim)`` (``dim`` not the channels)
    with ``p`` a stream parameter of ``x``'s channel-last width; None when it is not that."""
    from shrinkbench_core.pruning.channels.rules import _CAT_OPS, _shape

    shape = _shape(node)
    if shape is None:
        return None
    if key in _CAT_OPS:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
            return None
    else:
        tensors = list(prop.operands(node))
        dim = None
    parameters = [_parameter(prop, t) for t in tensors]
    maps = [prop.channels(t) if p is None else None for t, p in zip(tensors, parameters,
                                                                   strict=True)]  # fmt: skip
    followed = [m for m in maps if m is not None]
    if not any(parameters) or len(followed) + sum(map(bool, parameters)) != len(tensors):
        return None
    width, last = len(followed[0]), len(shape) - 1
    if any(m.dim != last or len(m) != width for m in followed):
        return None
    if dim is not None and dim % len(shape) == last:
        return None
    if dim is None and any(_shape(t) != shape for t, p in zip(tensors, parameters, strict=True)
                           if p is None):  # fmt: skip
        return None  # the parameter must not broadcast the tensor to a larger shape
    for found in parameters:
        if found is not None and (found[1].dim() > len(shape) or found[1].shape[-1] != width):
            return None
    merged = followed[0]
    for other in followed[1:]:
        merged = prop.tie(node, merged, other, "stream changes channels")
    for found in parameters:
        if found is not None:
            _record(prop, found[0], merged)
    return prop.same_channels(node, Channels(merged, last), "stream parameter changes channels")


def is_vision_transformer(module: nn.Module | None) -> bool:
    """torchvision's ``VisionTransformer`` (or a subclass)."""
    try:
        from torchvision.models.vision_transformer import VisionTransformer
    except ImportError:
        return False
    return isinstance(module, VisionTransformer)


def width_attribute(prop: _Propagator, node: torch.fx.Node, size: int, positions: Any) -> bool:
    """Whether a reshape's hard-coded channel size ``size`` is the ``hidden_dim`` of the
    ``VisionTransformer`` whose forward runs it; if so the attribute follows the channels."""
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    root = getattr(prop, "root", None)
    if root is None:
        return False
    try:
        module = root.get_submodule(owner) if owner else root
    except AttributeError:
        return False
    if not is_vision_transformer(module) or not module.hidden_dim == size == len(positions):
        return False
    for site in prop.analysis.stream:
        if isinstance(site, WidthAttribute) and site.module == owner:
            for old, new in zip(site.positions, positions, strict=True):
                prop.analysis.union(next(iter(old)), next(iter(new)))
            return True
    prop.analysis.stream.append(WidthAttribute(owner, "hidden_dim", list(positions)))
    return True


# -- shrinking ---------------------------------------------------------------------------


def shrink_stream(
    model: nn.Module, analysis: ChannelAnalysis, removed: set[int], masks: Masks
) -> tuple[list[LayerChange], dict[str, dict[str, Any]]]:
    """Slice every stream parameter and set every width attribute of the shrunk ``model``
    to the kept channels; slices their ``masks`` too. Returns the changes and their
    ``channel_config`` entries (for :func:`resize_like`)."""
    from shrinkbench_core.pruning.shrink import LayerChange

    changes, config = [], {}
    for site in analysis.stream:
        keep = [i for i, p in enumerate(site.positions) if analysis.root_of(p) not in removed]
        width = len(site.positions)
        if len(keep) == width:
            continue
        owner_name, _, attribute = site.name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if isinstance(site, WidthAttribute):
            setattr(owner, attribute, len(keep))
            config[site.name] = {"width": len(keep)}
            changes.append(LayerChange(site.name, "width", width, len(keep), width, len(keep)))
            continue
        index = torch.tensor(keep, dtype=torch.long)
        old = getattr(owner, attribute)
        sliced = old.detach().index_select(-1, index.to(old.device)).contiguous()
        setattr(owner, attribute, nn.Parameter(sliced, requires_grad=old.requires_grad))
        if site.name in masks:
            mask = masks[site.name]
            masks[site.name] = mask.index_select(-1, index.to(mask.device))
        config[site.name] = {"stream": len(keep)}
        changes.append(LayerChange(site.name, "embed", width, len(keep), width, len(keep)))
    return changes, config


def resize_like(model: nn.Module, name: str, sizes: dict[str, Any]) -> None:
    """:func:`~shrinkbench_core.pruning.shrink.resize_like` for a stream parameter (zeros of
    the new last-dimension size) or a width attribute."""
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if "width" in sizes:
        setattr(owner, attribute, sizes["width"])
        return
    old = getattr(owner, attribute)
    fresh = old.detach().new_zeros(*old.shape[:-1], sizes["stream"])
    setattr(owner, attribute, nn.Parameter(fresh, requires_grad=old.requires_grad))

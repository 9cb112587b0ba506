"""Propagation rules: how each operation of a traced graph moves, ties or pins channels."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from shrinkbench_core.pruning.channels.graph import (
    ChannelAnalysis,
    ChannelMap,
    PadSite,
    Position,
    TracedLayer,
    _arg,
    _is_depthwise,
)

# -- propagation rules ---------------------------------------------------------------

_PRESERVING_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Hardswish, nn.SiLU, nn.GELU, nn.Tanh,
    nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
)  # fmt: skip
"""Modules that act on each channel separately and map a zero channel to zero."""

_PRESERVING_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.hardtanh, F.hardswish,
    F.silu, F.gelu, F.elu, F.selu, F.celu, F.mish, F.softsign, torch.tanh, F.tanh,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.interpolate, torch.clone, operator.neg, torch.neg,
}  # fmt: skip
_PRESERVING_METHODS = {
    "relu", "relu_", "tanh", "tanh_", "neg", "contiguous", "clone", "detach", "float", "double",
    "half", "bfloat16", "to", "type_as", "cpu", "cuda",
}  # fmt: skip
_SUM_OPS: set[Any] = {
    operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub,
    "add", "add_", "sub", "sub_",
}  # fmt: skip
_MUL_OPS: set[Any] = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV_OPS: set[Any] = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
_CAT_OPS: set[Any] = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE_OPS: set[Any] = {torch.reshape, "view", "reshape"}
_REDUCE_OPS: set[Any] = {torch.mean, torch.sum, torch.amax, torch.amin,
                         "mean", "sum", "amax", "amin"}  # fmt: skip
_SHAPE_QUERIES: set[Any] = {getattr, "size", "dim", "numel"}


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _positions(value: Any) -> Iterator[Position]:
    """Every tensor channel held by a propagated value (maps, lists of maps)."""
    if isinstance(value, tuple):
        yield from value
    elif isinstance(value, list):
        for item in value:
            yield from _positions(item)


class _Propagator:
    """Walks an fx graph once, building a :class:`ChannelAnalysis`."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        self.graph_module = graph_module
        self.analysis = ChannelAnalysis()
        self.maps: dict[torch.fx.Node, Any] = {}

    def run(self) -> ChannelAnalysis:
        for node in self.graph_module.graph.nodes:
            self.maps[node] = self.visit(node)
        return self.analysis

    # -- helpers ---------------------------------------------------------------------

    def fresh(self, channels: int, entry: int | None) -> ChannelMap:
        """``channels`` new pinned channels."""
        return tuple(frozenset({self.analysis.new_source(entry)}) for _ in range(channels))

    def sources(self, meta: Any, entry: int | None) -> Any:
        """Fresh pinned channels for a tensor (or tuple of tensors) described by ``meta``."""
        if isinstance(meta, TensorMetadata):
            return self.fresh(meta.shape[1], entry) if len(meta.shape) >= 2 else None
        if isinstance(meta, (tuple, list)):
            return [self.sources(item, entry) for item in meta]
        return None

    def barrier(self, node: torch.fx.Node, reason: str) -> Any:
        """Keep every channel that flows into ``node``; its outputs are new pinned channels."""
        entry = self.analysis.add_entry(node.name, _describe(node, self.graph_module), reason)
        for source in node.all_input_nodes:
            for position in _positions(self.maps.get(source)):
                self.analysis.pin(position, entry)
        return self.sources(node.meta.get("tensor_meta"), entry)

    def channels(self, value: Any) -> ChannelMap | None:
        """The channel map of an argument, or None when it is no tensor with channels."""
        if isinstance(value, torch.fx.Node):
            mapped = self.maps.get(value)
            return mapped if isinstance(mapped, tuple) else None
        return None

    def same_channels(self, node: torch.fx.Node, positions: ChannelMap, reason: str) -> Any:
        """``positions`` for the output if its channel count matches, else a barrier."""
        shape = _shape(node)
        if shape is None or len(shape) < 2 or shape[1] != len(positions):
            return self.barrier(node, reason)
        return positions

    def record_inputs(self, layer: TracedLayer, positions: ChannelMap) -> None:
        """Input channels of a layer; a layer called twice ties its two inputs."""
        if layer.inputs is None:
            layer.inputs = list(positions)
            return
        for index, (old, new) in enumerate(zip(layer.inputs, positions, strict=True)):
            self.analysis.union(next(iter(old)), next(iter(new)))
            layer.inputs[index] = old | new

    def layer(self, name: str, module: nn.Module, kind: str, rows: int) -> TracedLayer:
        if name not in self.analysis.layers:
            layer = TracedLayer(name, module, kind)
            layer.rows = [self.analysis.new_producer(name) for _ in range(rows)]
            self.analysis.layers[name] = layer
        return self.analysis.layers[name]

    # -- dispatch ----------------------------------------------------------------------

    def visit(self, node: torch.fx.Node) -> Any:
        if node.op == "placeholder":
            return self.sources(node.meta.get("tensor_meta"), None)
        if node.op == "output":
            for source in node.all_input_nodes:
                for position in _positions(self.maps.get(source)):
                    self.analysis.pin(position, None)
            return None
        if node.op == "get_attr":
            entry = self.analysis.add_entry(
                node.name, f"get_attr {node.target}", "tensor attribute used directly in forward"
            )
            return self.sources(node.meta.get("tensor_meta"), entry)
        if node.op == "call_module":
            return self.visit_module(node, self.graph_module.get_submodule(str(node.target)))
        key = node.target if node.op == "call_function" else str(node.target)
        return self.visit_function(node, key)

    def visit_module(self, node: torch.fx.Node, module: nn.Module) -> Any:
        x = self.channels(node.args[0]) if node.args else None
        name = str(node.target)
        if x is None:
            return self.barrier(node, "input has no channel dimension")
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            if len(x) != module.in_channels:
                return self.barrier(node, "input channels do not match in_channels")
            layer = self.layer(name, module, "conv", module.out_channels)
            self.record_inputs(layer, x)
            if _is_depthwise(module):
                multiplier = module.out_channels // module.in_channels
                for row, element in enumerate(layer.rows):
                    self.analysis.union(element, next(iter(x[row // multiplier])))
            return tuple(frozenset({element}) for element in layer.rows)
        if isinstance(module, nn.Linear):
            shape = _shape(node.args[0])
            if shape is None or len(shape) != 2 or len(x) != module.in_features:
                return self.barrier(node, "Linear on an input that is not (batch, features)")
            layer = self.layer(name, module, "linear", module.out_features)
            self.record_inputs(layer, x)
            return tuple(frozenset({element}) for element in layer.rows)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not module.affine or len(x) != module.num_features:
                return self.barrier(
                    node, "BatchNorm without affine parameters cannot output zero channels"
                )
            self.record_inputs(self.layer(name, module, "norm", 0), x)
            return x
        if isinstance(module, nn.Hardtanh) and not module.min_val <= 0 <= module.max_val:
            return self.barrier(node, "Hardtanh whose range excludes zero")
        if isinstance(module, _PRESERVING_MODULES):
            return self.same_channels(node, x, "output channels differ from input channels")
        if isinstance(module, nn.Flatten):
            return self.flatten(node, x, module.start_dim, module.end_dim)
        return self.barrier(node, f"{type(module).__name__} is not known to keep channels apart")

    def visit_function(self, node: torch.fx.Node, key: Any) -> Any:
        args = node.args
        if key in _SHAPE_QUERIES:
            return None
        if key is operator.getitem:
            return self.getitem(node)
        if key in _CAT_OPS:
            return self.cat(node)
        if key in _SUM_OPS:
            return self.sum_like(node)
        if key in _MUL_OPS:
            return self.multiply(node)
        x = self.channels(args[0]) if args else None
        if x is None:
            return self.barrier(node, "operation on tensors without a channel dimension")
        if key is F.hardtanh and not _arg(node, 1, "min_val", -1.0) <= 0 <= _arg(
            node, 2, "max_val", 1.0
        ):
            return self.barrier(node, "hardtanh whose range excludes zero")
        if key in _PRESERVING_FUNCTIONS or key in _PRESERVING_METHODS or _is_stochastic_depth(key):
            return self.same_channels(node, x, "output channels differ from input channels")
        if key in _DIV_OPS:
            if len(args) > 1 and isinstance(args[1], (int, float)) and args[1] != 0:
                return self.same_channels(node, x, "division changes channels")
            return self.barrier(node, "division by a tensor")
        if key in (torch.flatten, "flatten"):
            start = _arg(node, 1, "start_dim", 0)
            return self.flatten(node, x, start, _arg(node, 2, "end_dim", -1))
        if key in _RESHAPE_OPS:
            return self.reshape(node, x)
        if key is F.pad:
            return self.pad(node, x)
        if key in _REDUCE_OPS:
            return self.reduce(node, x)
        return self.barrier(node, "operation is not known to keep channels apart")

    # -- rules ---------------------------------------------------------------------------

    def operands(self, node: torch.fx.Node) -> tuple[Any, Any]:
        """The two operands of a binary operation."""
        first = node.args[0] if node.args else node.kwargs.get("input")
        second = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        return first, second

    def sum_like(self, node: torch.fx.Node) -> Any:
        a, b = self.operands(node)
        ma, mb = self.channels(a), self.channels(b)
        if ma is None and mb is not None and isinstance(a, (int, float)):
            a, b, ma, mb = b, a, mb, ma
        if ma is not None and mb is not None:
            sa, sb = _shape(a), _shape(b)
            if sa is None or sb is None or len(sa) != len(sb) or len(ma) != len(mb):
                return self.barrier(node, "addition that broadcasts across channels")
            for pa, pb in zip(ma, mb, strict=True):
                self.analysis.union(next(iter(pa)), next(iter(pb)))
            return self.same_channels(
                node,
                tuple(pa | pb for pa, pb in zip(ma, mb, strict=True)),
                "addition changes channels",
            )
        if ma is not None and isinstance(b, (int, float)) and b == 0:
            return self.same_channels(node, ma, "addition changes channels")
        return self.barrier(
            node, "adding a constant or broadcast tensor makes removed channels non-zero"
        )

    def multiply(self, node: torch.fx.Node) -> Any:
        a, b = self.operands(node)
        ma, mb = self.channels(a), self.channels(b)
        if ma is None and mb is None:
            return self.barrier(node, "product of tensors without a channel dimension")
        same_rank = len(_shape(a) or ()) == len(_shape(b) or ())
        if ma is not None and mb is not None and len(ma) == len(mb) and same_rank:
            for pa, pb in zip(ma, mb, strict=True):
                self.analysis.union(next(iter(pa)), next(iter(pb)))
            merged = tuple(pa | pb for pa, pb in zip(ma, mb, strict=True))
            return self.same_channels(node, merged, "product changes channels")
        if ma is not None and mb is not None:
            # One operand is broadcast over the other's channels (e.g. a gate): keep it whole.
            keep, other = (ma, mb) if len(ma) >= len(mb) else (mb, ma)
            entry = self.analysis.add_entry(
                node.name,
                _describe(node, self.graph_module),
                "product with a tensor broadcast over channels",
            )
            for position in other:
                self.analysis.pin(position, entry)
            return self.same_channels(node, keep, "product changes channels")
        # A product with a scalar or a tensor without channels keeps zero channels zero.
        scaled = ma if ma is not None else mb
        assert scaled is not None
        return self.same_channels(node, scaled, "product changes channels")

    def cat(self, node: torch.fx.Node) -> Any:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        shape = _shape(node)
        if not isinstance(tensors, (list, tuple)) or shape is None:
            return self.barrier(node, "concatenation of unknown tensors")
        maps = [self.channels(t) for t in tensors]
        if any(m is None for m in maps):
            return self.barrier(node, "concatenation of tensors without channels")
        dim = _arg(node, 1, "dim", 0)
        dim = dim + len(shape) if dim < 0 else dim
        if dim == 1:
            return self.same_channels(
                node, tuple(p for m in maps for p in m), "concatenation changes channels"
            )
        if len({len(m) for m in maps}) != 1:
            return self.barrier(node, "concatenation mixing channels")
        merged = []
        for positions in zip(*maps, strict=True):
            for position in positions[1:]:
                self.analysis.union(next(iter(positions[0])), next(iter(position)))
            merged.append(frozenset().union(*positions))
        return self.same_channels(node, tuple(merged), "concatenation changes channels")

    def flatten(self, node: torch.fx.Node, x: ChannelMap, start: int, end: int) -> Any:
        shape = _shape(node.args[0])
        if shape is None:
            return self.barrier(node, "flatten of a tensor of unknown shape")
        rank = len(shape)
        start, end = start % rank, end % rank
        if start >= 2 or start == end:
            return self.same_channels(node, x, "flatten changes channels")
        if start != 1:
            return self.barrier(node, "flatten merging the batch and channel dimensions")
        repeat = math.prod(shape[2 : end + 1])
        return self.same_channels(
            node, tuple(p for p in x for _ in range(repeat)), "flatten changes channels"
        )

    def reshape(self, node: torch.fx.Node, x: ChannelMap) -> Any:
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = list(sizes[0])
        if not sizes:
            sizes = list(node.kwargs.get("shape", ()))
        hard_coded = len(sizes) > 1 and isinstance(sizes[1], int) and sizes[1] != -1
        if in_shape is None or out_shape is None:
            return self.barrier(node, "reshape of a tensor of unknown shape")
        if hard_coded:
            return self.barrier(
                node,
                f"reshape with a hard-coded size {sizes[1]} in dim 1; "
                "write x.flatten(1) or x.view(x.size(0), -1)",
            )
        if out_shape == in_shape:
            return x
        if len(out_shape) == 2 and out_shape[0] == in_shape[0] and len(in_shape) >= 2:
            return self.flatten(node, x, 1, -1)
        return self.barrier(node, "reshape that moves channels")

    def getitem(self, node: torch.fx.Node) -> Any:
        container, index = node.args[0], node.args[1]
        value = self.maps.get(container) if isinstance(container, torch.fx.Node) else None
        if isinstance(value, list) and isinstance(index, int):
            return value[index]
        if not isinstance(value, tuple):
            if isinstance(node.meta.get("tensor_meta"), TensorMetadata) and _shape(node):
                return self.barrier(node, "indexing of a value the analysis does not follow")
            return None
        items = index if isinstance(index, tuple) else (index,)
        if _keeps_channels(items, len(_shape(container) or ())):
            return self.same_channels(node, value, "indexing changes channels")
        return self.barrier(node, "indexing of the channel dimension with constant positions")

    def pad(self, node: torch.fx.Node, x: ChannelMap) -> Any:
        shape = _shape(node.args[0])
        amounts = _arg(node, 1, "pad", ())
        mode = _arg(node, 2, "mode", "constant")
        value = _arg(node, 3, "value", None)
        if shape is None or not all(isinstance(a, int) for a in amounts):
            return self.barrier(node, "pad with amounts computed at run time")
        zero_fill = mode != "constant" or not value
        before = after = 0
        for pair in range(len(amounts) // 2):
            dim = len(shape) - 1 - pair
            low, high = amounts[2 * pair], amounts[2 * pair + 1]
            if not (low or high):
                continue
            if dim == 0 or (dim >= 2 and not zero_fill):
                return self.barrier(node, "pad of the batch dimension or with a non-zero value")
            if dim == 1:
                if mode != "constant" or value or low < 0 or high < 0:
                    return self.barrier(node, "channel pad that is not a zero fill")
                before, after = low, high
        if not (before or after):
            return self.same_channels(node, x, "pad changes channels")
        owner = next(reversed(node.meta.get("nn_module_stack") or {"": None}))
        if not owner:
            entry = self.analysis.add_entry(
                node.name,
                _describe(node, self.graph_module),
                f"pad adds {before}+{after} zero channels in the model's own forward(), whose "
                "amounts cannot be rewritten; channels added to them are kept",
            )
            padded = self.fresh(before, entry) + x + self.fresh(after, entry)
            return self.same_channels(node, padded, "pad changes channels")
        index = sum(site.module == owner for site in self.analysis.pads)
        low = [self.analysis.new_pad_source() for _ in range(before)]
        high = [self.analysis.new_pad_source() for _ in range(after)]
        self.analysis.pads.append(PadSite(owner, index, len(shape) - 2, low, high))
        padded = tuple(frozenset({e}) for e in low) + x + tuple(frozenset({e}) for e in high)
        return self.same_channels(node, padded, "pad changes channels")

    def reduce(self, node: torch.fx.Node, x: ChannelMap) -> Any:
        shape = _shape(node.args[0])
        dims = _arg(node, 1, "dim", None)
        if shape is None or dims is None:
            return self.barrier(node, "reduction over all dimensions")
        dims = [dims] if isinstance(dims, int) else list(dims)
        if not all(isinstance(d, int) for d in dims) or any(d % len(shape) < 2 for d in dims):
            return self.barrier(node, "reduction over the batch or channel dimension")
        return self.same_channels(node, x, "reduction changes channels")


def _is_stochastic_depth(target: Any) -> bool:
    """torchvision's stochastic depth: drops whole examples, so zero channels stay zero."""
    return getattr(target, "__name__", "") == "stochastic_depth" and getattr(
        target, "__module__", ""
    ).startswith("torchvision.")


def _keeps_channels(items: tuple[Any, ...], rank: int) -> bool:
    """Whether tensor indexing ``items`` leaves dims 0 and 1 whole (spatial slicing only)."""
    full = slice(None)
    if any(item is None for item in items):
        return False
    if items and items[0] is Ellipsis:
        return len(items) - 1 <= rank - 2
    leading = items[:2]
    if Ellipsis in items[2:]:
        return False
    return all(isinstance(item, slice) and item == full for item in leading) or (
        len(items) >= 2 and items[0] == full and items[1] is Ellipsis
    )


def _describe(node: torch.fx.Node, graph_module: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(graph_module.get_submodule(str(node.target))).__name__
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))

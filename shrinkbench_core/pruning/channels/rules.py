"""Propagation rules: how each operation of a traced graph moves, ties or pins channels.

Each tensor's channels are followed along one dimension (:class:`Channels`,
``dim``): dim 1 for convolutional maps, the last dimension for channel-last
tensors and token sequences (a Linear layer acts on it). Permutes, transposes,
reshapes, flattens and indexing move that dimension; an operation the rules do
not understand is a *barrier*: every channel flowing into it is pinned.
"""

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

from shrinkbench_core.pruning.channels import attention, norms, vit
from shrinkbench_core.pruning.channels.graph import (
    ChannelAnalysis,
    Channels,
    PadSite,
    Position,
    TracedLayer,
    _arg,
    _is_depthwise,
)

# -- propagation rules ---------------------------------------------------------------

_ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Hardswish, nn.SiLU, nn.GELU, nn.Tanh,
    nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
)  # fmt: skip
"""Modules that act on each element separately and map zero to zero."""

_SPATIAL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
)  # fmt: skip
"""Modules that act on the spatial dimensions (after dim 1) of each channel, zero to zero."""

_GATE_MODULES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus)
"""Per-element modules that map zero to non-zero (squeeze-excite gates)."""

_ELEMENTWISE_FUNCTIONS: set[Any] = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.hardtanh, F.hardswish,
    F.silu, F.gelu, F.elu, F.selu, F.celu, F.mish, F.softsign, torch.tanh, F.tanh,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.clone, operator.neg, torch.neg,
}  # fmt: skip
_SPATIAL_FUNCTIONS: set[Any] = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate,
}  # fmt: skip
_GATE_FUNCTIONS: set[Any] = {
    torch.sigmoid, F.sigmoid, F.hardsigmoid, F.softplus, torch.exp, "sigmoid", "sigmoid_", "exp",
}  # fmt: skip
_ELEMENTWISE_METHODS = {
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
_PERMUTE_OPS: set[Any] = {torch.permute, "permute"}
_TRANSPOSE_OPS: set[Any] = {torch.transpose, torch.swapaxes, "transpose", "swapaxes"}
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

    def __init__(
        self, graph_module: torch.fx.GraphModule, root: nn.Module | None = None
    ) -> None:
        self.graph_module = graph_module
        self.root = root  # the traced model (its attributes, which fx does not copy)
        self.analysis = ChannelAnalysis()
        self.maps: dict[torch.fx.Node, Any] = {}

    def run(self) -> ChannelAnalysis:
        for node in self.graph_module.graph.nodes:
            self.maps[node] = self.visit(node)
        return self.analysis

    # -- helpers ---------------------------------------------------------------------

    def fresh(self, channels: int, entry: int | None, dim: int = 1) -> Channels:
        """``channels`` new pinned channels."""
        return Channels(
            (frozenset({self.analysis.new_source(entry)}) for _ in range(channels)), dim
        )

    def sources(self, meta: Any, entry: int | None) -> Any:
        """Fresh pinned channels for a tensor (or tuple of tensors) described by ``meta``."""
        if isinstance(meta, TensorMetadata):
            return self.fresh(meta.shape[1], entry) if len(meta.shape) >= 2 else None
        if isinstance(meta, (tuple, list)):
            return [self.sources(item, entry) for item in meta]
        return None

    def entry(self, node: torch.fx.Node, reason: str) -> int:
        return self.analysis.add_entry(node.name, _describe(node, self.graph_module), reason)

    def barrier(self, node: torch.fx.Node, reason: str) -> Any:
        """Keep every channel that flows into ``node``; its outputs are new pinned channels."""
        entry = self.entry(node, reason)
        for source in node.all_input_nodes:
            for position in _positions(self.maps.get(source)):
                self.analysis.pin(position, entry)
        return self.sources(node.meta.get("tensor_meta"), entry)

    def renew(self, node: torch.fx.Node, x: Channels, reason: str) -> Any:
        """An operation mixing the channels of ``x`` in place (a norm over channels): pin them,
        the output has as many new pinned channels along the same dimension."""
        entry = self.entry(node, reason)
        for position in x:
            self.analysis.pin(position, entry)
        return self.fresh(len(x), entry, x.dim)

    def taint(self, node: torch.fx.Node, x: Channels) -> Any:
        """Per-channel operation mapping zero to non-zero: channels stay, but are not zero."""
        positions = []
        for position in x:
            element = self.analysis.new_free()
            self.analysis.union(element, next(iter(position)))
            positions.append(position | {element})
        return self.same_channels(node, Channels(positions, x.dim), "output channels differ")

    def channels(self, value: Any) -> Channels | None:
        """The channel map of an argument, or None when it is no tensor with channels."""
        if isinstance(value, torch.fx.Node):
            mapped = self.maps.get(value)
            return mapped if isinstance(mapped, Channels) else None
        return None

    def same_channels(
        self, node: torch.fx.Node, positions: Any, reason: str, dim: int | None = None
    ) -> Any:
        """``positions`` (along ``dim``, default theirs) for the output if its channel count
        matches, else a barrier."""
        dim = getattr(positions, "dim", 1) if dim is None else dim
        shape = _shape(node)
        if shape is None or not 1 <= dim < len(shape) or shape[dim] != len(positions):
            return self.barrier(node, reason)
        return Channels(positions, dim)

    def record_inputs(self, layer: TracedLayer, positions: Any) -> None:
        """Input channels of a layer; a layer called twice ties its two inputs."""
        if layer.inputs is None:
            layer.inputs = list(positions)
            return
        for index, (old, new) in enumerate(zip(layer.inputs, positions, strict=True)):
            self.analysis.union(next(iter(old)), next(iter(new)))
            layer.inputs[index] = old | new

    def layer(
        self, name: str, module: nn.Module, kind: str, rows: int, **names: str
    ) -> TracedLayer:
        if name not in self.analysis.layers:
            layer = TracedLayer(name, module, kind, **names)
            layer.rows = [self.analysis.new_producer(name) for _ in range(rows)]
            self.analysis.layers[name] = layer
        return self.analysis.layers[name]

    def last_dim_inputs(
        self, node: torch.fx.Node, x: Channels | None, features: int, what: str
    ) -> Channels:
        """The channels a layer acting on the last dimension reads: those of ``x`` when it
        follows that dimension, else fresh pinned ones (any followed channels are pinned)."""
        shape = _shape(node.args[0])
        if x is not None and shape is not None and x.dim == len(shape) - 1 and len(x) == features:
            return x
        entry = self.entry(node, f"{what} reads features that are not the followed channels")
        for position in x or ():
            self.analysis.pin(position, entry)
        return self.fresh(features, entry)

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
        if isinstance(module, nn.Linear):
            shape = _shape(node.args[0])
            if shape is None or len(shape) < 2:
                return self.barrier(node, "Linear on an input without a batch dimension")
            inputs = self.last_dim_inputs(node, x, module.in_features, "Linear")
            layer = self.layer(name, module, "linear", module.out_features)
            self.record_inputs(layer, inputs)
            rows = (frozenset({element}) for element in layer.rows)
            return self.same_channels(node, Channels(rows, len(shape) - 1), "Linear output")
        if attention.is_attention(module):
            return attention.visit(self, node, module, x)
        if x is None:
            return self.barrier(node, "input has no channel dimension")
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            if x.dim != 1 or len(x) != module.in_channels:
                return self.barrier(node, "input channels do not match in_channels")
            layer = self.layer(name, module, "conv", module.out_channels)
            self.record_inputs(layer, x)
            if _is_depthwise(module):
                multiplier = module.out_channels // module.in_channels
                for row, element in enumerate(layer.rows):
                    self.analysis.union(element, next(iter(x[row // multiplier])))
            return Channels(frozenset({element}) for element in layer.rows)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not module.affine or x.dim != 1 or len(x) != module.num_features:
                return self.barrier(
                    node, "BatchNorm without affine parameters cannot output zero channels"
                )
            self.record_inputs(self.layer(name, module, "norm", 0), x)
            return x
        if isinstance(module, nn.LayerNorm):
            if norms.is_layer_norm_2d(module):  # normalizes dim 1 of (N, C, H, W)
                return self.layer_norm(node, x, 3 if x.dim == 1 else 0, module)
            return self.layer_norm(node, x, len(module.normalized_shape), module)
        if isinstance(module, nn.Hardtanh) and not module.min_val <= 0 <= module.max_val:
            return self.barrier(node, "Hardtanh whose range excludes zero")
        if isinstance(module, _ELEMENTWISE_MODULES):
            return self.same_channels(node, x, "output channels differ from input channels")
        if isinstance(module, _SPATIAL_MODULES):
            return self.spatial(node, x)
        if isinstance(module, _GATE_MODULES):
            return self.taint(node, x)
        if isinstance(module, nn.Softmax):
            return self.softmax(node, x, module.dim)
        if isinstance(module, nn.Flatten):
            return self.flatten(node, x, module.start_dim, module.end_dim)
        return self.barrier(node, f"{type(module).__name__} is not known to keep channels apart")

    def visit_function(self, node: torch.fx.Node, key: Any) -> Any:
        args = node.args
        source = _size_source(node)
        if source is not None:
            return self.channel_count(node, *source)
        if key in _SHAPE_QUERIES:
            return None
        if key is operator.getitem:
            return self.getitem(node)
        if key in _CAT_OPS or key in _SUM_OPS:  # a ViT's class token, position embedding
            stream = vit.visit_stream_parameter(self, node, key)
            if stream is not None:
                return stream
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
        if key in _ELEMENTWISE_FUNCTIONS or key in _ELEMENTWISE_METHODS:
            return self.same_channels(node, x, "output channels differ from input channels")
        if _is_patch_merging_pad(key):  # 2x2 neighbours side by side: 4 copies of each channel
            return self.same_channels(node, Channels(tuple(x) * 4, x.dim), "patch merging")
        if _is_stochastic_depth(key):
            return self.same_channels(node, x, "output channels differ from input channels")
        if key in _SPATIAL_FUNCTIONS:
            return self.spatial(node, x)
        if key in _GATE_FUNCTIONS:
            return self.taint(node, x)
        if key in (F.softmax, torch.softmax, "softmax"):
            return self.softmax(node, x, _arg(node, 1, "dim", None))
        if key is F.layer_norm:
            return self.layer_norm(node, x, len(_arg(node, 1, "normalized_shape", ())))
        if key in _DIV_OPS:
            if len(args) > 1 and isinstance(args[1], (int, float)) and args[1] != 0:
                return self.same_channels(node, x, "division changes channels")
            return self.barrier(node, "division by a tensor")
        if key in (torch.flatten, "flatten"):
            start = _arg(node, 1, "start_dim", 0)
            return self.flatten(node, x, start, _arg(node, 2, "end_dim", -1))
        if key in _RESHAPE_OPS:
            return self.reshape(node, x)
        if key in _PERMUTE_OPS:
            return self.permute(node, x)
        if key in _TRANSPOSE_OPS:
            return self.transpose(node, x)
        if key is F.pad:
            return self.pad(node, x)
        if key in _REDUCE_OPS:
            return self.reduce(node, x)
        return self.barrier(node, "operation is not known to keep channels apart")

    # -- rules ---------------------------------------------------------------------------

    def channel_count(self, node: torch.fx.Node, tensor: Any, dim: int) -> None:
        """``t.shape[d]`` read in forward: when ``d`` is ``t``'s followed channel dimension and
        the value is used other than as that size in a reshape (tied there), pin ``t``'s
        channels: the value is baked into other shapes."""
        channels = self.channels(tensor)
        shape = _shape(tensor)
        if channels is None or shape is None or dim % len(shape) != channels.dim:
            return None
        if all(user.target in _RESHAPE_OPS for user in node.users):
            return None
        entry = self.entry(node, "the channel count is read and used in forward")
        for position in channels:
            self.analysis.pin(position, entry)
        return None

    def spatial(self, node: torch.fx.Node, x: Channels) -> Any:
        """Pooling, interpolation and spatial padding: they act on dims after 1."""
        if x.dim != 1:
            return self.barrier(node, "spatial operation on a channel-last tensor")
        return self.same_channels(node, x, "output channels differ from input channels")

    def softmax(self, node: torch.fx.Node, x: Channels, dim: Any) -> Any:
        shape = _shape(node.args[0])
        if not isinstance(dim, int) or shape is None or dim % len(shape) == x.dim:
            return self.renew(node, x, "softmax over the channels: removing one changes the others")
        return self.taint(node, x)

    def layer_norm(
        self, node: torch.fx.Node, x: Channels, normalized: int, module: nn.Module | None = None
    ) -> Any:
        """LayerNorm over the other dims maps a zero channel to its bias (followed, not
        zero). A LayerNorm module over exactly the channels (the residual stream of a
        transformer or ConvNeXt) ties nothing: a removed channel is zero at its input in the
        masked model and its weight and bias entries are masked, and the shrunk model's
        LayerNorm keeps counting it in its statistics
        (:class:`~shrinkbench_core.pruning.channels.norms.PaddedLayerNorm`). Channels that
        are not zero when removed (after a gate or a constant) are kept."""
        shape = _shape(node.args[0])
        if shape is not None and x.dim < len(shape) - normalized:
            return self.taint(node, x)
        over_channels = shape is not None and (
            normalized == 1 or (norms.is_layer_norm_2d(module) and x.dim == 1)
        )
        if module is None or not over_channels or not module.elementwise_affine:
            return self.renew(
                node, x, "LayerNorm over the channels and more: removing one changes the others"
            )
        free = self.analysis.free_elements
        tainted = [p for p in x if any(e in free or self.analysis.is_source(e) for e in p)]
        if tainted:
            entry = self.entry(node, "LayerNorm over channels that are not zero when removed")
            for position in tainted:
                self.analysis.pin(position, entry)
        layer = self.layer(str(node.target), module, "layernorm", 0)
        self.record_inputs(layer, x)
        return x

    def operands(self, node: torch.fx.Node) -> tuple[Any, Any]:
        """The two operands of a binary operation."""
        first = node.args[0] if node.args else node.kwargs.get("input")
        second = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        return first, second

    def aligned(self, a: Any, b: Any, ma: Channels, mb: Channels) -> bool:
        """Whether two operands' channels sit at the same position of tensors of equal rank."""
        sa, sb = _shape(a), _shape(b)
        return (
            sa is not None and sb is not None and len(sa) == len(sb)
            and ma.dim == mb.dim and len(ma) == len(mb)
        )  # fmt: skip

    def tie(self, node: torch.fx.Node, ma: Channels, mb: Channels, reason: str) -> Any:
        for pa, pb in zip(ma, mb, strict=True):
            self.analysis.union(next(iter(pa)), next(iter(pb)))
        merged = Channels((pa | pb for pa, pb in zip(ma, mb, strict=True)), ma.dim)
        return self.same_channels(node, merged, reason)

    def sum_like(self, node: torch.fx.Node) -> Any:
        a, b = self.operands(node)
        ma, mb = self.channels(a), self.channels(b)
        if ma is None and mb is not None and isinstance(a, (int, float)):
            a, b, ma, mb = b, a, mb, ma
        if ma is not None and mb is not None:
            if not self.aligned(a, b, ma, mb):
                return self.barrier(node, "addition that broadcasts across channels")
            return self.tie(node, ma, mb, "addition changes channels")
        if ma is not None and isinstance(b, (int, float)):
            if b == 0:
                return self.same_channels(node, ma, "addition changes channels")
            return self.taint(node, ma)  # x + constant: per channel, no longer zero
        return self.barrier(
            node, "adding a broadcast tensor mixes removed channels with others"
        )

    def multiply(self, node: torch.fx.Node) -> Any:
        a, b = self.operands(node)
        ma, mb = self.channels(a), self.channels(b)
        if ma is None and mb is None:
            return self.barrier(node, "product of tensors without a channel dimension")
        scaled = self.parameter_scale(node, a, b, ma, mb)
        if scaled is not None:
            return scaled
        if ma is not None and mb is not None:
            if self.aligned(a, b, ma, mb):  # e.g. a squeeze-excite gate (N, C, 1, 1)
                return self.tie(node, ma, mb, "product changes channels")
            # One operand is broadcast over the other's channels: keep it whole.
            out = _shape(node)
            keep, other = (ma, mb) if _shape(a) == out else (mb, ma)
            small = _shape(b if keep is ma else a) or ()
            offset = len(out or ()) - len(small)
            if out is None or (keep.dim - offset >= 0 and small[keep.dim - offset] != 1):
                return self.barrier(node, "product mixing channels of different tensors")
            entry = self.entry(node, "product with a tensor broadcast over channels")
            for position in other:
                self.analysis.pin(position, entry)
            return self.same_channels(node, keep, "product changes channels")
        # A product with a scalar or a tensor without channels keeps zero channels zero.
        scaled = ma if ma is not None else mb
        assert scaled is not None
        return self.same_channels(node, scaled, "product changes channels")

    def parameter_scale(self, node: torch.fx.Node, a: Any, b: Any, ma: Any, mb: Any) -> Any:
        """``x * p`` with ``p`` a parameter holding one value per channel of ``x`` (layer
        scale): ``p``'s entries are attached to the channels. None when it is not that."""
        for x, mx, param in ((a, ma, b), (b, mb, a)):
            if mx is None or not isinstance(param, torch.fx.Node) or param.op != "get_attr":
                continue
            value = _attribute(self.graph_module, str(param.target))
            shape = _shape(x)
            if not isinstance(value, nn.Parameter) or shape is None:
                continue
            offset = len(shape) - value.dim()
            axis = mx.dim - offset
            expected = [1] * value.dim()
            if 0 <= axis < value.dim():
                expected[axis] = len(mx)
            if axis != 0 or list(value.shape) != expected or offset < 1:
                continue
            name = str(param.target)
            owner = self.graph_module.get_submodule(name.rpartition(".")[0])
            layer = self.layer(name, owner, "scale", 0, weight_name=name)
            self.record_inputs(layer, mx)
            return self.same_channels(node, mx, "product changes channels")
        return None

    def cat(self, node: torch.fx.Node) -> Any:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        shape = _shape(node)
        if not isinstance(tensors, (list, tuple)) or shape is None:
            return self.barrier(node, "concatenation of unknown tensors")
        maps = [self.channels(t) for t in tensors]
        if any(m is None for m in maps) or len({m.dim for m in maps}) != 1:
            return self.barrier(node, "concatenation of tensors without the same channels")
        channel_dim = maps[0].dim
        dim = _arg(node, 1, "dim", 0)
        dim = dim + len(shape) if dim < 0 else dim
        if dim == channel_dim:
            positions = Channels((p for m in maps for p in m), channel_dim)
            return self.same_channels(node, positions, "concatenation changes channels")
        if len({len(m) for m in maps}) != 1:
            return self.barrier(node, "concatenation mixing channels")
        merged = []
        for positions in zip(*maps, strict=True):
            for position in positions[1:]:
                self.analysis.union(next(iter(positions[0])), next(iter(position)))
            merged.append(frozenset().union(*positions))
        return self.same_channels(
            node, Channels(merged, channel_dim), "concatenation changes channels"
        )

    def flatten(self, node: torch.fx.Node, x: Channels, start: int, end: int) -> Any:
        shape = _shape(node.args[0])
        if shape is None:
            return self.barrier(node, "flatten of a tensor of unknown shape")
        rank = len(shape)
        start, end, dim = start % rank, end % rank, x.dim
        if start == end or dim < start:
            return self.same_channels(node, x, "flatten changes channels")
        if dim > end:
            return self.same_channels(node, x, "flatten changes channels", dim - (end - start))
        if start == 0:
            return self.barrier(node, "flatten merging the batch and channel dimensions")
        outer, inner = math.prod(shape[start:dim]), math.prod(shape[dim + 1 : end + 1])
        positions = [p for _ in range(outer) for p in x for _ in range(inner)]
        return self.same_channels(node, positions, "flatten changes channels", start)

    def reshape(self, node: torch.fx.Node, x: Channels) -> Any:
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = list(sizes[0])
        if not sizes:
            sizes = list(node.kwargs.get("shape", ()))
        if in_shape is None or out_shape is None:
            self.pin_sizes(node, sizes, None)
            return self.barrier(node, "reshape of a tensor of unknown shape")
        if out_shape == in_shape:
            self.pin_sizes(node, sizes, x.dim)
            return x
        dim = x.dim
        before = math.prod(in_shape[:dim])
        # The channel dimension survives whole, possibly at another index.
        for j in range(1, len(out_shape)):
            if math.prod(out_shape[:j]) == before and out_shape[j] == in_shape[dim]:
                return self._reshaped(node, x, sizes, j, x)
            if math.prod(out_shape[:j]) > before:
                break
        # Or it is merged with neighbours into one dimension (a flatten).
        for j in range(1, len(out_shape)):
            head, tail = math.prod(out_shape[:j]), math.prod(out_shape[: j + 1])
            starts = [s for s in range(1, dim + 1) if math.prod(in_shape[:s]) == head]
            ends = [e for e in range(dim, len(in_shape)) if math.prod(in_shape[: e + 1]) == tail]
            if starts and ends:
                outer = math.prod(in_shape[starts[-1] : dim])
                inner = math.prod(in_shape[dim + 1 : ends[0] + 1])
                positions = [p for _ in range(outer) for p in x for _ in range(inner)]
                return self._reshaped(node, x, sizes, j, positions)
        self.pin_sizes(node, sizes, None)
        return self.barrier(node, "reshape that splits or mixes channels")

    def _reshaped(self, node: torch.fx.Node, x: Channels, sizes: list, j: int, positions):
        size = sizes[j] if j < len(sizes) else None
        self.pin_sizes(node, sizes, j)
        if isinstance(size, int) and size != -1 and not vit.width_attribute(
            self, node, size, positions
        ):
            return self.barrier(
                node,
                f"reshape with a hard-coded size {size} in dim {j}; "
                "write x.flatten(1) or x.view(x.size(0), -1)",
            )
        if isinstance(size, torch.fx.Node):
            source = _size_source(size)
            other = self.channels(source[0]) if source else None
            if other is None or source[1] % len(_shape(source[0]) or (0,)) != other.dim:
                return self.barrier(node, f"reshape whose size in dim {j} is computed at run time")
            if len(other) != len(positions):
                return self.barrier(node, "reshape to the channel count of another tensor")
            # The size follows another tensor's channels: removing one must remove both.
            return self.tie(node, Channels(positions, j), other, "reshape changes channels")
        return self.same_channels(node, positions, "reshape changes channels", j)

    def pin_sizes(self, node: torch.fx.Node, sizes: list, skip: int | None) -> None:
        """Pin the channels of every tensor whose channel count is a size of this reshape
        (except at index ``skip``, where :meth:`_reshaped` ties them)."""
        for index, size in enumerate(sizes):
            source = _size_source(size) if isinstance(size, torch.fx.Node) else None
            other = self.channels(source[0]) if source else None
            if index == skip or other is None:
                continue
            if source[1] % len(_shape(source[0]) or (0,)) == other.dim:
                entry = self.entry(node, f"reshape uses a channel count as the size of dim {index}")
                for position in other:
                    self.analysis.pin(position, entry)

    def permute(self, node: torch.fx.Node, x: Channels) -> Any:
        dims = list(node.args[1:]) or list(node.kwargs.get("dims", ()))
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = list(dims[0])
        shape = _shape(node.args[0])
        if shape is None or not all(isinstance(d, int) for d in dims) or len(dims) != len(shape):
            return self.barrier(node, "permute with dimensions known only at run time")
        dims = [d % len(shape) for d in dims]
        if dims[0] != 0:
            return self.barrier(node, "permute that moves the batch dimension")
        return self.same_channels(node, x, "permute changes channels", dims.index(x.dim))

    def transpose(self, node: torch.fx.Node, x: Channels) -> Any:
        shape = _shape(node.args[0])
        first, second = _arg(node, 1, "dim0", None), _arg(node, 2, "dim1", None)
        if shape is None or not isinstance(first, int) or not isinstance(second, int):
            return self.barrier(node, "transpose with dimensions known only at run time")
        first, second = first % len(shape), second % len(shape)
        if 0 in (first, second):
            return self.barrier(node, "transpose that moves the batch dimension")
        swap = {first: second, second: first}
        return self.same_channels(node, x, "transpose changes channels", swap.get(x.dim, x.dim))

    def getitem(self, node: torch.fx.Node) -> Any:
        container, index = node.args[0], node.args[1]
        value = self.maps.get(container) if isinstance(container, torch.fx.Node) else None
        if isinstance(value, list) and isinstance(index, int):
            return value[index]
        if not isinstance(value, Channels):
            if isinstance(node.meta.get("tensor_meta"), TensorMetadata) and _shape(node):
                return self.barrier(node, "indexing of a value the analysis does not follow")
            return None
        items = index if isinstance(index, tuple) else (index,)
        dim = _indexed_channel_dim(items, len(_shape(container) or ()), value.dim)
        if dim is None:
            return self.barrier(node, "indexing of the channel dimension with constant positions")
        return self.same_channels(node, value, "indexing changes channels", dim)

    def pad(self, node: torch.fx.Node, x: Channels) -> Any:
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
            if dim == 0 or (dim != x.dim and not zero_fill):
                return self.barrier(node, "pad of the batch dimension or with a non-zero value")
            if dim == x.dim:
                if mode != "constant" or value or low < 0 or high < 0 or x.dim != 1:
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
            return self.same_channels(node, padded, "pad changes channels", 1)
        index = sum(site.module == owner for site in self.analysis.pads)
        low = [self.analysis.new_pad_source() for _ in range(before)]
        high = [self.analysis.new_pad_source() for _ in range(after)]
        self.analysis.pads.append(PadSite(owner, index, len(shape) - 2, low, high))
        padded = tuple(frozenset({e}) for e in low) + x + tuple(frozenset({e}) for e in high)
        return self.same_channels(node, padded, "pad changes channels", 1)

    def reduce(self, node: torch.fx.Node, x: Channels) -> Any:
        shape = _shape(node.args[0])
        dims = _arg(node, 1, "dim", None)
        if shape is None or dims is None:
            return self.barrier(node, "reduction over all dimensions")
        dims = [dims] if isinstance(dims, int) else list(dims)
        if not all(isinstance(d, int) for d in dims):
            return self.barrier(node, "reduction over dimensions known only at run time")
        dims = [d % len(shape) for d in dims]
        if 0 in dims or x.dim in dims:
            return self.barrier(node, "reduction over the batch or channel dimension")
        keepdim = _arg(node, 2, "keepdim", False)
        dim = x.dim if keepdim else x.dim - sum(d < x.dim for d in dims)
        return self.same_channels(node, x, "reduction changes channels", dim)


def _is_stochastic_depth(target: Any) -> bool:
    """torchvision's stochastic depth: drops whole examples, so zero channels stay zero."""
    return getattr(target, "__name__", "") == "stochastic_depth" and getattr(
        target, "__module__", ""
    ).startswith("torchvision.")


def _is_patch_merging_pad(target: Any) -> bool:
    """torchvision Swin's patch merging (channel-last): zero pad of H and W, then the four
    pixels of every 2x2 patch concatenated along the channels."""
    return getattr(target, "__name__", "") == "_patch_merging_pad" and getattr(
        target, "__module__", ""
    ).startswith("torchvision.")


def _size_source(node: torch.fx.Node) -> tuple[torch.fx.Node, int] | None:
    """``(t, d)`` when ``node`` is ``t.shape[d]``, ``t.size()[d]`` or ``t.size(d)``."""
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2:
        tensor, dim = node.args
        return (tensor, dim) if isinstance(dim, int) else None
    if node.target is not operator.getitem or not isinstance(node.args[1], int):
        return None
    shape = node.args[0]
    if not isinstance(shape, torch.fx.Node):
        return None
    if shape.op == "call_function" and shape.target is getattr and shape.args[1] == "shape":
        return shape.args[0], node.args[1]
    if shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1:
        return shape.args[0], node.args[1]
    return None


def _attribute(module: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name, None)


def _indexed_channel_dim(items: tuple[Any, ...], rank: int, dim: int) -> int | None:
    """Where channel dimension ``dim`` lands after indexing with ``items``, or None when
    the indexing touches the batch or channel dimension (or uses tensors)."""
    full = slice(None)
    if any(not isinstance(item, (slice, int, type(None), type(Ellipsis))) for item in items):
        return None
    if sum(item is Ellipsis for item in items) > 1:
        return None
    consumed = sum(item is not None and item is not Ellipsis for item in items)
    expanded: list[Any] = []
    for item in items:
        if item is Ellipsis:
            expanded += [full] * (rank - consumed)
        else:
            expanded.append(item)
    in_dim = out_dim = 0
    for item in expanded:
        if item is None:
            out_dim += 1
            continue
        if in_dim in (0, dim) and item != full:
            return None
        if in_dim == dim:
            return out_dim
        in_dim += 1
        out_dim += 0 if isinstance(item, int) else 1
    return out_dim + (dim - in_dim)


def _describe(node: torch.fx.Node, graph_module: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(graph_module.get_submodule(str(node.target))).__name__
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))

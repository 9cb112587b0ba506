"""Channel dependency analysis: which output channels are tied, and who reads them.

The model's forward is traced with ``torch.fx`` and run once on an example
input to learn every tensor's shape. Each channel (dim 1) of each tensor is
then followed through the graph:

* a convolution or linear layer *produces* new channels (its dim-0 rows) and
  *consumes* the channels of its input (dim-1 columns; a grouped convolution
  reads input channel ``i`` in column ``i % (in / groups)`` of the rows of group
  ``i // (in / groups)``);
* a depthwise convolution ties each output channel to the input channel it
  reads;
* an addition, subtraction or element-wise product *ties* the channels at the
  same position of its operands; a concatenation on dim 1 places channels side
  by side; a flatten turns one channel into ``H * W`` features of a linear layer;
* batch norm, activations that map zero to zero, pooling and spatial slicing or
  padding keep channels where they are;
* a zero pad of the channel dimension (the option-A shortcut of CIFAR ResNets)
  adds zero channels: channels after it are shifted, and when the pad sits in a
  submodule's forward the zero channels can be removed as well, by replacing that
  submodule with an fx GraphModule whose pad amounts are rewritten.

Channels that must be removed together form a *tied channel*: for a residual
stage, row ``c`` of every convolution whose output is added into that stage. A
tied channel can be removed when every producer row in it is masked. Anything
the analysis does not understand (an unknown operation, a reshape with a
hard-coded size, channel padding, indexing of channels) is an *unsupported*
pattern: the channels it touches are pinned and kept, never silently broken.

Masks follow the framework format: ``{parameter name: bool tensor}``, True =
keep. A *channel mask* is a weight mask whose dim-0 rows are entirely False.
:func:`complete_channel_masks` extends such masks so that the masked model
outputs exactly zero in every removed channel (the producer's bias and the
matching batch-norm weight and bias are masked too), which is what makes the
physically shrunk model (:mod:`shrinkbench_core.pruning.shrink`) equal to the
masked one.

Tied channels are handled both ways: :func:`channel_groups` exposes the ties so
that a channel strategy can score and prune a tied channel jointly (preferred),
and a tied channel that is masked in only some of its producers is simply kept
(the safe fallback).
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from shrinkbench_core.errors import UserError
from shrinkbench_core.pruning.masks import Masks, validate_masks

__all__ = [
    "ChannelAnalysis",
    "ChannelGroup",
    "PadSite",
    "TiedChannel",
    "TracedLayer",
    "TraceError",
    "Unsupported",
    "analyze_channels",
    "as_args",
    "channel_groups",
    "channel_norms",
    "complete_channel_masks",
    "eval_mode",
    "mask_channels",
    "pad_nodes",
    "rewrite_pads",
]

Position = frozenset[int]
"""One channel of one tensor: the ids of the elements (producer rows or sources) summed into it."""
ChannelMap = tuple[Position, ...]


class TraceError(UserError):
    """The model's forward cannot be traced with torch.fx, so channels cannot be followed."""


@dataclass(frozen=True)
class Unsupported:
    """A pattern the analysis left intact, and the producer layers whose channels it pins."""

    node: str
    operation: str
    reason: str
    layers: tuple[str, ...] = ()

    def __str__(self) -> str:
        layers = ", ".join(self.layers) if self.layers else "-"
        return f"{self.node} ({self.operation}): {self.reason} [kept channels of: {layers}]"


@dataclass
class TiedChannel:
    """Channels of several layers that exist only together.

    ``producers`` maps a weight name to the dim-0 rows in this tied channel;
    ``consumers`` maps a weight name to the *input channels* (0 .. in_channels-1)
    that read it; ``attached`` maps per-channel vectors (biases, batch-norm
    weight and bias) to their entries. ``removable`` is False when an
    unsupported pattern, the model input or the model output pins it. (A grouped
    convolution also needs each of its groups to lose as many channels as the
    others; :func:`~shrinkbench_core.pruning.shrink.shrink_model` keeps and reports
    channels where masks break that.)
    """

    producers: dict[str, tuple[int, ...]]
    consumers: dict[str, tuple[int, ...]]
    attached: dict[str, tuple[int, ...]]
    removable: bool


@dataclass
class ChannelGroup:
    """Tied channels that share the same producer layers, e.g. one residual stage.

    A channel strategy scores each entry of ``channels`` (for example with
    :func:`channel_norms`) and prunes it with :func:`mask_channels`.
    """

    producers: tuple[str, ...]
    channels: list[TiedChannel]

    @property
    def size(self) -> int:
        """Number of tied channels."""
        return len(self.channels)

    @property
    def removable(self) -> list[int]:
        """Indices into ``channels`` of the tied channels that may be removed."""
        return [i for i, channel in enumerate(self.channels) if channel.removable]


@dataclass
class PadSite:
    """An ``F.pad`` that adds zero channels inside a submodule's forward.

    Its amounts can be rewritten (the submodule is replaced by an fx GraphModule
    with new amounts), so the zero channels it adds can be removed too.
    ``module`` is the submodule's qualified name, ``index`` which ``F.pad`` call
    of its forward this is (graph order), ``pair`` the index of the channel
    dimension's (before, after) pair in the pad amounts.
    """

    module: str
    index: int
    pair: int
    before: list[int]  # elements of the zero channels added before the input's channels
    after: list[int]


@dataclass
class TracedLayer:
    """A convolution, linear or batch-norm module as seen in the graph."""

    name: str
    module: nn.Module
    kind: str  # "conv", "linear" or "norm"
    rows: list[int] = field(default_factory=list)  # element id of each output channel
    inputs: list[Position] | None = None  # position read by each input channel

    @property
    def is_producer(self) -> bool:
        return self.kind in ("conv", "linear")


class ChannelAnalysis:
    """Result of following every channel through a traced model.

    Built by :func:`analyze_channels`; independent of the weights, so one
    analysis serves every mask of the same architecture.
    """

    def __init__(self) -> None:
        self.layers: dict[str, TracedLayer] = {}
        self._parent: list[int] = []
        self._element_layer: list[str | None] = []  # None marks a source (never prunable)
        self._pins: dict[int, int | None] = {}  # element -> index of the Unsupported pinning it
        self._entries: list[tuple[str, str, str]] = []
        self._members: dict[int, list[int]] | None = None
        self.pads: list[PadSite] = []
        self._pad_elements: set[int] = set()

    # -- union-find over elements ------------------------------------------------

    def new_producer(self, layer: str) -> int:
        """A fresh element for an output row of ``layer``."""
        return self._new(layer)

    def new_source(self, entry: int | None) -> int:
        """A fresh pinned element: a channel no layer produces (input, padding, unknown op)."""
        element = self._new(None)
        self._pins[element] = entry
        return element

    def new_pad_source(self) -> int:
        """A fresh element for a zero channel added by a rewritable pad (removable)."""
        element = self._new(None)
        self._pad_elements.add(element)
        return element

    def _new(self, layer: str | None) -> int:
        element = len(self._parent)
        self._parent.append(element)
        self._element_layer.append(layer)
        return element

    def find(self, element: int) -> int:
        """Representative of the tied channel holding ``element``."""
        parent = self._parent
        root = element
        while parent[root] != root:
            root = parent[root]
        while parent[element] != root:
            parent[element], element = root, parent[element]
        return root

    def union(self, first: int, second: int) -> None:
        """Tie two elements together."""
        self._members = None
        a, b = self.find(first), self.find(second)
        if a != b:
            self._parent[max(a, b)] = min(a, b)

    def pin(self, position: Position, entry: int | None) -> None:
        """Keep the tied channel of ``position`` (``entry``: the Unsupported responsible)."""
        for element in position:
            self._pins.setdefault(element, entry)

    def add_entry(self, node: str, operation: str, reason: str) -> int:
        """Record an unsupported pattern; returns its index for :meth:`pin`."""
        self._entries.append((node, operation, reason))
        return len(self._entries) - 1

    def root_of(self, position: Position) -> int:
        """Tied channel of a tensor channel."""
        return self.find(next(iter(position)))

    def members(self) -> dict[int, list[int]]:
        """Elements of every tied channel, keyed by representative."""
        if self._members is None:
            members: dict[int, list[int]] = {}
            for element in range(len(self._parent)):
                members.setdefault(self.find(element), []).append(element)
            self._members = members
        return self._members

    def pinned_roots(self) -> set[int]:
        """Tied channels that must be kept whatever the masks say."""
        return {self.find(element) for element in self._pins}

    # -- reports -----------------------------------------------------------------

    def unsupported(self) -> list[Unsupported]:
        """Unsupported patterns that pin channels of at least one producer layer."""
        members = self.members()
        touched: dict[int, set[str]] = {}
        for element, entry in self._pins.items():
            if entry is None:
                continue
            for member in members[self.find(element)]:
                layer = self._element_layer[member]
                if layer is not None:
                    touched.setdefault(entry, set()).add(layer)
        order = {name: i for i, name in enumerate(self.layers)}
        out = []
        for entry, (node, operation, reason) in enumerate(self._entries):
            layers = sorted(touched.get(entry, ()), key=lambda name: order.get(name, 0))
            if layers:
                out.append(Unsupported(node, operation, reason, tuple(layers)))
        return out

    def groups(self) -> list[ChannelGroup]:
        """Tied channels grouped by their set of producer layers, in graph order."""
        pinned = self.pinned_roots()
        channels: dict[int, TiedChannel] = {}

        def channel(root: int) -> TiedChannel:
            if root not in channels:
                channels[root] = TiedChannel({}, {}, {}, root not in pinned)
            return channels[root]

        def add(table: dict[str, tuple[int, ...]], name: str, index: int) -> None:
            table[name] = table.get(name, ()) + (index,)

        for layer in self.layers.values():
            for row, element in enumerate(layer.rows):
                entry = channel(self.find(element))
                add(entry.producers, f"{layer.name}.weight", row)
                if getattr(layer.module, "bias", None) is not None:
                    add(entry.attached, f"{layer.name}.bias", row)
            if layer.inputs is None:
                continue
            for index, position in enumerate(layer.inputs):
                entry = channel(self.root_of(position))
                if layer.kind == "norm":
                    add(entry.attached, f"{layer.name}.weight", index)
                    add(entry.attached, f"{layer.name}.bias", index)
                elif not _is_depthwise(layer.module):
                    add(entry.consumers, f"{layer.name}.weight", index)
        by_producers: dict[tuple[str, ...], ChannelGroup] = {}
        for entry in channels.values():
            if not entry.producers:
                continue
            key = tuple(entry.producers)
            by_producers.setdefault(key, ChannelGroup(key, [])).channels.append(entry)
        for group in by_producers.values():
            group.channels.sort(key=lambda c: tuple(min(rows) for rows in c.producers.values()))
        return list(by_producers.values())

    # -- masks -------------------------------------------------------------------

    def pruned_elements(self, masks: Masks) -> set[int]:
        """Producer elements whose weight row is entirely masked."""
        pruned: set[int] = set()
        for layer in self.layers.values():
            mask = masks.get(f"{layer.name}.weight")
            if mask is None or not layer.rows:
                continue
            rows = ~mask.reshape(mask.shape[0], -1).any(dim=1)
            pruned.update(layer.rows[i] for i in torch.nonzero(rows).flatten().tolist())
        return pruned

    def removed_roots(self, masks: Masks) -> tuple[set[int], list[Unsupported]]:
        """Tied channels to remove physically, and grouped convolutions that kept some.

        A tied channel is removed when it is not pinned and every producer row in
        it is masked (zero channels of a rewritable pad count as masked). A
        grouped convolution needs every group it keeps to keep as many input and
        output channels as the others; where the masks break that, the channels of
        that convolution are kept and reported. A layer whose rows are all masked
        keeps its first one, so no layer ends up with no channels.
        """
        pruned = self.pruned_elements(masks) | self._pad_elements
        pinned = self.pinned_roots()
        removed = {
            root
            for root, elements in self.members().items()
            if root not in pinned and all(element in pruned for element in elements)
        }
        reports: list[Unsupported] = []
        changed = True
        while changed:
            changed = False
            for layer in self.layers.values():
                if layer.rows and all(self.find(e) in removed for e in layer.rows):
                    removed.discard(self.find(layer.rows[0]))
                    changed = True
                    reason = "every output channel is masked; one is kept so the layer stays"
                    reports.append(Unsupported(layer.name, layer.kind, reason, (layer.name,)))
                if layer.kind != "conv" or layer.module.groups == 1 or layer.inputs is None:
                    continue
                roots = [self.find(e) for e in layer.rows] + [self.root_of(p) for p in layer.inputs]
                if not any(root in removed for root in roots):
                    continue
                if _group_counts_consistent(layer, removed, self):
                    continue
                removed.difference_update(roots)
                changed = True
                reason = (
                    f"grouped convolution (groups={layer.module.groups}) would keep different "
                    "channel counts per group"
                )
                reports.append(Unsupported(layer.name, "Conv (grouped)", reason, (layer.name,)))
        return removed, reports

    def complete(self, model: nn.Module, masks: Masks) -> Masks:
        """See :func:`complete_channel_masks`."""
        return self.plan(model, masks)[0]

    def plan(self, model: nn.Module, masks: Masks) -> tuple[Masks, set[int], list[Unsupported]]:
        """Completed masks, tied channels to remove, and grouped convolutions that kept some."""
        validate_masks(model, masks)
        editor = _MaskEditor(model, masks)
        pruned = self.pruned_elements(masks)
        removed, reports = self.removed_roots(masks)
        for layer in self.layers.values():
            if layer.is_producer:
                editor.clear_rows(
                    f"{layer.name}.bias",
                    [r for r, e in enumerate(layer.rows) if e in pruned or self.find(e) in removed],
                )
            if layer.inputs is None:
                continue
            gone = [i for i, p in enumerate(layer.inputs) if self.root_of(p) in removed]
            if layer.kind == "norm":
                zero = [i for i, p in enumerate(layer.inputs) if self._is_zero(p, pruned)]
                for suffix in ("weight", "bias"):
                    editor.clear_rows(f"{layer.name}.{suffix}", gone + zero)
            else:
                editor.clear_inputs(f"{layer.name}.weight", gone)
        return editor.result(), removed, reports

    def _is_zero(self, position: Position, pruned: set[int]) -> bool:
        """Whether a channel sums only masked rows (and zero padding), at least one row."""
        pads = self._pad_elements
        return all(e in pruned or e in pads for e in position) and any(
            e in pruned for e in position
        )

    def pad_amounts(self, removed: set[int]) -> dict[str, list[tuple[int, int, int, int]]]:
        """New (index, pair, before, after) of every rewritable pad whose amounts change."""
        edits: dict[str, list[tuple[int, int, int, int]]] = {}
        for site in self.pads:
            before = sum(self.find(e) not in removed for e in site.before)
            after = sum(self.find(e) not in removed for e in site.after)
            if (before, after) != (len(site.before), len(site.after)):
                edits.setdefault(site.module, []).append((site.index, site.pair, before, after))
        return edits

    def check_pads(self, model: nn.Module) -> None:
        """Pin pads whose module cannot be rewritten: untraceable, or called more than once."""
        by_module: dict[str, list[PadSite]] = {}
        for site in self.pads:
            by_module.setdefault(site.module, []).append(site)
        for name, sites in by_module.items():
            try:
                count = len(pad_nodes(torch.fx.symbolic_trace(model.get_submodule(name))))
            except Exception:  # fx raises many types for untraceable code
                count = -1
            if count == len(sites):
                continue
            reason = (
                "pad in a module that cannot be traced on its own"
                if count < 0
                else "pad in a module called more than once"
            )
            entry = self.add_entry(name, "pad", reason)
            for site in sites:
                for element in site.before + site.after:
                    self._pad_elements.discard(element)
                    self._pins[element] = entry
            self.pads = [site for site in self.pads if site.module != name]


def pad_nodes(graph_module: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The ``F.pad`` calls of a traced graph, in order."""
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and n.target is F.pad]


def rewrite_pads(model: nn.Module, edits: dict[str, list[tuple[int, int, int, int]]]) -> list[str]:
    """Replace each submodule in ``edits`` by a GraphModule with new channel pad amounts.

    ``edits`` maps a module name to (pad index, channel pair, before, after)
    tuples, as given by :meth:`ChannelAnalysis.pad_amounts`. Returns the names of
    the replaced modules.
    """
    for name, changes in edits.items():
        graph_module = torch.fx.symbolic_trace(model.get_submodule(name))
        nodes = pad_nodes(graph_module)
        for index, pair, before, after in changes:
            node = nodes[index]
            amounts = list(_arg(node, 1, "pad", ()))
            amounts[2 * pair : 2 * pair + 2] = [before, after]
            if len(node.args) > 1:
                node.args = (node.args[0], tuple(amounts), *node.args[2:])
            else:
                node.kwargs = {**node.kwargs, "pad": tuple(amounts)}
        graph_module.recompile()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, graph_module)
    return list(edits)


class _MaskEditor:
    """Collects entries to mask, then writes them with one tensor operation per parameter."""

    def __init__(self, model: nn.Module, masks: Masks | None) -> None:
        self.params = dict(model.named_parameters())
        self.modules = dict(model.named_modules())
        self.masks = {name: mask.clone() for name, mask in (masks or {}).items()}
        self.rows: dict[str, set[int]] = {}
        self.inputs: dict[str, set[int]] = {}

    def clear_rows(self, name: str, rows: Iterable[int]) -> None:
        """Mask entries ``rows`` of dim 0 (output channels, per-channel vectors)."""
        if name in self.params:
            self.rows.setdefault(name, set()).update(rows)

    def clear_inputs(self, name: str, channels: Iterable[int]) -> None:
        """Mask input channels of a conv or linear weight (grouped convolutions included)."""
        if name in self.params:
            self.inputs.setdefault(name, set()).update(channels)

    def _mask(self, name: str) -> torch.Tensor:
        if name not in self.masks:
            self.masks[name] = torch.ones_like(self.params[name], dtype=torch.bool)
        return self.masks[name]

    def result(self) -> Masks:
        for name, rows in self.rows.items():
            if rows:
                mask = self._mask(name)
                mask[torch.tensor(sorted(rows), dtype=torch.long, device=mask.device)] = False
        for name, channels in self.inputs.items():
            if not channels:
                continue
            mask = self._mask(name)
            groups = getattr(self.modules[name.rpartition(".")[0]], "groups", 1)
            gone = torch.zeros(mask.shape[1] * groups, dtype=torch.bool, device=mask.device)
            gone[sorted(channels)] = True
            gone = gone.reshape(groups, -1).repeat_interleave(mask.shape[0] // groups, dim=0)
            mask &= ~gone.reshape(*gone.shape, *([1] * (mask.dim() - 2)))
        return self.masks


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.in_channels > 1


def _group_counts_consistent(
    layer: TracedLayer, removed: set[int], analysis: ChannelAnalysis
) -> bool:
    """Whether every group of a grouped conv keeps the same (inputs, outputs), or none."""
    module = layer.module
    groups = module.groups
    per_in, per_out = module.in_channels // groups, module.out_channels // groups
    assert layer.inputs is not None
    shapes = set()
    for group in range(groups):
        kept_in = sum(
            analysis.root_of(p) not in removed
            for p in layer.inputs[group * per_in : (group + 1) * per_in]
        )
        kept_out = sum(
            analysis.find(e) not in removed
            for e in layer.rows[group * per_out : (group + 1) * per_out]
        )
        if (kept_in == 0) != (kept_out == 0):
            return False
        if kept_in:
            shapes.add((kept_in, kept_out))
    return len(shapes) <= 1


# -- tracing -------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode for the block, then restore each one's flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def as_args(example_input: Any) -> tuple[Any, ...]:
    """The forward's positional arguments: a tuple or list as given, else a 1-tuple."""
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def analyze_channels(model: nn.Module, example_input: Any) -> ChannelAnalysis:
    """Trace ``model`` with torch.fx and follow every channel (see the module docstring).

    ``example_input`` is one batch (a tensor, or a tuple of the forward's
    arguments) on the model's device. The model is run once in eval mode and
    is not modified.
    """
    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types for untraceable code
        raise TraceError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}). "
            "Structured shrinking needs a forward without data-dependent Python control flow."
        ) from error
    with eval_mode(model), torch.no_grad():
        ShapeProp(graph_module).propagate(*as_args(example_input))
    analysis = _Propagator(graph_module).run()
    analysis.check_pads(model)
    return analysis


def channel_groups(model: nn.Module, example_input: Any) -> list[ChannelGroup]:
    """The tied channels of ``model``, grouped by their producer layers.

    Each group lists, per tied channel, the producer weight rows (dim 0), the
    consumer weight input channels and the attached biases / batch-norm entries.
    Channel strategies should prune whole tied channels (see :func:`mask_channels`).
    """
    return analyze_channels(model, example_input).groups()


def complete_channel_masks(
    model: nn.Module, masks: Masks, example_input: Any, analysis: ChannelAnalysis | None = None
) -> Masks:
    """Extend channel masks so that the masked model outputs exactly zero in pruned channels.

    For each output row masked entirely in a producer, its bias is masked; each
    batch-norm entry whose input channel only sums masked rows gets its weight
    and bias masked (its output is then exactly 0 whatever the running
    statistics). For each tied channel masked in all its producers, the input
    columns of every consumer are masked too, so the masked model's nonzero
    parameters are exactly those the shrunk model keeps. Returns new masks;
    ``masks`` and ``model`` are not modified. Pass ``analysis`` to skip tracing.
    """
    analysis = analysis or analyze_channels(model, example_input)
    return analysis.complete(model, masks)


def mask_channels(
    model: nn.Module, channels: Iterable[TiedChannel], masks: Masks | None = None
) -> Masks:
    """Masks (a copy of ``masks``, or new ones) with every given tied channel removed.

    Masks the producer rows, the consumer input channels (grouped convolutions
    included) and the attached entries of each tied channel.
    """
    editor = _MaskEditor(model, masks)
    for channel in channels:
        for name, rows in [*channel.producers.items(), *channel.attached.items()]:
            editor.clear_rows(name, rows)
        for name, inputs in channel.consumers.items():
            editor.clear_inputs(name, inputs)
    return editor.result()


def channel_norms(model: nn.Module, group: ChannelGroup, p: float = 1.0) -> torch.Tensor:
    """L-p norm of each tied channel of ``group`` over all its producer rows."""
    params = dict(model.named_parameters())
    total = torch.zeros(group.size, dtype=torch.float64)
    for name in group.producers:
        weight = params[name].detach()
        row_power = weight.abs().pow(p).reshape(weight.shape[0], -1).sum(1).double().cpu()
        pairs = [
            (i, row) for i, c in enumerate(group.channels) for row in c.producers.get(name, ())
        ]
        channels, rows = zip(*pairs, strict=True)
        total.index_add_(0, torch.tensor(channels), row_power[torch.tensor(rows)])
    return total.pow(1.0 / p)


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


def _arg(node: torch.fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _describe(node: torch.fx.Node, graph_module: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(graph_module.get_submodule(str(node.target))).__name__
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))

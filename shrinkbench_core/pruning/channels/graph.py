"""The result of a channel analysis: tied channels, unsupported patterns, mask planning.

:class:`ChannelAnalysis` holds a union-find over *elements* (producer rows,
pinned sources, zero channels of rewritable pads, and free elements added by
per-channel operations that do not map zero to zero). Tied channels are its
sets; the propagation rules (:mod:`.rules`) build it.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.pruning.masks import Masks, validate_masks


def without_gc(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``function`` with the cyclic garbage collector paused: the analysis creates
    millions of small objects and no cycles, and collections cost more than the work."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


Position = frozenset[int]
"""One channel of one tensor: the ids of the elements (producer rows or sources) summed into it."""
ChannelMap = tuple[Position, ...]


class Channels(tuple):
    """The channel positions of one tensor, along its dimension ``dim`` (1, or last when
    channel-last)."""

    dim: int

    def __new__(cls, positions: Iterable[Position], dim: int = 1) -> Channels:
        channels = super().__new__(cls, positions)
        channels.dim = dim
        return channels


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
    slots: dict[str, int] = field(default_factory=dict)
    """Group of each grouped convolution it passes through (-1: several groups)."""


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

    def slots(self) -> list[int] | None:
        """The convolution group of each tied channel, when a grouped convolution reads or
        writes this group (each of its groups must then lose as many channels), else None.

        Also None when a tied channel spans several convolution groups: such masks are
        left to the shrinking step's consistency check.
        """
        keys = [key for key in self.channels[0].slots] if self.channels else []
        if not keys:
            return None
        key = keys[0]
        slots = [channel.slots.get(key, -1) for channel in self.channels]
        return None if min(slots) < 0 else slots


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
    kind: str  # "conv", "linear", "norm", "layernorm", "scale" (a per-channel parameter
    # multiplied in forward, weight_name its name) or "mha" (nn.MultiheadAttention's in-projection)
    rows: list[int] = field(default_factory=list)  # element id of each output channel
    inputs: list[Position] | None = None  # position read by each input channel
    weight_name: str = ""  # default: f"{name}.weight"
    bias_name: str = ""  # default: f"{name}.bias"

    def __post_init__(self) -> None:
        self.weight_name = self.weight_name or f"{self.name}.weight"
        self.bias_name = self.bias_name or f"{self.name}.bias"

    @property
    def per_channel_names(self) -> tuple[str, ...]:
        """Per-channel vectors of a norm or scale layer (weight, and bias if it has one)."""
        if self.kind == "scale":
            return (self.weight_name,)
        return (self.weight_name, self.bias_name) if self.has_bias else (self.weight_name,)

    @property
    def has_bias(self) -> bool:
        return getattr(self.module, self.bias_name.rpartition(".")[2], None) is not None

    @property
    def is_producer(self) -> bool:
        return self.kind in ("conv", "linear", "mha")


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
        self._free_elements: set[int] = set()
        self.attention: list[Any] = []  # AttentionSite of each attention module followed
        self.stream: list[Any] = []  # stream parameters and width attributes (:mod:`.vit`)

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

    @property
    def free_elements(self) -> set[int]:
        return self._free_elements

    def is_source(self, element: int) -> bool:
        """Whether ``element`` is a pinned source (model input, unknown operation)."""
        return self._element_layer[element] is None and element in self._pins

    def new_free(self) -> int:
        """A fresh element that never blocks removal but keeps its channel from counting as
        zero (added by per-channel operations that map zero to non-zero, such as a sigmoid)."""
        element = self._new(None)
        self._free_elements.add(element)
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

    @without_gc
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
            grouped = _is_grouped(layer.module)
            per_out = layer.module.out_channels // layer.module.groups if grouped else 0
            for row, element in enumerate(layer.rows):
                entry = channel(self.find(element))
                add(entry.producers, layer.weight_name, row)
                if layer.has_bias:
                    add(entry.attached, layer.bias_name, row)
                if grouped:
                    _add_slot(entry, f"{layer.name}:out", row // per_out)
            if layer.inputs is None:
                continue
            per_in = layer.module.in_channels // layer.module.groups if grouped else 0
            for index, position in enumerate(layer.inputs):
                entry = channel(self.root_of(position))
                if layer.kind in _PER_CHANNEL_KINDS:
                    for name in layer.per_channel_names:
                        add(entry.attached, name, index)
                elif not _is_depthwise(layer.module):
                    add(entry.consumers, layer.weight_name, index)
                if grouped:
                    _add_slot(entry, f"{layer.name}:in", index // per_in)
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
            mask = masks.get(layer.weight_name)
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
        pruned = self.pruned_elements(masks) | self._pad_elements | self._free_elements
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

    @without_gc
    def plan(self, model: nn.Module, masks: Masks) -> tuple[Masks, set[int], list[Unsupported]]:
        """Completed masks, tied channels to remove, and grouped convolutions that kept some."""
        validate_masks(model, masks)
        editor = _MaskEditor(model, masks)
        pruned = self.pruned_elements(masks)
        removed, reports = self.removed_roots(masks)
        for layer in self.layers.values():
            if layer.is_producer:
                editor.clear_rows(
                    layer.bias_name,
                    [r for r, e in enumerate(layer.rows) if e in pruned or self.find(e) in removed],
                )
            if layer.inputs is None:
                continue
            gone = [i for i, p in enumerate(layer.inputs) if self.root_of(p) in removed]
            if layer.kind in _PER_CHANNEL_KINDS:
                zero = [i for i, p in enumerate(layer.inputs) if self._is_zero(p, pruned)]
                for name in layer.per_channel_names:
                    editor.clear_rows(name, gone + zero)
            else:
                editor.clear_inputs(layer.weight_name, gone)
        completed = editor.result()
        for site in self.stream:
            site.complete(self, model, completed, pruned, removed)
        return completed, removed, reports

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


_PER_CHANNEL_KINDS = ("norm", "layernorm", "scale")


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.in_channels > 1


def _is_grouped(module: nn.Module) -> bool:
    """A grouped convolution that is not depthwise (its groups must stay balanced)."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and not _is_depthwise(module)
    )


def _add_slot(channel: TiedChannel, key: str, slot: int) -> None:
    if channel.slots.get(key, slot) != slot:
        slot = -1
    channel.slots[key] = slot


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



def _arg(node: torch.fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)

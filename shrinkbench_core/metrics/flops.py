"""Multiply-accumulate (MAC) counting, dense and of nonzero weights.

What is counted
---------------
One multiply-add (MAC) per multiplication of a matrix product or convolution, for
the forward pass of the model in eval mode under ``torch.no_grad``:

* convolutions of every kind (1d/2d/3d, transposed, grouped, depthwise, strided,
  padded, dilated): ``batch x output positions x Cout x Cin/groups x kernel`` (for a
  transposed convolution: input positions), read from the shapes of the real call,
  so padding, stride and dilation are exactly those the layer used;
* matrix products: ``mm``, ``addmm`` (``nn.Linear`` on inputs of any rank, tokens
  included), ``bmm``, ``baddbmm`` (``matmul``/``einsum`` lower to these);
* recurrent layers: ``nn.RNN``/``nn.GRU`` (which run as matrix products) and
  ``nn.LSTM``, whose fused kernels (oneDNN's ``mkldnn_rnn_layer`` on CPU, cuDNN's
  ``_cudnn_rnn``, MIOpen's ``miopen_rnn``) count ``steps x batch x entries`` of
  every weight matrix (input-hidden, hidden-hidden, projection), per direction and
  layer: the products the unfused cell does, packed sequences included;
* attention: ``scaled_dot_product_attention`` on every backend counts its two
  products ``Q K^T`` and ``A V`` in full (no discount for causal masks).
  ``nn.MultiheadAttention``'s fused inference path (one opaque operator under
  ``no_grad``, which ``FlopCounterMode`` alone does not count: it reports 11.3
  instead of 17.6 GMACs for ViT-B/16) is switched off while counting, so its
  projections and products are counted as the matrix products they are.

Not counted: bias additions, normalization, activations, pooling, softmax,
elementwise arithmetic, data movement. This is the convention of torchvision's
published ``GFLOPS`` (``Weights.meta["_ops"]``, which are in fact giga-MACs) and
of the pruning literature: on all 80 torchvision classifiers our dense MACs equal
the published figures to their 3 published decimals (see
``tests/test_metrics_torchvision_reference.py``). Formulas come from
:mod:`torch.utils.flop_counter` (which reports FLOPs = 2 x MACs; we halve them),
plus the CPU attention kernel and the fused recurrent kernels it lacks. Any other
operator whose name says it is a product, convolution, attention or recurrent
layer is listed in :attr:`FlopReport.uncounted_ops` instead of being dropped
silently.

Nonzero MACs
------------
An operator is attributed to the parameter it multiplies by (found through the
tensor's storage or its derivation, so ``weight.t()``, slices, expansions and
dtype copies count). A weight computed inside ``forward`` from the model's own
state only (parameters and buffers, no input) is attributed to the parameter it
is computed from: ``torch.nn.utils.prune``'s ``weight_orig * weight_mask`` to
``weight_orig``, a parametrization's result to its ``original`` (the layer is the
parametrized module). Its nonzero MACs are ``dense MACs x nonzero / total entries``
of the weight operand as multiplied (the slice, if a slice; the masked product, if
computed), which is exact for convolutions, matrix products and recurrent
kernels: every entry of the operand takes part in the same number of products.
Operators without a parameter (attention products) count dense in both totals.
A convolution whose weight cannot be traced to a parameter (a weight computed
from the input, or from a tensor that is neither parameter nor buffer) counts
the zeros of the operand it multiplies by and is listed in ``uncounted_ops`` as
unattributed. Theoretical speedup = dense MACs / nonzero MACs (ShrinkBench's
definition). Weights on the ``meta`` device count as dense.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from shrinkbench_core.builtin.metrics import FlopsParameters
from shrinkbench_core.metrics import MetricContext

aten = torch.ops.aten


def _ops(names: dict[str, Any]) -> dict[Any, Any]:
    """``{aten.<name>: value}`` for the operators this torch version has."""
    return {getattr(aten, name): value for name, value in names.items() if hasattr(aten, name)}


# Which positional arguments of an operator may be a weight (checked in order).
_WEIGHT_ARGUMENTS: dict[Any, tuple[int, ...]] = _ops({
    "convolution": (1,),
    "_convolution": (1,),
    "cudnn_convolution": (1,),
    "convolution_overrideable": (1,),
    "_slow_conv2d_forward": (1,),
    "mm": (1, 0),
    "addmm": (2, 1),
    "bmm": (1, 0),
    "baddbmm": (2, 1),
    "_scaled_mm": (1, 0),
})
_ATTENTION_NAME = re.compile(r"attention", re.IGNORECASE)
_COMPUTE_NAME = re.compile(
    r"conv|mm|matmul|attention|linear|einsum|rnn|lstm|gru|bilinear", re.IGNORECASE
)
# A fused operator whose weight argument can only be a weight (not an activation).
_WEIGHT_ONLY_ARGUMENT = re.compile(r"conv", re.IGNORECASE)
_PARAMETRIZATION = re.compile(r"\.parametrizations\.[^.]+$")
_BACKWARD_NAME = re.compile(r"backward")


def _cpu_flash_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a fused attention kernel from the shapes ``(B, H, L, D)`` of Q, K, V."""
    return flop_counter.sdpa_flop_count(query, key, value)


# Attention kernels torch's registry lacks; their first three arguments are Q, K, V.
_EXTRA_FORMULAS: dict[Any, Callable[..., int]] = _ops({
    "_scaled_dot_product_flash_attention_for_cpu": flop_counter.shape_wrapper(
        _cpu_flash_attention_flops
    ),
    "_scaled_dot_product_fused_attention_overrideable": flop_counter.shape_wrapper(
        _cpu_flash_attention_flops
    ),
})


def _formula(packet: Any) -> Callable[..., int] | None:
    if packet in _EXTRA_FORMULAS:
        return _EXTRA_FORMULAS[packet]
    return flop_counter.flop_registry.get(packet)


def _recurrent_tokens(sequence: torch.Tensor) -> int:
    """Steps x batch of a recurrent kernel's input ``(T, N, I)``, ``(N, T, I)`` or packed."""
    return sequence.numel() // sequence.shape[-1] if sequence.dim() and sequence.shape[-1] else 0


def _onednn_rnn_products(args: Sequence[Any]) -> list[tuple[torch.Tensor, int]]:
    """``mkldnn_rnn_layer(input, w_ih, w_hh, b_ih, b_hh, ...)``: one layer, one direction."""
    tokens = _recurrent_tokens(args[0])
    return [(weight, tokens * weight.numel()) for weight in args[1:3]]


def _flat_rnn_products(args: Sequence[Any]) -> list[tuple[torch.Tensor, int]]:
    """``_cudnn_rnn``/``miopen_rnn(input, weights, ...)``: every layer and direction at once.

    ``weights`` holds per layer and direction ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``;
    every layer runs over the same steps x batch, so each weight matrix (2-D)
    takes part in ``tokens x entries`` products.
    """
    tokens = _recurrent_tokens(args[0])
    return [(weight, tokens * weight.numel()) for weight in args[1] if weight.dim() == 2]


# Fused recurrent kernels: (weight operand, MACs) for every weight matrix they multiply by.
_RECURRENT_PRODUCTS: dict[Any, Callable[[Sequence[Any]], list[tuple[torch.Tensor, int]]]] = _ops({
    "mkldnn_rnn_layer": _onednn_rnn_products,
    "_cudnn_rnn": _flat_rnn_products,
    "miopen_rnn": _flat_rnn_products,
})


def _layer_of(parameter: str) -> str:
    """The layer owning ``parameter``: the parametrized module for a parametrization."""
    owner = parameter.rpartition(".")[0]
    return _PARAMETRIZATION.sub("", owner)


def _op_kind(packet: Any) -> str:
    name = packet.__name__
    if packet in _RECURRENT_PRODUCTS:
        return "recurrent"
    if _ATTENTION_NAME.search(name):
        return "attention"
    if "conv" in name:
        return "convolution"
    return "matmul"


@dataclass(frozen=True)
class LayerFlops:
    """MACs of one (layer, parameter, operator kind), summed over its calls.

    ``layer`` is the module owning ``parameter``, or for an operator without a
    weight the innermost module that ran it (``""`` is the model itself).
    ``weight_density`` is nonzero / total entries of the weight operand as last
    multiplied (``parameter``, its slice, or its masked product; ``None`` when the
    operator has no weight).
    """

    layer: str
    parameter: str | None
    op: str
    calls: int
    macs: int
    nonzero_macs: int
    weight_density: float | None


@dataclass(frozen=True)
class FlopReport:
    """MACs of one forward pass of a batch of ``batch_size`` inputs."""

    macs: int
    nonzero_macs: int
    batch_size: int
    layers: tuple[LayerFlops, ...]
    uncounted_ops: tuple[str, ...] = ()

    @property
    def macs_per_example(self) -> float:
        """Dense MACs for one input."""
        return self.macs / self.batch_size

    @property
    def nonzero_macs_per_example(self) -> float:
        """MACs of nonzero weights (plus weightless operators) for one input."""
        return self.nonzero_macs / self.batch_size

    @property
    def theoretical_speedup(self) -> float:
        """Dense MACs / nonzero MACs (1.0 for a model without MACs)."""
        return self.macs / self.nonzero_macs if self.nonzero_macs else 1.0

    def layer_rows(self) -> list[dict[str, Any]]:
        """The per-layer breakdown as JSON-friendly dicts."""
        return [asdict(row) for row in self.layers]


class _WeightIndex:
    """Finds the parameter a tensor is, or is a view, copy or computation of.

    A tensor is *state* when it is computed inside ``forward`` from the model's
    parameters, buffers and constants only (never from the input); its lineage
    names the parameter it was computed from (``None`` for buffers and constants).
    """

    def __init__(self, model: nn.Module) -> None:
        self._params = dict(model.named_parameters())
        self._by_storage: dict[int, list[tuple[int, int, str]]] = {}
        for name, param in self._params.items():
            if param.device.type != "meta":
                offset = param.storage_offset()
                self._by_storage.setdefault(param.untyped_storage().data_ptr(), []).append(
                    (offset, offset + param.numel(), name)
                )
        self._by_identity: dict[int, tuple[weakref.ref, str | None]] = {
            id(param): (weakref.ref(param), name) for name, param in self._params.items()
        }
        for buffer in model.buffers():
            self._by_identity.setdefault(id(buffer), (weakref.ref(buffer), None))
        self._counts: dict[str, tuple[int, int]] = {}

    def _identity(self, tensor: torch.Tensor) -> tuple[bool, str | None]:
        entry = self._by_identity.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return True, entry[1]
        return False, None

    def lineage(self, tensor: Any) -> tuple[bool, str | None]:
        """Whether ``tensor`` is model state, and the parameter it derives from."""
        if not isinstance(tensor, torch.Tensor):
            return False, None
        known, name = self._identity(tensor)
        if known:
            return True, name
        if tensor.device.type == "meta":
            return False, None
        offset = tensor.storage_offset()
        for start, end, name in self._by_storage.get(tensor.untyped_storage().data_ptr(), ()):
            if start <= offset < end:
                return True, name
        return False, None

    def find(self, tensor: Any) -> str | None:
        """Name of the parameter ``tensor`` is derived from, or ``None``."""
        return self.lineage(tensor)[1]

    def note_computed(self, inputs: Sequence[torch.Tensor], outputs: Sequence[Any]) -> None:
        """Mark ``outputs`` as state when every tensor of ``inputs`` is.

        The parameter named is that of an input of the same number of entries as
        the output (a view, copy, mask product, parametrization), else of the
        largest named input.
        """
        named: list[tuple[int, str]] = []
        for tensor in inputs:
            is_state, name = self.lineage(tensor)
            if not is_state:
                return
            if name is not None:
                named.append((tensor.numel(), name))
        for output in outputs:
            if isinstance(output, torch.Tensor) and not self._identity(output)[0]:
                same = [name for numel, name in named if numel == output.numel()]
                name = same[0] if same else max(named)[1] if named else None
                self._by_identity[id(output)] = (weakref.ref(output), name)

    def counts(self, name: str) -> tuple[int, int]:
        """Nonzero and total entries of parameter ``name`` (counted once)."""
        if name not in self._counts:
            self._counts[name] = _nonzero_and_total(self._params[name])
        return self._counts[name]

    def operand_counts(self, name: str, operand: torch.Tensor) -> tuple[int, int]:
        """Nonzero and total entries of ``operand``, a view, slice, copy or product of ``name``."""
        param = self._params[name]
        whole_view = (
            operand.device == param.device
            and operand.device.type != "meta"
            and operand.numel() == param.numel()
            and operand.storage_offset() == param.storage_offset()
            and operand.untyped_storage().data_ptr() == param.untyped_storage().data_ptr()
        )
        if operand is param or whole_view:
            return self.counts(name)
        return _nonzero_and_total(operand)


def _nonzero_and_total(tensor: torch.Tensor) -> tuple[int, int]:
    """Nonzero and total entries of the weight operand as multiplied (meta: all nonzero)."""
    total = tensor.numel()
    return (total if tensor.device.type == "meta" else int(torch.count_nonzero(tensor))), total


class _ModuleStack:
    """The names of the modules currently running, innermost last."""

    def __init__(self, model: nn.Module) -> None:
        self.names: list[str] = []
        self._handles = []
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name: str):
        def hook(_module, _args):
            self.names.append(name)
        return hook

    def _leave(self, name: str):
        def hook(_module, _args, _output):
            if self.names and self.names[-1] == name:
                self.names.pop()
        return hook

    @property
    def current(self) -> str:
        return self.names[-1] if self.names else ""

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class _MacCounter(TorchDispatchMode):
    """Dispatch mode that adds up MACs per (layer, parameter, operator kind)."""

    def __init__(self, weights: _WeightIndex, modules: _ModuleStack) -> None:
        super().__init__()
        self.weights = weights
        self.modules = modules
        # (layer, parameter, kind) -> [calls, macs, nonzero macs, operand nonzero, operand total]
        self.rows: dict[tuple[str, str | None, str], list[int]] = {}
        self.uncounted: dict[str, int] = {}

    def _note_uncounted(self, label: str) -> None:
        self.uncounted[label] = self.uncounted.get(label, 0) + 1

    def _add(self, packet: Any, parameter: str | None, operand: Any, macs: int) -> None:
        if parameter is not None:
            layer = _layer_of(parameter)
            nonzero, total = self.weights.operand_counts(parameter, operand)
        elif operand is not None:  # a weight that is no parameter's: its own zeros count
            layer = self.modules.current
            nonzero, total = _nonzero_and_total(operand)
        else:
            layer, nonzero, total = self.modules.current, 0, 0
        nonzero_macs = macs * nonzero // total if total else macs
        row = self.rows.setdefault((layer, parameter, _op_kind(packet)), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += macs
        row[2] += nonzero_macs
        row[3], row[4] = nonzero, total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        leaves = tree_flatten((args, kwargs))[0]
        inputs = [item for item in leaves if isinstance(item, torch.Tensor)]
        self.weights.note_computed(inputs, tree_flatten(out)[0])
        if packet in _RECURRENT_PRODUCTS:
            for weight, macs in _RECURRENT_PRODUCTS[packet](args):
                parameter = self.weights.find(weight)
                if parameter is None:
                    self._note_uncounted(f"{packet} (weight not traced to a parameter)")
                self._add(packet, parameter, weight, macs)
            return out
        formula = _formula(packet)
        if formula is None:
            name = packet.__name__
            if _COMPUTE_NAME.search(name) and not _BACKWARD_NAME.search(name):
                self._note_uncounted(str(packet))
            return out
        macs = formula(*args, **kwargs, out_val=out) // 2
        parameter, operand = None, None
        for position in _WEIGHT_ARGUMENTS.get(packet, ()):
            if position < len(args):
                parameter = self.weights.find(args[position])
                if parameter is not None:
                    operand = args[position]
                    break
        if parameter is None and _WEIGHT_ONLY_ARGUMENT.search(packet.__name__):
            operand = args[_WEIGHT_ARGUMENTS[packet][0]]
            self._note_uncounted(f"{packet} (weight not traced to a parameter)")
        self._add(packet, parameter, operand, macs)
        return out


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode, no autograd, MultiheadAttention's fused path off; all restored after."""
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)


def _batch_size(example_input: torch.Tensor | Sequence[Any]) -> int:
    first = example_input if isinstance(example_input, torch.Tensor) else example_input[0]
    return int(first.shape[0]) if first.dim() else 1


def count_flops(model: nn.Module, example_input: torch.Tensor | Sequence[Any]) -> FlopReport:
    """Count the MACs of one forward pass of ``example_input`` through ``model``.

    ``example_input`` is a batch (its first dimension is the batch size) or a
    tuple of positional arguments. The model runs once, in eval mode under
    ``torch.no_grad``; its training flag is restored afterwards. Works on any
    device, ``meta`` included (then every weight counts as dense).
    """
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    weights = _WeightIndex(model)
    modules = _ModuleStack(model)
    counter = _MacCounter(weights, modules)
    try:
        with _inference(model), counter:
            model(*inputs)
    finally:
        modules.close()
    layers = tuple(
        LayerFlops(
            layer=layer,
            parameter=parameter,
            op=op,
            calls=calls,
            macs=macs,
            nonzero_macs=nonzero_macs,
            weight_density=nonzero / total if total else None,
        )
        for (layer, parameter, op), (calls, macs, nonzero_macs, nonzero, total) in (
            counter.rows.items()
        )
    )
    return FlopReport(
        macs=sum(row.macs for row in layers),
        nonzero_macs=sum(row.nonzero_macs for row in layers),
        batch_size=_batch_size(inputs[0]) if inputs else 1,
        layers=layers,
        uncounted_ops=tuple(f"{op} x{count}" for op, count in sorted(counter.uncounted.items())),
    )


def compute(context: MetricContext, params: FlopsParameters) -> dict[str, Any]:
    """The ``flops`` metric: MACs per example, dense and of nonzero weights, and speedup.

    Keys: ``macs`` and ``nonzero_macs`` (multiply-adds for one input),
    ``theoretical_speedup`` (dense / nonzero), ``uncounted_ops`` (count of
    compute operators without a formula or with a weight not traced to a
    parameter; 0 means everything was counted and attributed), and
    ``layers`` (per-layer rows, MACs for one input) unless ``per_layer`` is false.
    """
    report = count_flops(context.model, context.example_input)
    result: dict[str, Any] = {
        "macs": report.macs_per_example,
        "nonzero_macs": report.nonzero_macs_per_example,
        "theoretical_speedup": report.theoretical_speedup,
        "uncounted_ops": len(report.uncounted_ops),
    }
    if params.per_layer:
        scale = report.batch_size
        result["layers"] = [
            {**row, "macs": row["macs"] / scale, "nonzero_macs": row["nonzero_macs"] / scale}
            for row in report.layer_rows()
        ]
    return result

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
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from shrinkbench_core.pruning.channels import attention, hf_attention
from shrinkbench_core.pruning.channels.graph import (
    ChannelAnalysis,
    ChannelGroup,
    PadSite,
    TiedChannel,
    TracedLayer,
    TraceError,
    Unsupported,
    _MaskEditor,
    pad_nodes,
    rewrite_pads,
    without_gc,
)
from shrinkbench_core.pruning.channels.rules import _Propagator
from shrinkbench_core.pruning.masks import Masks

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


@without_gc
def analyze_channels(
    model: nn.Module, example_input: Any, *, gqa: str = "kv_groups"
) -> ChannelAnalysis:
    """Trace ``model`` with torch.fx and follow every channel (see the module docstring).

    ``example_input`` is one batch (a tensor, or a tuple of the forward's
    arguments) on the model's device. The model is run once in eval mode and
    is not modified. A model holding Hugging Face transformers is analysed by its
    recognised blocks instead (:mod:`.channels.hf_attention`; ``gqa``: how
    grouped-query attention loses heads, ``"kv_groups"`` or ``"query_heads"``).
    """
    hf_analysis = hf_attention.analyze_hf(model, gqa)
    if hf_analysis is not None:
        return hf_analysis
    try:
        graph_module = attention.trace(model)
    except Exception as error:  # fx raises many types for untraceable code
        raise TraceError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}). "
            "Structured shrinking needs a forward without data-dependent Python control flow."
        ) from error
    with eval_mode(model), torch.no_grad():
        ShapeProp(graph_module).propagate(*as_args(example_input))
    analysis = _Propagator(graph_module, model).run()
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


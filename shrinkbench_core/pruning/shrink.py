"""Physical channel removal: turn channel masks into a smaller dense model.

:func:`shrink_model` deep-copies the model, applies the completed masks
(:func:`~shrinkbench_core.pruning.structured.complete_channel_masks`) and then
rebuilds, in place on the copy, every convolution, linear and batch-norm layer
with the kept channels only. The copy keeps its class and its ``forward``, so it
pickles, saves and loads like the original. The one exception: a submodule whose
forward zero-pads channels (the option-A shortcut of CIFAR ResNets) is replaced
by an fx GraphModule with the new pad amounts when channels around it go. The
outputs equal those of the masked model (checked on the example input unless
``verify=False``).

:func:`structured_speedups` measures what the removal buys: theoretical speedup
(multiply-adds), and measured latency of the masked and the shrunk model, side
by side.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkbench_core.metrics.flops import count_flops
from shrinkbench_core.metrics.latency import interleaved_times
from shrinkbench_core.pruning.channels import hf_attention, hf_stream, vit
from shrinkbench_core.pruning.channels.attention import AttentionSite, resize_heads, resize_mha
from shrinkbench_core.pruning.masks import Masks, apply_masks
from shrinkbench_core.pruning.structured import (
    ChannelAnalysis,
    TracedLayer,
    Unsupported,
    analyze_channels,
    as_args,
    eval_mode,
    rewrite_pads,
)

__all__ = [
    "LayerChange",
    "ShrinkResult",
    "measure_latencies",
    "resize_like",
    "shrink_model",
    "structured_speedups",
]


@dataclass(frozen=True)
class LayerChange:
    """Channels of one layer before and after shrinking."""

    name: str
    kind: str  # "conv", "linear" or "norm"
    in_before: int
    in_after: int
    out_before: int
    out_after: int


@dataclass
class ShrinkResult:
    """A physically smaller model and what happened to each layer.

    ``masks`` are the completed masks restricted to the kept channels (keyed like
    the shrunk model's parameters), for fine-tuning that keeps any remaining
    unstructured sparsity. ``unsupported`` lists patterns that kept channels
    which the masks asked to remove. ``max_abs_diff`` is the largest output
    difference from the masked model on the example input (None if not verified).
    ``channel_config`` gives the new sizes of each resized layer (and the new
    amounts of rewritten pads), for :func:`resize_like`. ``rewritten`` names
    submodules replaced by fx GraphModules because a channel pad in their forward
    changed amounts.
    """

    model: nn.Module
    masks: Masks
    layers: list[LayerChange]
    unsupported: list[Unsupported]
    params_before: int
    params_after: int
    max_abs_diff: float | None = None
    channel_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)

    @property
    def compression(self) -> float:
        """Parameters before / parameters after."""
        return self.params_before / max(self.params_after, 1)

    def summary(self) -> str:
        """Human-readable report: changed layers, then unsupported patterns."""
        lines = [
            f"parameters {self.params_before} -> {self.params_after} ({self.compression:.2f}x)"
        ]
        for change in self.layers:
            if (change.in_before, change.out_before) != (change.in_after, change.out_after):
                lines.append(
                    f"  {change.name:40s} {change.kind:6s} in {change.in_before}->"
                    f"{change.in_after}  out {change.out_before}->{change.out_after}"
                )
        lines += [f"  rewritten as fx GraphModule: {name}" for name in self.rewritten]
        lines += [f"  unsupported: {entry}" for entry in self.unsupported]
        return "\n".join(lines)


def shrink_model(
    model: nn.Module,
    masks: Masks,
    example_input: Any,
    *,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    analysis: ChannelAnalysis | None = None,
) -> ShrinkResult:
    """Remove every fully masked tied channel from a copy of ``model``.

    ``masks`` are weight masks (True = keep) in which pruned output channels
    are entire False rows; they are completed first (biases, batch norms,
    consumer columns). A tied channel is removed only when all its producers
    mask it and no unsupported pattern pins it; other masked entries stay as
    zeros. ``model`` and ``masks`` are not modified. With ``verify`` the shrunk
    model's output is compared with the masked model's on ``example_input`` in
    eval mode, and a mismatch raises ``RuntimeError`` (a bug, never expected).
    """
    analysis = analysis or analyze_channels(model, example_input)
    completed, removed, grouped_reports = analysis.plan(model, masks)

    shrunk = copy.deepcopy(model)
    apply_masks(shrunk, completed)
    reference = _forward(shrunk, example_input) if verify else None

    params_before = sum(p.numel() for p in model.parameters())
    new_masks = dict(completed)
    changes, config = [], {}
    for layer in analysis.layers.values():
        keep_out = [r for r, e in enumerate(layer.rows) if analysis.find(e) not in removed]
        inputs = layer.inputs or []
        keep_in = [i for i, p in enumerate(inputs) if analysis.root_of(p) not in removed]
        if len(keep_out) == len(layer.rows) and len(keep_in) == len(inputs):
            outputs = len(layer.rows) if layer.is_producer else len(inputs)
            changes.append(
                LayerChange(layer.name, layer.kind, len(inputs), len(inputs), outputs, outputs)
            )
            continue
        if layer.kind == "mha":
            resize_mha(shrunk, layer.name, keep_out, keep_in)
            config[layer.name] = {"mha": {"rows": len(keep_out), "in": len(keep_in)}}
            changes.append(LayerChange(layer.name, "mha", len(inputs), len(keep_in),
                                       len(layer.rows), len(keep_out)))  # fmt: skip
            rows, cols = torch.tensor(keep_out), torch.tensor(keep_in)
            slicers = {
                "in_proj_weight": lambda t, r=rows, c=cols: t[r.to(t.device)][:, c.to(t.device)],
                "in_proj_bias": lambda t, r=rows: t[r.to(t.device)],
            }
        elif layer.kind == "hf_embedding":  # columns of a Hugging Face embedding
            change, slicers, config[layer.name] = hf_stream.resize_embedding(
                shrunk, layer, keep_in, analysis
            )
            changes.append(change)
        elif layer.kind in ("layernorm", "scale"):
            change, slicers = _resize_per_channel(shrunk, layer, keep_in)
            changes.append(change)
            config[layer.name] = {layer.kind: len(keep_in), "full_width": len(inputs)}
        else:
            module = shrunk.get_submodule(layer.name)
            change, slicers = _resize(layer, module, keep_in, keep_out)
            changes.append(change)
            config[layer.name] = _config_of(module)
        for suffix, slicer in slicers.items():
            name = suffix if suffix.startswith(f"{layer.name}.") else f"{layer.name}.{suffix}"
            if layer.kind == "scale":
                name = layer.weight_name
            if name in new_masks:
                new_masks[name] = slicer(new_masks[name])

    for site in analysis.attention:
        kept = [h for h, element in enumerate(site.heads) if analysis.find(element) not in removed]
        if site.kind == "swin" and len(kept) < len(site.heads):
            resize_heads(shrunk, site, kept)
            config[site.module] = {"heads": len(kept)}
        elif site.kind == "hf" and len(kept) < len(site.heads):
            config[site.module] = hf_attention.resize_heads(shrunk, site, kept)
        elif site.kind == "maxvit":
            from shrinkbench_core.pruning.channels import maxvit

            if entry := maxvit.shrink_site(shrunk, site, kept):
                config[site.module] = entry
    if any(site.kind == "hf" for site in analysis.attention):
        hf_attention.update_config(shrunk)
    stream_changes, stream_config = vit.shrink_stream(shrunk, analysis, removed, new_masks)
    changes += stream_changes  # a ViT's class token, position embedding, hidden_dim
    config.update(stream_config)

    pad_edits = analysis.pad_amounts(removed)
    rewritten = rewrite_pads(shrunk, pad_edits)
    for name, edits in pad_edits.items():
        config[name] = {"pads": [list(edit) for edit in edits]}

    result = ShrinkResult(
        model=shrunk,
        masks=new_masks,
        layers=changes,
        unsupported=analysis.unsupported() + grouped_reports,
        params_before=params_before,
        params_after=sum(p.numel() for p in shrunk.parameters()),
        channel_config=config,
        rewritten=rewritten,
    )
    if reference is not None:
        output = _forward(shrunk, example_input)
        result.max_abs_diff = _max_abs_diff(reference, output, rtol, atol)
    return result


def resize_like(model: nn.Module, channel_config: dict[str, dict[str, Any]]) -> nn.Module:
    """Resize the layers of a freshly built ``model`` to a shrunk model's ``channel_config``.

    After this, ``model.load_state_dict(shrunk.state_dict())`` works, so a
    shrunk model can be stored as its state dict plus ``ShrinkResult.channel_config``.
    Weights of resized layers are uninitialised (zeros) until loaded. Returns ``model``.
    """
    for name, sizes in channel_config.items():
        if "hf_attention" in sizes or "hf_embedding" in sizes:
            hf_attention.resize_like(model, name, sizes)
            continue
        if "stream" in sizes or "width" in sizes:
            vit.resize_like(model, name, sizes)
            continue
        if "maxvit_heads" in sizes:
            from shrinkbench_core.pruning.channels.maxvit import resize_like as maxvit_like

            maxvit_like(model, name, sizes)
            continue
        if "scale" in sizes or "layernorm" in sizes or "mha" in sizes or "heads" in sizes:
            _resize_like_extra(model, name, sizes)
            continue
        module = model.get_submodule(name)
        if "pads" in sizes:
            rewrite_pads(model, {name: [tuple(edit) for edit in sizes["pads"]]})
        elif isinstance(module, nn.modules.conv._ConvNd):
            module.in_channels, module.out_channels = sizes["in"], sizes["out"]
            module.groups = sizes["groups"]
            shape = (sizes["out"], sizes["in"] // sizes["groups"], *module.weight.shape[2:])
            _set_param(module, "weight", module.weight.new_zeros(shape))
            if module.bias is not None:
                _set_param(module, "bias", module.bias.new_zeros(sizes["out"]))
        elif isinstance(module, nn.Linear):
            module.in_features, module.out_features = sizes["in"], sizes["out"]
            _set_param(module, "weight", module.weight.new_zeros(sizes["out"], sizes["in"]))
            if module.bias is not None:
                _set_param(module, "bias", module.bias.new_zeros(sizes["out"]))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            _resize_norm(module, lambda t, n=sizes["out"]: t.new_zeros(n) if t.dim() else t)
    return model


def _resize_like_extra(model: nn.Module, name: str, sizes: dict[str, Any]) -> None:
    """:func:`resize_like` for attention heads, LayerNorms over channels and scale vectors."""
    if "mha" in sizes:
        resize_mha(model, name, list(range(sizes["mha"]["rows"])), list(range(sizes["mha"]["in"])))
    elif "heads" in sizes:
        resize_heads(model, AttentionSite(name, "swin", []), list(range(sizes["heads"])))
    elif "scale" in sizes:
        owner_name, _, attribute = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        old = getattr(owner, attribute)
        _set_param(owner, attribute, old.new_zeros(sizes["scale"], *old.shape[1:]))
    else:
        from shrinkbench_core.pruning.channels.norms import padded_class

        module = model.get_submodule(name)
        for attribute in ("weight", "bias"):
            if getattr(module, attribute, None) is not None:
                _set_param(module, attribute, getattr(module, attribute).new_zeros(
                    sizes["layernorm"]))  # fmt: skip
        module.normalized_shape = (sizes["layernorm"],)
        module.__class__ = padded_class(module)
        module.full_width = sizes["full_width"]


# -- resizing one layer ------------------------------------------------------------------

Slicer = Callable[[torch.Tensor], torch.Tensor]


def _resize(
    layer: TracedLayer, module: nn.Module, keep_in: list[int], keep_out: list[int]
) -> tuple[LayerChange, dict[str, Slicer]]:
    """Rebuild ``module`` with the kept channels; returns the change and per-tensor slicers."""
    if layer.kind == "norm":
        before = module.num_features
        index = torch.tensor(keep_in, dtype=torch.long)
        slicer: Slicer = lambda t: t.index_select(0, index.to(t.device))  # noqa: E731
        _resize_norm(module, lambda t: slicer(t) if t.dim() else t)
        change = LayerChange(layer.name, "norm", before, len(keep_in), before, len(keep_in))
        return change, {"weight": slicer, "bias": slicer}
    if layer.kind == "linear":
        before_in, before_out = module.in_features, module.out_features
        rows, cols = torch.tensor(keep_out), torch.tensor(keep_in)
        weight_slicer: Slicer = lambda t: t[rows.to(t.device)][:, cols.to(t.device)]  # noqa: E731
        module.in_features, module.out_features = len(keep_in), len(keep_out)
        change = LayerChange(layer.name, "linear", before_in, len(keep_in), before_out,
                             len(keep_out))  # fmt: skip
    else:
        before_in, before_out = module.in_channels, module.out_channels
        weight_slicer, groups = _conv_slicer(module, keep_in, keep_out)
        module.in_channels, module.out_channels, module.groups = len(keep_in), len(keep_out), groups
        change = LayerChange(layer.name, "conv", before_in, len(keep_in), before_out,
                             len(keep_out))  # fmt: skip
    row_index = torch.tensor(keep_out, dtype=torch.long)
    bias_slicer: Slicer = lambda t: t.index_select(0, row_index.to(t.device))  # noqa: E731
    _set_param(module, "weight", weight_slicer(module.weight.detach()))
    if module.bias is not None:
        _set_param(module, "bias", bias_slicer(module.bias.detach()))
    return change, {"weight": weight_slicer, "bias": bias_slicer}


def _resize_per_channel(
    model: nn.Module, layer: TracedLayer, keep: list[int]
) -> tuple[LayerChange, dict[str, Slicer]]:
    """Slice a LayerNorm over channels (made a padded LayerNorm that still counts the removed
    channels in its statistics) or a per-channel scale parameter (dim 0)."""
    index = torch.tensor(keep, dtype=torch.long)
    slicer: Slicer = lambda t: t.index_select(0, index.to(t.device))  # noqa: E731
    width = len(layer.inputs or [])
    change = LayerChange(layer.name, layer.kind, width, len(keep), width, len(keep))
    if layer.kind == "scale":
        owner_name, _, attribute = layer.weight_name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        _set_param(owner, attribute, slicer(getattr(owner, attribute).detach()))
        return change, {"weight": slicer}
    from shrinkbench_core.pruning.channels.norms import padded_class

    module = model.get_submodule(layer.name)
    full_width = getattr(module, "full_width", width)
    for name in ("weight", "bias"):
        if getattr(module, name, None) is not None:
            _set_param(module, name, slicer(getattr(module, name).detach()))
    module.normalized_shape = (len(keep),)
    module.__class__ = padded_class(module)
    module.full_width = full_width
    return change, {"weight": slicer, "bias": slicer}


def _conv_slicer(module: nn.Module, keep_in: list[int], keep_out: list[int]) -> tuple[Slicer, int]:
    """Weight slicer of a (possibly grouped) convolution and its new number of groups."""
    rows = torch.tensor(keep_out, dtype=torch.long)
    if module.groups == 1:
        cols = torch.tensor(keep_in, dtype=torch.long)

        def dense(tensor: torch.Tensor) -> torch.Tensor:
            picked = tensor.index_select(0, rows.to(tensor.device))
            return picked.index_select(1, cols.to(tensor.device))

        return dense, 1
    per_in = module.in_channels // module.groups
    per_out = module.out_channels // module.groups
    rows_per_group = Counter(row // per_out for row in keep_out)
    kept_groups = sorted(rows_per_group)
    local_inputs: dict[int, list[int]] = {}
    for channel in keep_in:
        local_inputs.setdefault(channel // per_in, []).append(channel % per_in)
    # Groups keep equal counts (checked by the analysis): one row of columns per group.
    columns = torch.tensor([local_inputs[group] for group in kept_groups], dtype=torch.long)
    counts = torch.tensor([rows_per_group[group] for group in kept_groups])
    columns = columns.repeat_interleave(counts, dim=0)

    def grouped(tensor: torch.Tensor) -> torch.Tensor:
        picked = tensor.index_select(0, rows.to(tensor.device))
        index = columns.to(tensor.device).reshape(*columns.shape, *([1] * (tensor.dim() - 2)))
        return picked.gather(1, index.expand(-1, -1, *tensor.shape[2:]))

    return grouped, len(kept_groups)


def _resize_norm(module: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
    for name in ("weight", "bias"):
        if getattr(module, name, None) is not None:
            _set_param(module, name, transform(getattr(module, name).detach()))
    for name in ("running_mean", "running_var"):
        if getattr(module, name, None) is not None:
            setattr(module, name, transform(getattr(module, name)))
    if module.weight is not None:
        module.num_features = module.weight.shape[0]
    elif module.running_mean is not None:
        module.num_features = module.running_mean.shape[0]


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def _config_of(module: nn.Module) -> dict[str, int]:
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"in": module.in_channels, "out": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.Linear):
        return {"in": module.in_features, "out": module.out_features}
    return {"out": module.num_features}


# -- applying, running, comparing --------------------------------------------------------


def _forward(model: nn.Module, example_input: Any) -> Any:
    with eval_mode(model), torch.no_grad():
        return model(*as_args(example_input))


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _leaves(item)]
    return []


def _max_abs_diff(reference: Any, output: Any, rtol: float, atol: float) -> float:
    expected, actual = _leaves(reference), _leaves(output)
    worst = 0.0
    for a, b in zip(expected, actual, strict=True):
        if a.shape != b.shape:
            raise RuntimeError(f"shrunk model output shape {tuple(b.shape)} differs from "
                               f"masked model output shape {tuple(a.shape)}")  # fmt: skip
        diff = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
        scale = float(a.float().abs().max()) if a.numel() else 0.0
        if diff > atol + rtol * scale:
            raise RuntimeError(
                f"shrunk model output differs from the masked model by {diff:.3g} "
                f"(output scale {scale:.3g}); please report this model as a bug"
            )
        worst = max(worst, diff)
    return worst


# -- speedups ----------------------------------------------------------------------------


_STATISTICS: dict[str, Callable[[list[float]], float]] = {
    "median": statistics.median,
    "min": min,
}


def measure_latencies(
    models: list[nn.Module],
    batch: Any,
    repeats: int = 10,
    warmup: int = 2,
    statistic: str = "median",
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Time in seconds of one forward of ``batch`` through each model.

    Models are timed in turns by
    :func:`~shrinkbench_core.metrics.latency.interleaved_times` (round ``r`` times
    each model once), so a change of machine load affects all of them alike. ``statistic``
    reduces the ``repeats`` samples: ``"median"``, or ``"min"`` (the best estimate
    of the uncontended time on a shared machine, as :mod:`timeit` advises).
    ``clock`` is wall time by default; ``time.process_time`` measures this
    process's CPU time instead, which with one torch thread is the latency on a
    core of its own even when other processes compete for the machine.
    """
    if statistic not in _STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(_STATISTICS)}, got {statistic!r}")
    times = interleaved_times(models, as_args(batch), warmup, repeats, clock)
    return [_STATISTICS[statistic](samples) for samples in times]


def structured_speedups(
    model: nn.Module,
    masks: Masks,
    example_batch: Any,
    repeats: int = 10,
    warmup: int = 2,
    shrunk: ShrinkResult | None = None,
    statistic: str = "median",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Theoretical and measured speedups of the masked and the shrunk model, side by side.

    ``model`` is the dense model, ``masks`` its channel masks, ``example_batch``
    the batch latency is measured on (on the model's device). Returns
    ``theoretical_speedup`` (dense / nonzero multiply-adds of the masked model,
    counted by :func:`~shrinkbench_core.metrics.flops.count_flops`),
    ``masked_speedup`` and ``shrunk_speedup`` (dense latency / latency, the
    ``statistic`` of ``repeats`` interleaved runs timed with ``clock``, see
    :func:`measure_latencies`),
    ``shrunk_theoretical_speedup`` (dense / shrunk multiply-adds), the latencies
    in seconds, the multiply-adds per example and parameter counts. Pass
    ``shrunk`` to reuse a :func:`shrink_model` result.
    """
    args = as_args(example_batch)
    example = tuple(a[:1] for a in args)
    example = example[0] if len(example) == 1 else example
    analysis = analyze_channels(model, example)
    result = shrunk or shrink_model(model, masks, example, analysis=analysis)
    completed = analysis.complete(model, masks)
    masked = copy.deepcopy(model)
    apply_masks(masked, completed)

    dense_macs = count_flops(model, example).macs
    masked_macs = count_flops(masked, example).nonzero_macs
    shrunk_macs = count_flops(result.model, example).macs
    dense_latency, masked_latency, shrunk_latency = measure_latencies(
        [model, masked, result.model], example_batch, repeats, warmup, statistic, clock
    )
    return {
        "theoretical_speedup": dense_macs / max(masked_macs, 1),
        "shrunk_theoretical_speedup": dense_macs / max(shrunk_macs, 1),
        "masked_speedup": dense_latency / masked_latency,
        "shrunk_speedup": dense_latency / shrunk_latency,
        "dense_latency_s": dense_latency,
        "masked_latency_s": masked_latency,
        "shrunk_latency_s": shrunk_latency,
        "dense_macs": dense_macs,
        "masked_macs": masked_macs,
        "shrunk_macs": shrunk_macs,
        "params_before": result.params_before,
        "params_after": result.params_after,
        "batch_size": int(args[0].shape[0]),
        "unsupported": [str(entry) for entry in result.unsupported],
    }

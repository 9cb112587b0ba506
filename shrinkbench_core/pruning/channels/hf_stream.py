"""The residual stream of a Hugging Face decoder (its embedding width) as one tied group.

Channel ``c`` of the stream is row ``c`` of every layer that writes into it (each
block's attention output projection and MLP down projection, with their biases),
column ``c`` of every layer that reads it (q/k/v, gate/up or fc1, the LM head) and of
every embedding that adds into it (token and learned position embeddings), and entry
``c`` of every norm over it. It can be removed when every writer's row is masked: the
masked model then carries an exact zero in that channel from the embeddings to the
LM head, and the shrunk norms keep counting it as a zero in their statistics
(:class:`PaddedRMSNorm` here, :class:`~.norms.PaddedLayerNorm` for LayerNorm), so
the outputs stay equal.

It is followed only for the families whose forward is known to touch the stream
through these modules alone (:data:`STREAM_FAMILIES`) and only when every parameter
of the model with a dimension of the stream's width belongs to one of them (OPT's
``project_in``/``project_out`` do not, for example); otherwise the stream is kept
whole and reported. A config's ``hidden_size`` is left as it was: the shrunk norms
still normalize over the full width, so a model built from a smaller config would
not be the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from shrinkbench_core.pruning.channels.graph import TracedLayer

if TYPE_CHECKING:
    from shrinkbench_core.pruning.channels.hf_attention import HFChannelAnalysis, _Builder

__all__ = ["STREAM_FAMILIES", "PaddedRMSNorm", "follow", "is_rms_norm", "resize_embedding"]

STREAM_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "opt", "gpt2")
"""``config.model_type`` of the models whose embedding width is followed."""

_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "PaddedRMSNorm")


def is_rms_norm(module: nn.Module | None) -> bool:
    """An RMSNorm of the form ``weight * x / rms(x)`` (LLaMA, Mistral, Qwen2, Qwen3)."""
    return type(module).__name__ in _RMS_NORMS


class PaddedRMSNorm(nn.Module):
    """An RMSNorm over kept channels with the statistics of ``full_width`` channels (the
    removed ones zero). Keeps the replaced module's attributes and parameter names."""

    full_width: int

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        eps = getattr(self, "variance_epsilon", getattr(self, "eps", 1e-6))
        dtype = hidden_states.dtype
        states = hidden_states.to(torch.float32)
        variance = states.pow(2).sum(-1, keepdim=True) / self.full_width
        states = states * torch.rsqrt(variance + eps)
        return self.weight * states.to(dtype)


def _norm_over(module: nn.Module, width: int) -> bool:
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (width,) and module.weight is not None
    weight = getattr(module, "weight", None)
    return is_rms_norm(module) and weight is not None and tuple(weight.shape) == (width,)


def follow(builder: _Builder, outer: str, hf_model: nn.Module, stream: list[int]) -> str | None:
    """Attach the embeddings, norms and LM head of ``hf_model`` (at ``outer``) to its
    ``stream`` of elements; returns None when followed, else why the stream is kept."""
    model_type = getattr(hf_model.config, "model_type", "?")
    if model_type not in STREAM_FAMILIES:
        return f"the embedding width of {model_type} models is not followed"
    prefix = f"{outer}." if outer else ""
    width = len(stream)
    analysis = builder.analysis
    inputs = hf_model.get_input_embeddings()
    output = hf_model.get_output_embeddings()
    embedding_name = ""
    pending: list[TracedLayer] = []
    tied_heads: list[str] = []  # LM heads sharing the input embedding's weight
    for name, module in hf_model.named_modules():
        full = f"{prefix}{name}" if name else outer
        if full in analysis.layers:
            continue
        if isinstance(module, nn.Embedding) and module.embedding_dim == width:
            pending.append(TracedLayer(full, module, "hf_embedding"))
            embedding_name = full if module is inputs else embedding_name
        elif _norm_over(module, width):
            pending.append(TracedLayer(full, module, "layernorm"))
        elif module is output and isinstance(module, nn.Linear) and module.in_features == width:
            if inputs is not None and module.weight is inputs.weight:
                tied_heads.append(full)
            else:
                pending.append(TracedLayer(full, module, "linear"))
        else:
            for param_name, param in module.named_parameters(recurse=False):
                if width in param.shape:
                    return (
                        f"{full}.{param_name} ({type(module).__name__}) has the embedding "
                        "width and is not followed"
                    )
    if tied_heads:
        analysis.hf_ties[embedding_name] = tied_heads
    positions = [frozenset({element}) for element in stream]
    for layer in pending:
        if layer.kind == "linear":  # an untied LM head: its rows are the model's output
            layer.rows = [analysis.new_source(None) for _ in range(layer.module.out_features)]
        layer.inputs = list(positions)
        analysis.layers[layer.name] = layer
    return None


# -- shrinking ---------------------------------------------------------------------------


def resize_embedding(
    model: nn.Module, layer: TracedLayer, keep: list[int], analysis: HFChannelAnalysis
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Keep the ``keep`` columns of an embedding (and of the LM heads tied to it).

    Returns the :class:`~shrinkbench_core.pruning.shrink.LayerChange`, the slicers of
    its masks and its ``channel_config`` entry."""
    from shrinkbench_core.pruning.shrink import LayerChange

    module = model.get_submodule(layer.name)
    index = torch.tensor(keep, dtype=torch.long)
    slicer = lambda t: t.index_select(1, index.to(t.device))  # noqa: E731
    before = module.embedding_dim
    tied = analysis.hf_ties.get(layer.name, [])
    _resize_embedding(model, layer.name, len(keep), slicer(module.weight.detach()), tied)
    change = LayerChange(layer.name, "embedding", before, len(keep), before, len(keep))
    return change, {"weight": slicer}, {"hf_embedding": len(keep), "tied": tied}


def _resize_embedding(
    model: nn.Module, name: str, width: int, weight: torch.Tensor | None, tied: list[str]
) -> None:
    module = model.get_submodule(name)
    if weight is None:
        weight = module.weight.new_zeros(module.num_embeddings, width)
    old = module.weight
    module.weight = nn.Parameter(weight.contiguous(), requires_grad=old.requires_grad)
    module.embedding_dim = width
    for head_name in tied:
        head = model.get_submodule(head_name)
        head.weight = module.weight
        head.in_features = width


def resize_like(model: nn.Module, name: str, sizes: dict[str, Any]) -> None:
    """:func:`~shrinkbench_core.pruning.shrink.resize_like` for an embedding."""
    _resize_embedding(model, name, sizes["hf_embedding"], None, sizes.get("tied", []))

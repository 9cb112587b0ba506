"""Hugging Face decoder blocks followed by module pattern: attention heads and MLP units.

transformers 5 models cannot be traced with ``torch.fx``, so their channels are not
followed through the graph. Instead the decoder blocks of known families are
recognised by their modules (class name and attribute shape) and turned into the
same tied channels the traced analysis produces:

* attention heads: LLaMA-style ``q_proj``/``k_proj``/``v_proj`` + ``o_proj`` (LLaMA,
  Mistral, Qwen2, Qwen3, Gemma), OPT's ``out_proj``, GPT-2's fused ``c_attn`` +
  ``c_proj`` (after ``Conv1D`` was converted to ``nn.Linear``). A head's q, k and v
  rows are its producers, its columns of the output projection its consumers;
* grouped-query attention (fewer key/value heads than query heads) in one of two
  modes, :data:`GQA_MODES`: ``"kv_groups"`` (default) removes a key/value head together
  with its whole group of query heads (the KV cache shrinks, every group keeps its
  size); ``"query_heads"`` keeps every key/value head and removes query heads, the same
  number from every group (removal units are bundles of one query head per group);
* MLP hidden units: ``gate_proj`` and ``up_proj`` rows tied, ``down_proj`` columns
  (LLaMA family); ``fc1`` rows and ``fc2`` columns (OPT); ``c_fc`` rows and ``c_proj``
  columns (GPT-2).

The residual stream (the embedding width) is kept: its channels are pinned sources.
The masked model equals the shrunk one because each removed head's or unit's columns
of the consuming projection are masked. After shrinking, the head counts the forward
reads are updated per attention module (``num_key_value_groups``, ``num_heads``,
``split_size``), and the shared config's counts when every block ends up alike.

Anything in a Hugging Face model that is not recognised is left intact: an
attention module of another family is reported and pinned; a model with no
recognised block raises :class:`TraceError` (channel strategies then fall back to
each layer's own output channels). transformers is never imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shrinkbench_core.pruning.channels.attention import AttentionSite
from shrinkbench_core.pruning.channels.graph import (
    ChannelAnalysis,
    ChannelGroup,
    TiedChannel,
    TracedLayer,
    TraceError,
    Unsupported,
)

__all__ = [
    "GQA_MODES",
    "HFAttentionSite",
    "HFChannelAnalysis",
    "analyze_hf",
    "hf_models",
    "resize_heads",
    "resize_like",
    "update_config",
]

GQA_MODES = ("kv_groups", "query_heads")
"""How grouped-query attention loses heads (see the module docstring)."""

_SEPARATE_ATTENTION = {
    "LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3Attention", "GemmaAttention",
    "OPTAttention",
}  # fmt: skip
"""Attention with ``q_proj``/``k_proj``/``v_proj`` and ``o_proj`` (or OPT's ``out_proj``)."""

_FUSED_ATTENTION = {"GPT2Attention"}
"""Attention with one ``c_attn`` (q, k, v stacked) and ``c_proj``."""

_GATED_MLP = {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "GemmaMLP"}
_MLPS = {"OPTDecoderLayer": ("fc1", "fc2"), "GPT2MLP": ("c_fc", "c_proj")}
"""Two-layer MLPs: the module holding them and the names of their up and down layers."""

SUPPORTED = "llama, mistral, qwen2, qwen3, gemma, opt, gpt2 (Conv1D converted to Linear)"


def _is_transformers(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.")


def hf_models(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost Hugging Face pretrained models inside ``model`` (itself included),
    recognised by shape: a transformers class with a ``config`` that has a ``model_type``."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") or not outer for outer, _ in found):
            continue
        config = getattr(module, "config", None)
        if _is_transformers(module) and isinstance(getattr(config, "model_type", None), str):
            found.append((name, module))
    return found


@dataclass
class HFAttentionSite(AttentionSite):
    """A Hugging Face attention module followed per head.

    ``heads[h]`` is an element of query head ``h``, ``kv_of[h]`` its key/value head and
    ``kv_heads[g]`` an element of key/value head ``g`` (empty when q, k and v rows of a
    head are one tied channel, as in GPT-2's fused projection); ``style`` says which
    attributes hold the head counts ("llama", "opt", "gpt2").
    """

    kv_of: list[int] = field(default_factory=list)
    kv_heads: list[int] = field(default_factory=list)
    style: str = "llama"
    head_dim: int = 0
    weights: tuple[str, str, str] = ("", "", "")  # q, k and v weight names


class HFChannelAnalysis(ChannelAnalysis):
    """A :class:`ChannelAnalysis` built from recognised Hugging Face blocks.

    Query heads and key/value heads are separate tied channels, so that masks of
    either grouped-query mode can be shrunk: a key/value head goes only with every
    query head of its group, and the kept groups must keep equal numbers of query
    heads (else the site is kept and reported). ``gqa`` only decides how
    :meth:`groups` presents them to strategies: ``"kv_groups"`` merges each key/value
    head with its query heads into one tied channel; ``"query_heads"`` offers query heads
    with their group as a slot (removal units take one from every group).
    """

    def __init__(self, gqa: str = "kv_groups") -> None:
        super().__init__()
        self.gqa = gqa
        self.hf_sites: list[HFAttentionSite] = []
        self.hf_reports: list[Unsupported] = []  # modules left intact
        self.hf_ties: dict[str, list[str]] = {}  # input embedding -> LM heads sharing its weight

    def unsupported(self) -> list[Unsupported]:
        return super().unsupported() + self.hf_reports

    def groups(self) -> list[ChannelGroup]:
        groups = super().groups()
        for site in self.hf_sites:
            if not site.kv_heads:
                continue
            q_weight, k_weight, v_weight = site.weights
            position = {group.producers: i for i, group in enumerate(groups)}
            queries = position.get((q_weight,))
            kv = position.get((k_weight, v_weight))
            if queries is None or kv is None:
                continue
            if self.gqa == "query_heads" and len(site.kv_heads) < len(site.heads):
                for head, channel in enumerate(groups[queries].channels):
                    channel.slots[f"{site.module}:kv"] = site.kv_of[head]
                for channel in groups[kv].channels:
                    channel.removable = False  # only with all its query heads
                continue
            merged = [
                _merge([groups[kv].channels[g]] + [
                    channel for head, channel in enumerate(groups[queries].channels)
                    if site.kv_of[head] == g
                ])
                for g in range(len(site.kv_heads))
            ]  # fmt: skip
            groups[queries] = ChannelGroup((q_weight, k_weight, v_weight), merged)
            del groups[kv]
        return groups

    def removed_roots(self, masks: Any) -> tuple[set[int], list[Unsupported]]:
        removed, reports = super().removed_roots(masks)
        for site in self.hf_sites:
            if site.kv_heads:
                reason = self._consistent_heads(site, removed)
                if reason:
                    reports.append(Unsupported(site.module, "attention", reason, (site.module,)))
        return removed, reports

    def _consistent_heads(self, site: HFAttentionSite, removed: set[int]) -> str:
        """Keep heads the masks remove inconsistently; returns what was kept, or ''."""
        queries = [self.find(element) for element in site.heads]
        notes = []
        for group, element in enumerate(site.kv_heads):
            kv_root = self.find(element)
            members = [queries[h] for h in range(len(queries)) if site.kv_of[h] == group]
            kept = [root for root in members if root not in removed]
            if kv_root in removed and kept:
                removed.discard(kv_root)
                notes.append(f"key/value head {group} kept: query heads of its group stay")
            elif kv_root not in removed and not kept:
                removed.difference_update(members)
                notes.append(f"query heads of group {group} kept: its key/value head stays")
        counts = {
            sum(queries[h] not in removed for h in range(len(queries)) if site.kv_of[h] == g)
            for g, element in enumerate(site.kv_heads)
            if self.find(element) not in removed
        }
        if len(counts) > 1:
            removed.difference_update(queries)
            removed.difference_update(self.find(element) for element in site.kv_heads)
            notes = ["key/value groups would keep different numbers of query heads; all kept"]
        return "; ".join(notes)


def _merge(channels: list[TiedChannel]) -> TiedChannel:
    """One tied channel made of several (a key/value head and its query heads)."""
    merged = TiedChannel({}, {}, {}, all(channel.removable for channel in channels))
    for channel in channels:
        for table, part in ((merged.producers, channel.producers),
                            (merged.consumers, channel.consumers),
                            (merged.attached, channel.attached)):  # fmt: skip
            for name, rows in part.items():
                table[name] = tuple(sorted(table.get(name, ()) + rows))
    return merged


class _Builder:
    """Adds recognised blocks to an :class:`HFChannelAnalysis`."""

    def __init__(self, model: nn.Module, gqa: str) -> None:
        if gqa not in GQA_MODES:
            raise ValueError(f"gqa must be one of {', '.join(GQA_MODES)}, got {gqa!r}")
        self.model = model
        self.gqa = gqa
        self.analysis = HFChannelAnalysis(gqa)
        self.streams: dict[tuple[str, int], list[int]] = {}
        self.owner = ""  # the Hugging Face model whose modules are being added

    def stream(self, width: int) -> list[int]:
        """Channels of the owner's residual stream of ``width`` (one element each; pinned
        at the end unless :func:`.hf_stream.follow` attaches everything else on it)."""
        key = (self.owner, width)
        if key not in self.streams:
            self.streams[key] = [self.analysis.new_free() for _ in range(width)]
        return self.streams[key]

    def linear(self, name: str, module: nn.Module) -> TracedLayer:
        layer = TracedLayer(name, module, "linear")
        layer.rows = [self.analysis.new_producer(name) for _ in range(module.out_features)]
        self.analysis.layers[name] = layer
        return layer

    def reads_stream(self, layer: TracedLayer) -> None:
        layer.inputs = [frozenset({e}) for e in self.stream(layer.module.in_features)]

    def writes_stream(self, layer: TracedLayer) -> None:
        for element, source in zip(layer.rows, self.stream(len(layer.rows)), strict=True):
            self.analysis.union(element, source)

    def tie(self, elements: list[int]) -> None:
        for element in elements[1:]:
            self.analysis.union(elements[0], element)

    def unsupported(self, name: str, module: nn.Module, reason: str) -> None:
        """Report a module left intact; the channels of its linear layers are pinned."""
        self.analysis.hf_reports.append(Unsupported(name, type(module).__name__, reason, (name,)))
        for child_name, child in module.named_modules():
            if isinstance(child, nn.Linear):
                full = f"{name}.{child_name}" if child_name else name
                layer = self.analysis.layers.get(full) or self.linear(full, child)
                for element in layer.rows:
                    self.analysis.pin(frozenset({element}), None)

    def add(self, name: str, module: nn.Module) -> int:
        """Add ``module`` if it is a block of a known family; returns 1 if it is."""
        kind = type(module).__name__
        if not _is_transformers(module):
            return 0
        if kind in _SEPARATE_ATTENTION or kind in _FUSED_ATTENTION:
            self.attention(name, module)
        elif kind in _GATED_MLP:
            self.mlp(name, module, ("gate_proj", "up_proj"), "down_proj")
        elif kind in _MLPS:
            up, down = _MLPS[kind]
            self.mlp(name, module, (up,), down)
        else:
            if kind.endswith("Attention"):
                self.unsupported(name, module, f"{kind} is not a supported attention family "
                                 f"({SUPPORTED})")  # fmt: skip
            return 0
        return 1

    # -- attention -------------------------------------------------------------------

    def attention(self, name: str, module: nn.Module) -> None:
        kind = type(module).__name__
        linear = lambda attr: isinstance(getattr(module, attr, None), nn.Linear)  # noqa: E731
        head_dim = getattr(module, "head_dim", None)
        if kind in _FUSED_ATTENTION:
            if not (linear("c_attn") and linear("c_proj")):
                return self.unsupported(
                    name,
                    module,
                    "GPT-2 attention with Conv1D layers: "
                    "convert them to nn.Linear first (conv1d_to_linear)",
                )
            if getattr(module, "is_cross_attention", False) or not isinstance(head_dim, int):
                return self.unsupported(name, module, "cross-attention is not followed")
            self.fused_attention(name, module, head_dim)
            return None
        out_name = "o_proj" if linear("o_proj") else "out_proj"
        if not all(linear(a) for a in ("q_proj", "k_proj", "v_proj", out_name)) or not isinstance(
            head_dim, int
        ):
            return self.unsupported(name, module, "attention without q/k/v/o Linear layers")
        q_norm = getattr(module, "q_norm", None)
        weight = getattr(q_norm, "weight", None)
        if q_norm is not None and (weight is None or weight.numel() != head_dim):
            return self.unsupported(name, module, "query norm over more than one head")
        self.separate_attention(name, module, out_name, head_dim)
        return None

    def separate_attention(self, name: str, module: nn.Module, out_name: str, dim: int) -> None:
        q = self.linear(f"{name}.q_proj", module.q_proj)
        k = self.linear(f"{name}.k_proj", module.k_proj)
        v = self.linear(f"{name}.v_proj", module.v_proj)
        out = self.linear(f"{name}.{out_name}", getattr(module, out_name))
        for layer in (q, k, v):
            self.reads_stream(layer)
        self.writes_stream(out)
        heads, kv_heads = len(q.rows) // dim, len(k.rows) // dim
        for h in range(heads):
            self.tie(q.rows[h * dim : (h + 1) * dim])
        for g in range(kv_heads):
            self.tie(k.rows[g * dim : (g + 1) * dim] + v.rows[g * dim : (g + 1) * dim])
        out.inputs = [frozenset({e}) for e in q.rows]
        site = HFAttentionSite(
            name, "hf", [q.rows[h * dim] for h in range(heads)],
            kv_of=[h // (heads // kv_heads) for h in range(heads)],
            kv_heads=[k.rows[g * dim] for g in range(kv_heads)],
            style="opt" if out_name == "out_proj" else "llama", head_dim=dim,
            weights=(q.weight_name, k.weight_name, v.weight_name),
        )  # fmt: skip
        self.analysis.hf_sites.append(site)
        self.analysis.attention.append(site)

    def fused_attention(self, name: str, module: nn.Module, dim: int) -> None:
        qkv = self.linear(f"{name}.c_attn", module.c_attn)
        out = self.linear(f"{name}.c_proj", module.c_proj)
        self.reads_stream(qkv)
        self.writes_stream(out)
        width = len(qkv.rows) // 3
        heads = width // dim
        for h in range(heads):
            self.tie([qkv.rows[p * width + h * dim + i] for p in range(3) for i in range(dim)])
        out.inputs = [frozenset({e}) for e in qkv.rows[:width]]
        heads_elements = [qkv.rows[h * dim] for h in range(heads)]
        site = HFAttentionSite(name, "hf", heads_elements, kv_of=list(range(heads)),
                               style="gpt2", head_dim=dim)  # fmt: skip
        self.analysis.hf_sites.append(site)
        self.analysis.attention.append(site)

    # -- MLP -------------------------------------------------------------------------

    def mlp(self, name: str, module: nn.Module, up_names: tuple[str, ...], down: str) -> None:
        children = [getattr(module, attr, None) for attr in (*up_names, down)]
        if not all(isinstance(child, nn.Linear) for child in children):
            return self.unsupported(name, module, "MLP layers that are not nn.Linear "
                                    "(GPT-2: convert Conv1D with conv1d_to_linear)")  # fmt: skip
        pairs = zip(up_names, children[:-1], strict=True)
        ups = [self.linear(f"{name}.{attr}", child) for attr, child in pairs]
        down_layer = self.linear(f"{name}.{down}", children[-1])
        for layer in ups:
            self.reads_stream(layer)
        self.writes_stream(down_layer)
        for unit in range(len(ups[0].rows)):
            self.tie([layer.rows[unit] for layer in ups])
        down_layer.inputs = [frozenset({e}) for e in ups[0].rows]
        return None


def analyze_hf(model: nn.Module, gqa: str = "kv_groups") -> HFChannelAnalysis | None:
    """The tied channels of the Hugging Face blocks inside ``model``, or None when it holds
    no Hugging Face model. Raises :class:`TraceError` when it holds one but no block of
    a supported family. ``gqa`` picks how grouped-query attention loses heads."""
    found = hf_models(model)
    if not found:
        return None
    builder = _Builder(model, gqa)
    recognised = 0
    for outer, hf_model in found:
        builder.owner = outer
        prefix = f"{outer}." if outer else ""
        for name, module in hf_model.named_modules():
            recognised += builder.add(f"{prefix}{name}" if name else outer, module)
        _stream(builder, outer, hf_model)
    if not recognised:
        types = ", ".join(sorted({getattr(m.config, "model_type", "?") for _, m in found}))
        raise TraceError(
            f"Hugging Face model ({types}) has no decoder block the channel analysis knows; "
            f"supported: {SUPPORTED}. Channels are not followed."
        )
    return builder.analysis


def _stream(builder: _Builder, outer: str, hf_model: nn.Module) -> None:
    """Follow the residual stream of ``hf_model`` when possible, else pin and report it."""
    from shrinkbench_core.pruning.channels import hf_stream

    analysis = builder.analysis
    for (owner, _), stream in builder.streams.items():
        if owner != outer:
            continue
        if not callable(getattr(hf_model, "get_input_embeddings", None)):
            analysis.pin(frozenset(stream), None)  # a bare block: its input and output stay
            continue
        reason = None if not analysis.hf_reports else "a module on it is left intact"
        reason = reason or hf_stream.follow(builder, outer, hf_model, stream)
        if reason is not None:
            entry = analysis.add_entry(outer or "model", "embedding width", f"kept: {reason}")
            analysis.pin(frozenset(stream), entry)


# -- shrinking ---------------------------------------------------------------------------


def resize_heads(model: nn.Module, site: HFAttentionSite, kept: list[int]) -> dict[str, Any]:
    """Set the head counts an attention module's forward reads after its projections were
    resized to the ``kept`` query heads; returns the entry for ``channel_config``."""
    kv_kept = sorted({site.kv_of[h] for h in kept})  # a key/value head goes with its group
    sizes = {"heads": len(kept), "kv_heads": len(kv_kept), "head_dim": site.head_dim,
             "style": site.style}  # fmt: skip
    _set_counts(model.get_submodule(site.module), sizes)
    return {"hf_attention": sizes}


def _set_counts(module: nn.Module, sizes: dict[str, Any]) -> None:
    heads, kv_heads = sizes["heads"], sizes["kv_heads"]
    if sizes["style"] == "llama":
        module.num_key_value_groups = heads // kv_heads
    else:
        module.num_heads = heads
    if sizes["style"] == "gpt2":
        module.split_size = heads * sizes["head_dim"]
    for attribute, value in (("num_attention_heads", heads), ("num_key_value_heads", kv_heads)):
        if hasattr(module, attribute):
            setattr(module, attribute, value)


def update_config(model: nn.Module) -> None:
    """Write head counts and MLP widths into each LLaMA-style config whose blocks all end up
    alike (a config holds one value for every layer; its ``head_dim`` stays, so a model
    built from it has the shrunk sizes). OPT and GPT-2 configs derive the head width from
    the embedding width and cannot hold a smaller inner width: they stay as they were."""
    for _, hf_model in hf_models(model):
        config = hf_model.config
        if not isinstance(getattr(config, "head_dim", None), int):
            continue
        counts, widths = set(), set()
        for module in hf_model.modules():
            kind = type(module).__name__
            if kind in _SEPARATE_ATTENTION and kind != "OPTAttention":
                dim = module.head_dim
                counts.add((module.q_proj.out_features // dim, module.k_proj.out_features // dim))
            elif kind in _GATED_MLP:
                widths.add(module.gate_proj.out_features)
        if len(counts) == 1:
            config.num_attention_heads, config.num_key_value_heads = counts.pop()
        if len(widths) == 1 and isinstance(getattr(config, "intermediate_size", None), int):
            config.intermediate_size = widths.pop()


def resize_like(model: nn.Module, name: str, sizes: dict[str, Any]) -> None:
    """:func:`~shrinkbench_core.pruning.shrink.resize_like` for a Hugging Face attention
    or embedding."""
    if "hf_embedding" in sizes:
        from shrinkbench_core.pruning.channels import hf_stream

        hf_stream.resize_like(model, name, sizes)
    else:
        _set_counts(model.get_submodule(name), sizes["hf_attention"])

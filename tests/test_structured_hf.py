"""Structured shrinking of Hugging Face decoder blocks: attention heads (grouped-query
attention included) and MLP units of tiny random LLaMA, OPT and GPT-2 models.

Every shrunk model must give the masked model's logits on a fresh input of another
length, with random weights large enough that the check cannot pass by accident
(the masked logits differ from the dense ones). Parameter counts are computed by
hand from the configs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from shrinkbench_core.errors import UserError  # noqa: E402
from shrinkbench_core.pruning.channels.hf_attention import analyze_hf  # noqa: E402
from shrinkbench_core.pruning.channels.selection import lowest_norm_channels  # noqa: E402
from shrinkbench_core.pruning.masks import apply_masks  # noqa: E402
from shrinkbench_core.pruning.shrink import resize_like, shrink_model  # noqa: E402
from shrinkbench_core.pruning.structured import (  # noqa: E402
    TraceError,
    analyze_channels,
    complete_channel_masks,
    mask_channels,
)

ATOL = 1e-5  # logits of the shrunk vs the masked model (float32), relative to their scale
VOCAB = 64


pytestmark = pytest.mark.usefixtures("single_thread")


class CausalLM(nn.Module):
    """As the LM plugin's hf-causal-lm: ``forward(input_ids)`` returns the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights of a size that keeps attention soft (std 0.3; norms around 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm = "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
            param.copy_(1 + 0.2 * noise if is_norm and name.endswith("weight") else 0.3 * noise)
    return model.eval()


def llama(**overrides) -> nn.Module:
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    config = transformers.LlamaConfig(**{**settings, **overrides})  # fmt: skip
    torch.manual_seed(0)
    return randomize(CausalLM(transformers.LlamaForCausalLM(config)))


def opt() -> nn.Module:
    config = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=32, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    return randomize(CausalLM(transformers.OPTForCausalLM(config)))


def gpt2(convert: bool = True) -> nn.Module:
    from shrinkbench_llm.models import conv1d_to_linear

    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    if convert:
        conv1d_to_linear(model)
    return randomize(CausalLM(model))


def ids(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tokens)


def is_stream(group) -> bool:
    """The residual stream's group: its channels are columns of the embeddings."""
    return any(name.endswith(("embed_tokens.weight", "wte.weight"))
               for name in group.channels[0].consumers)  # fmt: skip


def shrink_half(model: nn.Module, gqa: str = "kv_groups", stream: bool = True):
    """Half of every group's removal units by lowest L1 norm (the residual stream's too,
    unless ``stream`` is False); the shrunk model must give the masked model's logits on
    a fresh input of another length."""
    example = ids(7)
    analysis = analyze_channels(model, example, gqa=gqa)
    groups = [g for g in analysis.groups() if stream or not is_stream(g)]
    masks = mask_channels(model, lowest_norm_channels(model, groups, 0.5))
    result = shrink_model(model, masks, example, analysis=analysis, atol=ATOL)
    masked = copy.deepcopy(model)
    apply_masks(masked, complete_channel_masks(model, masks, example, analysis=analysis))
    fresh = ids(11, seed=2)
    expected = logits(masked, fresh)
    assert not torch.allclose(expected, logits(model, fresh), atol=1e-2)  # masks change outputs
    scale = float(expected.abs().max())
    torch.testing.assert_close(logits(result.model, fresh), expected, rtol=1e-4,
                               atol=ATOL * max(scale, 1.0))  # fmt: skip
    return analysis, result


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def by_producers(analysis):
    return {group.producers: group for group in analysis.groups()}


# -- hand-built modules: one rule each -------------------------------------------------------


class Attention(nn.Module):
    """A bare LlamaAttention with its rotary embedding (no model around it)."""

    def __init__(self, config) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

        self.rotary = LlamaRotaryEmbedding(config)
        self.attention = LlamaAttention(config, layer_idx=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
        return self.attention(x, self.rotary(x, positions), None)[0]


def tiny_llama_config(**overrides):
    settings = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=VOCAB)  # fmt: skip
    return transformers.LlamaConfig(**{**settings, **overrides})


def test_kv_group_ties_a_key_value_head_to_its_query_heads():
    model = randomize(Attention(tiny_llama_config()))
    x = torch.randn(2, 5, 32)
    analysis = analyze_hf(model)
    (heads,) = [g for g in analysis.groups() if any(c.removable for c in g.channels)]
    assert heads.producers == ("attention.q_proj.weight", "attention.k_proj.weight",
                               "attention.v_proj.weight")  # fmt: skip
    first = heads.channels[0]
    assert first.producers["attention.q_proj.weight"] == tuple(range(16))  # query heads 0, 1
    assert first.producers["attention.k_proj.weight"] == tuple(range(8))  # key/value head 0
    assert first.consumers["attention.o_proj.weight"] == tuple(range(16))
    assert heads.size == 2 and heads.slots() is None
    masks = mask_channels(model, [heads.channels[1]])
    result = shrink_model(model, masks, x, analysis=analysis)
    shrunk = result.model.attention
    assert (shrunk.q_proj.out_features, shrunk.k_proj.out_features) == (16, 8)
    assert shrunk.num_key_value_groups == 2 and result.unsupported == []
    masked = copy.deepcopy(model)
    apply_masks(masked, complete_channel_masks(model, masks, x, analysis=analysis))
    torch.testing.assert_close(logits(result.model, x), logits(masked, x), rtol=1e-4, atol=ATOL)


def test_query_heads_mode_removes_as_many_query_heads_from_every_group():
    model = randomize(Attention(tiny_llama_config()))
    x = torch.randn(2, 5, 32)
    analysis = analyze_hf(model, gqa="query_heads")
    groups = by_producers(analysis)
    queries = groups[("attention.q_proj.weight",)]
    assert queries.slots() == [0, 0, 1, 1] and len(queries.removable) == 4
    assert groups[("attention.k_proj.weight", "attention.v_proj.weight")].removable == []
    # one query head from each key/value group: shrinks, one query head per group
    result = shrink_model(model, mask_channels(model, queries.channels[1:3]), x, analysis=analysis)
    shrunk = result.model.attention
    assert (shrunk.q_proj.out_features, shrunk.k_proj.out_features) == (16, 16)
    assert shrunk.num_key_value_groups == 1 and result.unsupported == []
    # the default analysis plans the same masks the same way (the runner's completion)
    again = shrink_model(model, mask_channels(model, queries.channels[1:3]), x)
    assert again.model.attention.q_proj.out_features == 16 and again.unsupported == []
    # groups that would keep 2 and 1 query heads: the heads are kept and reported
    result = shrink_model(model, mask_channels(model, queries.channels[:1]), x, analysis=analysis)
    assert result.model.attention.q_proj.out_features == 32
    (entry,) = result.unsupported
    assert "different numbers of query heads" in entry.reason
    with pytest.raises(ValueError, match="kv_groups, query_heads"):
        analyze_hf(model, gqa="pairs")


def test_a_key_value_head_goes_only_with_all_its_query_heads():
    model = randomize(Attention(tiny_llama_config()))
    x = torch.randn(2, 5, 32)
    groups = by_producers(analyze_hf(model, gqa="query_heads"))
    kv = groups[("attention.k_proj.weight", "attention.v_proj.weight")]
    queries = groups[("attention.q_proj.weight",)]
    # its key/value rows masked, its query heads not: kept (zeros), reported
    result = shrink_model(model, mask_channels(model, kv.channels[:1]), x)
    assert result.model.attention.k_proj.out_features == 16
    assert "key/value head 0 kept" in result.unsupported[0].reason
    # both query heads of group 1 masked, its key/value head not: kept, reported
    result = shrink_model(model, mask_channels(model, queries.channels[2:]), x)
    assert result.model.attention.q_proj.out_features == 32
    assert "query heads of group 1 kept" in result.unsupported[0].reason
    # both together: the whole group goes
    masks = mask_channels(model, [kv.channels[1], *queries.channels[2:]])
    result = shrink_model(model, masks, x)
    assert result.model.attention.k_proj.out_features == 8 and result.unsupported == []


def test_gated_mlp_ties_gate_and_up_rows_to_down_columns():
    from transformers.models.llama.modeling_llama import LlamaMLP

    model = randomize(nn.Sequential(LlamaMLP(tiny_llama_config())))
    model[0].config = tiny_llama_config()
    (units,) = [g for g in analyze_hf(model).groups() if g.removable]
    assert units.producers == ("0.gate_proj.weight", "0.up_proj.weight") and units.size == 64
    assert units.channels[5].consumers == {"0.down_proj.weight": (5,)}
    x = torch.randn(3, 32)
    result = shrink_model(model, mask_channels(model, units.channels[::2]), x)
    assert result.model[0].down_proj.in_features == 32 and result.max_abs_diff is not None


def test_fused_gpt2_attention_ties_q_k_v_thirds_of_c_attn():
    model = gpt2()
    groups = by_producers(analyze_channels(model, ids(5)))
    heads = groups[("model.transformer.h.0.attn.c_attn.weight",)]
    assert heads.channels[1].producers["model.transformer.h.0.attn.c_attn.weight"] == (
        *range(8, 16),
        *range(40, 48),
        *range(72, 80),
    )
    assert heads.channels[1].consumers == {"model.transformer.h.0.attn.c_proj.weight":
                                           tuple(range(8, 16))}  # fmt: skip
    assert groups[("model.transformer.h.0.mlp.c_fc.weight",)].size == 128


# -- whole models ----------------------------------------------------------------------------


def llama_params(hidden: int, q_heads: int, kv_heads: int, units: int, layers: int = 2) -> int:
    """Parameters of the tiny LLaMA (head width 8, no biases, untied LM head)."""
    attention = 2 * hidden * q_heads * 8 + 2 * hidden * kv_heads * 8
    block = attention + 3 * hidden * units + 2 * hidden  # MLP, two RMSNorms
    return 2 * VOCAB * hidden + hidden + layers * block  # embedding, LM head, final norm


def test_llama_gqa_loses_whole_kv_groups_and_mlp_units():
    model = llama()
    analysis, result = shrink_half(model, stream=False)
    head_dim = 8
    assert result.params_before == params(model) == llama_params(32, 4, 2, 64) == 22688
    assert result.params_after == params(result.model) == llama_params(32, 2, 1, 32) == 13472
    shrunk = result.model.model
    for block in shrunk.model.layers:
        assert block.self_attn.num_key_value_groups == 2  # every group keeps its size
        assert block.self_attn.k_proj.out_features == 8 and block.mlp.up_proj.out_features == 32
    config = shrunk.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert config.intermediate_size == 32 and config.head_dim == head_dim
    assert model.model.config.num_attention_heads == 4  # the original is untouched
    assert result.unsupported == []
    # the shrunk config builds the shrunk architecture
    rebuilt = CausalLM(transformers.LlamaForCausalLM(config))
    rebuilt.load_state_dict(result.model.state_dict())
    torch.testing.assert_close(logits(rebuilt, ids(9)), logits(result.model, ids(9)))


def test_shrunk_llama_generates_what_the_masked_model_generates():
    model = llama()
    example = ids(7)
    analysis = analyze_channels(model, example)
    masks = mask_channels(model, lowest_norm_channels(model, analysis.groups(), 0.5))
    result = shrink_model(model, masks, example, analysis=analysis)
    masked = copy.deepcopy(model)
    apply_masks(masked, complete_channel_masks(model, masks, example, analysis=analysis))
    prompt = ids(4, seed=3)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = masked.model.generate(prompt, **settings)  # with a KV cache
    assert torch.equal(result.model.model.generate(prompt, **settings), expected)


def test_llama_query_heads_mode_keeps_every_kv_head():
    model = llama()
    _, result = shrink_half(model, gqa="query_heads", stream=False)
    for block in result.model.model.model.layers:
        attention = block.self_attn
        assert attention.q_proj.out_features == 16 and attention.k_proj.out_features == 16
        assert attention.num_key_value_groups == 1
    config = result.model.model.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 2)
    assert result.params_after == llama_params(32, 2, 2, 32)


def test_llama_mha_and_qwen2_biases():
    model = llama(num_key_value_heads=4, attention_bias=True)
    _, result = shrink_half(model)
    attention = result.model.model.model.layers[0].self_attn
    assert attention.q_proj.bias.shape == (16,) and attention.num_key_value_groups == 1
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    qwen = randomize(CausalLM(transformers.Qwen2ForCausalLM(config)))
    _, result = shrink_half(qwen)
    assert result.model.model.model.layers[0].self_attn.k_proj.bias.shape == (8,)


def test_qwen3_heads_with_per_head_query_and_key_norms():
    config = transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = randomize(CausalLM(transformers.Qwen3ForCausalLM(config)))
    _, result = shrink_half(model)
    attention = result.model.model.model.layers[0].self_attn
    assert attention.q_proj.out_features == 16 and attention.q_norm.weight.shape == (8,)
    assert result.unsupported == []


def opt_params(hidden: int, width: int, units: int, layers: int = 2) -> int:
    """Parameters of the tiny OPT (biases everywhere, LM head tied to the embedding,
    64 + 2 learned positions)."""
    attention = 3 * (hidden * width + width) + width * hidden + hidden  # q, k, v; out_proj
    mlp = hidden * units + units + units * hidden + hidden
    block = attention + mlp + 4 * hidden  # two LayerNorms
    return VOCAB * hidden + 66 * hidden + 2 * hidden + layers * block


@pytest.mark.parametrize("stream", [False, True])
def test_opt_loses_heads_and_mlp_units(stream):
    model = opt()
    _, result = shrink_half(model, stream=stream)
    assert result.params_before == opt_params(32, 32, 64) == 21312
    hidden = 16 if stream else 32
    assert result.params_after == params(result.model) == opt_params(hidden, 16, 32)
    assert result.params_after == (6560 if stream else 12960)
    decoder = result.model.model.model.decoder
    for block in decoder.layers:
        assert block.self_attn.num_heads == 2 and block.fc1.out_features == 32
        assert block.fc1.in_features == hidden == block.self_attn_layer_norm.weight.numel()
    assert decoder.embed_positions.embedding_dim == hidden
    lm_head = result.model.model.lm_head
    assert lm_head.weight is decoder.embed_tokens.weight  # still tied
    assert result.unsupported == []


def test_gpt2_after_conv1d_conversion_loses_heads_and_mlp_units():
    model = gpt2()
    _, result = shrink_half(model)
    for block in result.model.model.transformer.h:
        assert block.attn.num_heads == 2 and block.attn.split_size == 16
        assert block.attn.c_attn.out_features == 48 and block.mlp.c_fc.out_features == 64
    assert result.compression > 1.3


def test_gpt2_with_conv1d_is_reported_and_kept():
    model = gpt2(convert=False)
    analysis = analyze_channels(model, ids(5))
    reported = analysis.unsupported()
    assert len(reported) == 4  # attention and MLP of both blocks
    assert all("conv1d_to_linear" in entry.reason for entry in reported)
    assert all(not group.removable for group in analysis.groups())


def test_unrecognised_family_falls_back_with_a_clear_message():
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4,
    )  # fmt: skip
    model = CausalLM(transformers.GPTNeoXForCausalLM(config))
    with pytest.raises(TraceError, match="supported: llama, mistral") as error:
        analyze_channels(model, ids(5))
    assert isinstance(error.value, UserError)
    import shrinkbench_core as sb

    with pytest.warns(UserWarning, match="cannot be followed"):
        sb.prune(model, "GlobalChannelNorm", 1.2, example_input=ids(5), inplace=False)


def test_resize_like_rebuilds_a_non_uniform_shrink_from_its_channel_config():
    model = llama()
    analysis = analyze_channels(model, ids(7))
    groups = [g for g in analysis.groups() if g.removable]
    heads_of_layer0 = next(g for g in groups if "layers.0.self_attn" in g.producers[0])
    result = shrink_model(model, mask_channels(model, heads_of_layer0.channels[:1]), ids(7))
    assert result.model.model.config.num_attention_heads == 4  # layers differ: config kept
    fresh = resize_like(llama(), result.channel_config)
    fresh.load_state_dict(result.model.state_dict())
    torch.testing.assert_close(logits(fresh, ids(9)), logits(result.model, ids(9)))


# -- the residual stream (embedding width) ----------------------------------------------------


def test_llama_stream_ties_writers_rows_to_readers_columns_and_norms():
    model = llama(num_hidden_layers=1)
    (stream,) = [g for g in analyze_channels(model, ids(5)).groups() if is_stream(g)]
    prefix = "model.model.layers.0."
    assert stream.producers == (f"{prefix}self_attn.o_proj.weight", f"{prefix}mlp.down_proj.weight")
    assert stream.size == 32 and len(stream.removable) == 32
    channel = stream.channels[3]
    assert set(channel.consumers) == {
        "model.model.embed_tokens.weight", "model.lm_head.weight",
        *(f"{prefix}self_attn.{p}_proj.weight" for p in "qkv"),
        f"{prefix}mlp.gate_proj.weight", f"{prefix}mlp.up_proj.weight",
    }  # fmt: skip
    assert all(rows == (3,) for rows in channel.consumers.values())
    assert set(channel.attached) == {f"{prefix}input_layernorm.weight",
                                     f"{prefix}post_attention_layernorm.weight",
                                     "model.model.norm.weight"}  # fmt: skip


def test_llama_stream_halved_with_padded_rms_norms():
    from shrinkbench_core.pruning.channels.hf_stream import PaddedRMSNorm

    model = llama()
    _, result = shrink_half(model)
    assert result.params_after == params(result.model) == llama_params(16, 2, 1, 32) == 6736
    assert result.compression == pytest.approx(22688 / 6736)  # 3.37x
    inner = result.model.model.model
    assert inner.embed_tokens.weight.shape == (VOCAB, 16)
    assert isinstance(inner.norm, PaddedRMSNorm) and inner.norm.full_width == 32
    assert result.model.model.lm_head.in_features == 16
    assert result.model.model.config.hidden_size == 32  # the norms still count 32 channels
    assert result.unsupported == []


def test_gpt2_stream_with_tied_head_and_position_embedding():
    model = gpt2()
    _, result = shrink_half(model)
    transformer = result.model.model.transformer
    assert transformer.wte.embedding_dim == transformer.wpe.embedding_dim == 16
    assert result.model.model.lm_head.weight is transformer.wte.weight
    assert result.unsupported == []


def test_stream_not_followed_is_reported_and_kept():
    config = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=4,
        word_embed_proj_dim=16, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = randomize(CausalLM(transformers.OPTForCausalLM(config)))
    analysis, result = shrink_half(model)
    (entry,) = analysis.unsupported()
    assert entry.operation == "embedding width" and "project_out" in entry.reason
    assert all(not g.removable for g in analysis.groups() if "fc2.weight" in g.producers[-1])
    block = result.model.model.model.decoder.layers[0]
    assert block.fc1.out_features == 32 and block.fc1.in_features == 32  # units go, stream stays


def test_gemma_loses_heads_and_keeps_its_scaled_embedding_width_reported():
    config = transformers.GemmaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = randomize(CausalLM(transformers.GemmaForCausalLM(config)))
    _, result = shrink_half(model)
    (entry,) = result.unsupported
    assert entry.operation == "embedding width" and "gemma" in entry.reason
    attention = result.model.model.model.layers[0].self_attn
    assert attention.q_proj.out_features == 16 and attention.q_proj.in_features == 32


def test_resize_like_rebuilds_a_shrunk_opt_with_its_tied_head():
    model = opt()
    analysis = analyze_channels(model, ids(7))
    masks = mask_channels(model, lowest_norm_channels(model, analysis.groups(), 0.25))
    result = shrink_model(model, masks, ids(7), analysis=analysis)
    fresh = resize_like(opt(), result.channel_config)
    fresh.load_state_dict(result.model.state_dict())
    assert fresh.model.lm_head.weight is fresh.model.model.decoder.embed_tokens.weight
    assert params(fresh) == params(result.model)
    torch.testing.assert_close(logits(fresh, ids(9)), logits(result.model, ids(9)))


# -- the user's path: sb.prune with a channel strategy, then shrink ----------------------------


@pytest.mark.parametrize("strategy", ["GlobalChannelNorm", "LayerChannelNorm", "ChannelTaylor"])
def test_api_prune_with_channel_strategies_shrinks_llama(strategy):
    import shrinkbench_core as sb

    model = llama()
    example = ids(7)
    calibration = [(ids(7, seed=5), ids(7, seed=6))] if strategy == "ChannelTaylor" else None
    options = {"uniform": True} if strategy != "LayerChannelNorm" else {}
    pruned = sb.prune(model, strategy, 1.4, example_input=example, inplace=False,
                      calibration=calibration, **options)  # fmt: skip
    result = shrink_model(pruned.model, pruned.masks, example, atol=ATOL)
    assert result.compression >= 1.4 * (1 - 1e-9)
    assert result.compression == pytest.approx(pruned.compression, rel=1e-6)
    torch.testing.assert_close(logits(result.model, ids(9)), logits(pruned.model, ids(9)),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    shrunk = {change.name for change in result.layers if change.in_after < change.in_before}
    assert shrunk  # whole channels went: heads, MLP units or stream channels


@pytest.mark.slow
def test_runner_prunes_and_shrinks_an_hf_causal_lm(tmp_path):
    """The runner with a random LLaMA from a config, uniform channel norm at 2x: the
    structured metric shrinks it (verified against the masked model inside) as far as the
    masks ask, with nothing left unsupported."""
    import json
    import subprocess

    pytest.importorskip("shrinkbench_llm")
    config = ("{model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,"
              " num_attention_heads: 4, num_key_value_heads: 2}")  # fmt: skip
    args = [
        "shrinkbench-run", "--quiet", "--strategy", "GlobalChannelNorm", "--compression", "2",
        "--dataset", "tinyshakespeare", "--model", "hf-causal-lm", "-p", f"model.config={config}",
        "-p", "dataset.seqlen=16", "-p", "dataset.train_tokens=2048", "-p", "dense.epochs=0",
        "-p", "finetune.epochs=0", "-p", "calibration_batches=1", "-p", "dataset.batch_size=8",
        "-p", "metrics=[size,structured]", "-p", "metrics.structured.repeats=1",
        "-p", "device=cpu", "-p", "strategy.uniform=true", "--output", "out",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (metrics_file,) = (tmp_path / "out" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    structured = metrics["pruned"]["structured"]
    assert structured["unsupported_count"] == 0
    achieved = metrics["compression"]["achieved"]
    assert achieved >= 2.0
    assert structured["params_before"] / structured["params_after"] == pytest.approx(achieved)


def test_strategy_option_gqa_query_heads_keeps_every_kv_head():
    import shrinkbench_core as sb

    model = llama()
    example = ids(7)
    # one removal unit per attention: one query head from each group (half of them)
    pruned = sb.prune(model, "GlobalChannelNorm", 3.0, example_input=example, inplace=False,
                      uniform=True, gqa="query_heads")  # fmt: skip
    result = shrink_model(pruned.model, pruned.masks, example, atol=ATOL)
    assert result.compression == pytest.approx(pruned.compression, rel=1e-6)
    assert result.unsupported == []
    for block in result.model.model.model.layers:
        attention = block.self_attn
        assert attention.k_proj.out_features == 16  # both key/value heads stay
        assert attention.q_proj.out_features == 16 and attention.num_key_value_groups == 1
    with pytest.raises(UserError, match="gqa"):
        sb.prune(model, "GlobalChannelNorm", 2.0, example_input=example, gqa="pairs")

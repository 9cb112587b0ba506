"""tiny-gpt and hf-causal-lm (tiny LLaMA / GPT-2 / OPT configs, random init; no download)."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("shrinkbench_llm")
pytest.importorskip("transformers")

from shrinkbench_llm.models import build_hf_causal_lm, build_tiny_gpt  # noqa: E402
from shrinkbench_llm.parameters import HFCausalLMParameters, TinyGPTParameters  # noqa: E402
from shrinkbench_llm.strategies import OWL, SparseGPT, WandaLM  # noqa: E402

from shrinkbench_core.errors import CheckpointError, ConfigError, DataMissingError  # noqa: E402
from shrinkbench_core.pruning import prunable_parameters  # noqa: E402

VOCAB = 40
CONFIGS = {
    "llama": {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    },
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "opt": {
        "model_type": "opt",
        "hidden_size": 32,
        "ffn_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "word_embed_proj_dim": 32,
    },
}


def _hf(kind, **extra):
    torch.manual_seed(0)
    params = HFCausalLMParameters(config=CONFIGS[kind], **extra)
    return build_hf_causal_lm(params, num_classes=VOCAB, input_shape=(16,))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_hf_causal_lm_from_config_prunes_sequentially(kind):
    model = _hf(kind)
    ids = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    assert model(ids).shape == (4, 16, VOCAB)
    prunable = prunable_parameters(model, None, "model.lm_head")
    assert prunable and all("embed" not in n and "wte" not in n for n in prunable)
    for strategy in (SparseGPT, WandaLM, OWL):
        pruned = copy.deepcopy(model)
        masks = strategy(
            pruned,
            2.0,
            params={"sparsity": 0.5, "blocksize": 16}
            if strategy is SparseGPT
            else {"sparsity": 0.5},
            calibration=[(ids, ids)],
            prunable=prunable,
        ).apply()
        assert set(masks) == set(prunable)
        removed = sum(int((~m).sum()) for m in masks.values())
        assert removed / sum(m.numel() for m in masks.values()) == pytest.approx(0.5, abs=0.02)
        assert torch.isfinite(pruned(ids)).all()


def test_gpt2_conv1d_becomes_linear_with_the_same_outputs():
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(CONFIGS["gpt2"], vocab_size=VOCAB)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(settings.pop("model_type"), **settings)
    )
    torch.manual_seed(0)
    model = _hf("gpt2")
    ids = torch.randint(0, VOCAB, (2, 10))
    reference.eval()
    model.eval()
    torch.testing.assert_close(model(ids), reference(input_ids=ids).logits)
    assert isinstance(model.model.transformer.h[0].attn.c_attn, torch.nn.Linear)


def test_bf16_dtype():
    model = _hf("llama", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_hf_errors_before_anything_runs(tmp_path):
    with pytest.raises(DataMissingError, match="download=true"):
        build_hf_causal_lm(
            HFCausalLMParameters(name_or_path="shrinkbench-tests/never-published"),
            num_classes=VOCAB,
            input_shape=(16,),
        )
    with pytest.raises(ConfigError, match="maximum positions 64"):
        build_hf_causal_lm(
            HFCausalLMParameters(config=CONFIGS["llama"]), num_classes=VOCAB, input_shape=(65,)
        )
    small = dict(CONFIGS["opt"], vocab_size=20)
    with pytest.raises(ConfigError, match="tokenizer has 40 ids but the model only 20"):
        build_hf_causal_lm(HFCausalLMParameters(config=small), num_classes=VOCAB, input_shape=(8,))
    with pytest.raises(ConfigError, match="exactly one"):
        build_hf_causal_lm(HFCausalLMParameters(), num_classes=VOCAB, input_shape=(8,))
    assert HFCausalLMParameters().trust_remote_code is False


def test_saved_local_model_loads_without_network(tmp_path):
    model = _hf("llama")
    model.model.save_pretrained(str(tmp_path / "tiny-llama"))
    loaded = build_hf_causal_lm(
        HFCausalLMParameters(name_or_path=str(tmp_path / "tiny-llama")),
        num_classes=VOCAB,
        input_shape=(16,),
    )
    ids = torch.randint(0, VOCAB, (1, 8))
    model.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(ids), model(ids))


def test_tiny_gpt_shape_checks_and_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file

    params = TinyGPTParameters(layers=1, width=16, heads=2, max_positions=32)
    model = build_tiny_gpt(params, num_classes=VOCAB, input_shape=(32,))
    assert model(torch.zeros(2, 32, dtype=torch.long)).shape == (2, 32, VOCAB)
    with pytest.raises(ConfigError, match="max_positions 32"):
        build_tiny_gpt(params, num_classes=VOCAB, input_shape=(33,))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    again = build_tiny_gpt(
        params.model_copy(update={"checkpoint": str(tmp_path / "w.safetensors")}),
        num_classes=VOCAB,
        input_shape=(32,),
    )
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
    with pytest.raises(CheckpointError):
        build_tiny_gpt(
            params.model_copy(update={"checkpoint": str(tmp_path / "w.safetensors")}),
            num_classes=VOCAB + 1,
            input_shape=(32,),
        )

"""Model factories: ``build(params, *, num_classes, input_shape)``.

``num_classes`` is the dataset tokenizer's vocabulary size and ``input_shape``
is ``(seqlen,)``. Both models return logits ``[N, T, vocab]`` for input ids ``[N, T]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shrinkbench_core.checkpoints import load_state_dict_file
from shrinkbench_core.errors import CheckpointError, ConfigError, DataMissingError

from .parameters import HFCausalLMParameters, TinyGPTParameters
from .tiny_gpt import TinyGPT

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _seqlen(input_shape: tuple[int, ...], name: str) -> int:
    if len(input_shape) != 1:
        raise ConfigError(
            [f"input shape {tuple(input_shape)}: {name} takes token windows (seqlen,)"],
            title=f"model {name} does not fit the data",
        )
    return int(input_shape[0])


def load_weights(model: nn.Module, path: str) -> None:
    """Load a ``.safetensors`` file or a torch state_dict (``weights_only=True``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        if not Path(path).expanduser().is_file():
            raise CheckpointError(f"checkpoint file not found: {path}")
        try:
            model.load_state_dict(load_file(str(Path(path).expanduser())))
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).splitlines()[1:4]]
            raise CheckpointError(
                f"checkpoint {path} does not match the model: {'; '.join(lines)}"
            ) from None
        return
    load_state_dict_file(model, path)


def build_tiny_gpt(
    params: TinyGPTParameters, *, num_classes: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """A :class:`TinyGPT` for the dataset's vocabulary and window length."""
    seqlen = _seqlen(input_shape, "tiny-gpt")
    problems = []
    if seqlen > params.max_positions:
        problems.append(
            f"dataset.seqlen {seqlen} > model.max_positions {params.max_positions}: "
            "lower the first or raise the second"
        )
    if params.width % params.heads:
        problems.append(f"model.width {params.width} is not divisible by model.heads")
    if problems:
        raise ConfigError(problems, title="model tiny-gpt does not fit the data")
    model = TinyGPT(
        num_classes,
        layers=params.layers,
        width=params.width,
        heads=params.heads,
        mlp_ratio=params.mlp_ratio,
        max_positions=params.max_positions,
        dropout=params.dropout,
    )
    if params.checkpoint:
        load_weights(model, params.checkpoint)
    return model


class CausalLM(nn.Module):
    """A Hugging Face causal LM whose ``forward(input_ids)`` returns the logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model's position encoding allows (None: unknown)."""
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int):
                return value
        return None


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace transformers' ``Conv1D`` (GPT-2's transposed linear) by equal ``nn.Linear``.

    Returns how many were replaced; the outputs are unchanged.
    """
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = nn.Linear(in_features, out_features, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(module, child_name, linear)
                replaced += 1
    return replaced


def _from_pretrained(params: HFCausalLMParameters, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    name = params.name_or_path or ""
    try:
        return AutoModelForCausalLM.from_pretrained(
            name,
            dtype=dtype,
            local_files_only=not params.download,
            trust_remote_code=params.trust_remote_code,
            revision=params.revision,
        )
    except OSError as error:
        where = "is not a local folder" if not Path(name).expanduser().exists() else "is unusable"
        raise DataMissingError(
            f"model {name!r} {where} and is not in the Hugging Face cache "
            f"({type(error).__name__}: {str(error).splitlines()[0][:160]}); pass a local "
            "folder, or allow a download with -p model.download=true"
        ) from None
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise ConfigError(
                [
                    f"model.name_or_path {name!r} ships its own code; run it only if you "
                    "trust it, with -p model.trust_remote_code=true"
                ]
            ) from None
        raise


def _from_config(params: HFCausalLMParameters, dtype: torch.dtype, vocab: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(params.config or {})
    model_type = settings.pop("model_type", None)
    if not model_type:
        raise ConfigError(["model.config: needs 'model_type' (e.g. 'llama', 'gpt2', 'opt')"])
    settings.setdefault("vocab_size", vocab)
    try:
        config = AutoConfig.for_model(model_type, **settings)
    except (ValueError, TypeError) as error:
        raise ConfigError([f"model.config: {error}"]) from None
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def _vocab_problems(model: nn.Module, params: HFCausalLMParameters, vocab: int) -> list[str]:
    model_vocab = model.get_output_embeddings().weight.shape[0]
    if vocab > model_vocab:
        return [
            f"the dataset's tokenizer has {vocab} ids but the model only {model_vocab}: use the "
            f"model's tokenizer, -p dataset.tokenizer={params.name_or_path or 'PATH'}"
        ]
    if params.name_or_path:
        from transformers import AutoTokenizer

        try:
            own = len(AutoTokenizer.from_pretrained(params.name_or_path, local_files_only=True))
        except (OSError, ValueError):
            return []
        if own != vocab:
            return [
                f"the dataset's tokenizer has {vocab} ids, the model's own tokenizer {own}: use "
                f"-p dataset.tokenizer={params.name_or_path}"
            ]
    return []


def build_hf_causal_lm(
    params: HFCausalLMParameters, *, num_classes: int, input_shape: tuple[int, ...]
) -> nn.Module:
    """An ``AutoModelForCausalLM`` from a local path / the HF cache, or random from a config."""
    seqlen = _seqlen(input_shape, "hf-causal-lm")
    if bool(params.name_or_path) == bool(params.config):
        raise ConfigError(
            ["model: set exactly one of name_or_path (weights) or config (random init)"]
        )
    dtype = DTYPES[params.dtype]
    if params.name_or_path:
        hf_model = _from_pretrained(params, dtype)
    else:
        hf_model = _from_config(params, dtype, num_classes)
    conv1d_to_linear(hf_model)
    model = CausalLM(hf_model)
    problems = _vocab_problems(hf_model, params, num_classes)
    limit = model.max_positions
    if limit is not None and seqlen > limit:
        problems.append(f"dataset.seqlen {seqlen} > the model's maximum positions {limit}")
    if problems:
        raise ConfigError(problems, title="model hf-causal-lm does not fit the data")
    return model

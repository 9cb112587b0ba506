"""Parameter models of the LM datasets, models, metrics and strategies (pydantic only, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_nm(value: str | None) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)``; ``None`` stays ``None``. Raises ``ValueError`` otherwise."""
    if value is None:
        return None
    n_text, sep, m_text = str(value).partition(":")
    if not sep or not n_text.strip().isdigit() or not m_text.strip().isdigit():
        raise ValueError(f"must look like 'N:M' (e.g. '2:4' or '4:8'), got {value!r}")
    n, m = int(n_text), int(m_text)
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {value!r}")
    return n, m


class TextDataParameters(_Strict):
    """Options shared by every text dataset: the window length and the tokenizer."""

    seqlen: int = Field(
        128, ge=2, description="Tokens per window (input_ids[T] predict target_ids[T])."
    )
    tokenizer: str = Field(
        "char",
        description="'char' (character level, built from the corpus, no download) or a local "
        "path / cached Hugging Face id of a tokenizer (use the LM's own for hf-causal-lm).",
    )
    train_tokens: int | None = Field(
        None, ge=2, description="Use only the first N training tokens (None: all)."
    )


class TinyShakespeareParameters(TextDataParameters):
    """Options of ``tinyshakespeare`` (the corpus is embedded; nothing is downloaded)."""


class HubTextParameters(TextDataParameters):
    """Options of ``wikitext2`` and ``c4`` (Hugging Face ``datasets``)."""

    root: str | None = Field(
        None,
        description="Local folder of the data files (.parquet/.arrow/.json[l][.gz]/.txt); "
        "default: the Hugging Face cache.",
    )
    download: bool = Field(
        False, description="Allow downloading from the Hugging Face Hub when not cached."
    )
    validation_documents: int = Field(
        1100, ge=1, description="c4 only: validation documents used (the papers' first 1100)."
    )


class TextFilesParameters(TextDataParameters):
    """Options of ``text-files``: local ``.txt`` / ``.jsonl`` files."""

    train: list[str] = Field(default_factory=list, description="Training files (.txt/.jsonl).")
    validation: list[str] = Field(default_factory=list, description="Validation files.")
    test: list[str] = Field(default_factory=list, description="Test files.")
    text_field: str = Field("text", description="Field holding the text in .jsonl records.")


class TinyGPTParameters(_Strict):
    """Options of ``tiny-gpt``: a pre-LayerNorm decoder-only transformer."""

    layers: int = Field(4, ge=1, description="Transformer blocks.")
    width: int = Field(128, ge=8, description="Embedding width (d_model).")
    heads: int = Field(4, ge=1, description="Attention heads (width must be divisible by it).")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width / width.")
    max_positions: int = Field(256, ge=2, description="Longest sequence the model accepts.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in training.")
    checkpoint: str | None = Field(None, description="Local state_dict file (.pt/.safetensors).")


class HFCausalLMParameters(_Strict):
    """Options of ``hf-causal-lm``: any ``AutoModelForCausalLM``."""

    name_or_path: str | None = Field(
        None, description="Local folder or Hugging Face id (must be in the local cache)."
    )
    config: dict | None = Field(
        None,
        description="Random-initialized model from a config dict instead (must hold "
        "'model_type', e.g. {'model_type': 'llama', 'hidden_size': 64, ...}).",
    )
    dtype: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Weights dtype.")
    download: bool = Field(False, description="Allow downloading weights from the Hub.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")


class PerplexityParameters(_Strict):
    """Options of the ``perplexity`` metric (SparseGPT/Wanda protocol)."""

    split: str = Field("test", description="Which split to evaluate ('test', 'validation').")
    seqlen: int | None = Field(
        None, ge=2, description="Window length in tokens (default: the dataset's seqlen)."
    )
    stride: int | None = Field(
        None,
        ge=1,
        description="Sliding windows: advance by this many tokens, scoring only the new ones "
        "(default: non-overlapping windows, as the papers).",
    )
    batch_size: int = Field(32, ge=1, description="Windows per forward pass.")
    max_windows: int | None = Field(
        None, ge=1, description="Evaluate only the first N windows (None: the whole split)."
    )


class LMEvalParameters(_Strict):
    """Options of the ``lm_eval`` metric (needs ``shrinkbench-llm[eval]``)."""

    tasks: list[str] = Field(
        default_factory=lambda: ["arc_easy"], description="lm-eval task names."
    )
    include_path: str | None = Field(
        None, description="Folder of extra task YAML files (e.g. tasks over local data)."
    )
    num_fewshot: int = Field(0, ge=0, description="Few-shot examples (0: zero-shot).")
    limit: int | None = Field(None, ge=1, description="Examples per task (None: all).")
    batch_size: int = Field(8, ge=1, description="Sequences per forward pass.")
    max_length: int | None = Field(
        None, ge=2, description="Longest context (default: the model's maximum positions)."
    )


class LMStrategyParameters(_Strict):
    """Options shared by the LM strategies (sequential block-wise calibration)."""

    sparsity: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Fraction of every prunable linear layer to remove, as LM papers set it "
        "(overrides the compression target; None: derived from --compression).",
    )
    nm: str | None = Field(
        None, description="Semi-structured N:M pattern, e.g. '2:4' or '4:8' (fixes the sparsity)."
    )
    samples: int | None = Field(
        None,
        ge=1,
        description="Older name of calibration.samples (set that): calibration windows "
        "(None: all the runner passes, calibration_batches x dataset.batch_size).",
    )
    seqlen: int | None = Field(
        None,
        ge=1,
        description="Older name of calibration.seqlen (set that): tokens per calibration "
        "window (None: the dataset's seqlen).",
    )

    @field_validator("nm", mode="before")
    @classmethod
    def _nm(cls, value: object) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
            # `-p strategy.nm=2:4` reaches us as YAML 1.1's base-60 integer 2*60+4
            value = f"{value // 60}:{value % 60}"
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must look like 'N:M' (e.g. '2:4' or '4:8'), got {value!r}")
        parse_nm(value)
        return value


class MagnitudeLMParameters(LMStrategyParameters):
    """Options of ``MagnitudeLM``."""

    groups: Literal["layer", "row"] = Field(
        "layer",
        description="Compare |w| within the whole layer (the LM papers' magnitude baseline) "
        "or within each output row.",
    )


class WandaLMParameters(LMStrategyParameters):
    """Options of ``WandaLM``."""


class SparseGPTParameters(LMStrategyParameters):
    """Options of ``SparseGPT``."""

    blocksize: int = Field(128, ge=1, description="Columns per lazy-update block.")
    percdamp: float = Field(
        0.01, gt=0.0, description="Dampening: this fraction of the mean Hessian diagonal."
    )


class OWLParameters(SparseGPTParameters):
    """Options of ``OWL`` (outlier-weighted layerwise sparsity)."""

    base: Literal["wanda", "sparsegpt"] = Field("wanda", description="The method OWL wraps.")
    outlier_m: float = Field(
        5.0, gt=0.0, description="M: a score is an outlier when above M x the layer's mean."
    )
    lamda: float = Field(
        0.08,
        ge=0.0,
        lt=0.5,
        description="lambda: layer sparsities stay within the target +- lambda.",
    )

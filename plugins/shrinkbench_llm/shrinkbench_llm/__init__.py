"""ShrinkBench plugin for language models (registration only: no torch import here).

Datasets ``tinyshakespeare`` (embedded), ``wikitext2``, ``c4``, ``text-files``;
models ``tiny-gpt``, ``hf-causal-lm``; metrics ``perplexity``, ``lm_eval``;
strategies ``SparseGPT``, ``WandaLM``, ``MagnitudeLM``, ``OWL`` with sequential
block-wise calibration and N:M patterns.
"""

from __future__ import annotations

from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import DatasetSpec, MetricSpec, ModelSpec, StrategySpec

from . import parameters as p

__version__ = "0.1.0"

TINYSHAKESPEARE_VOCAB = 65
SPARSEGPT = "Frantar & Alistarh 2023, SparseGPT: Massive Language Models Can Be Accurately Pruned"
WANDA = "Sun et al. 2024, A Simple and Effective Pruning Approach for Large Language Models"
OWL = "Yin et al. 2024, Outlier Weighed Layerwise Sparsity (OWL), ICML"
MAGNITUDE = "Han et al. 2015; the magnitude baseline of SparseGPT and Wanda"

#: What LM papers measure, instead of the core's image-classifier metrics.
LM_METRICS = ["size", "perplexity"]
#: Text datasets: perplexity, not top-1 accuracy / FLOPs / latency.
TEXT_DATA_DEFAULTS = {"metrics": LM_METRICS}
#: tiny-gpt trains here in a couple of minutes on 2 CPU cores (one AdamW epoch of the
#: training split), then is pruned one-shot as LM papers do (no fine-tuning). Only keys
#: that examples/sweep_llm.toml sets itself, so the sweep's digests are unchanged.
TINY_GPT_DEFAULTS = {
    "dense.epochs": 1,
    "dense.optimizer.name": "adamw",
    "dense.optimizer.lr": 1e-2,
    "dense.optimizer.weight_decay": 0.01,
    "dataset.batch_size": 32,
    "dataset.eval_batch_size": 64,
    "finetune.epochs": 0,
    "metrics": LM_METRICS,
}
#: A Hugging Face causal LM comes with its weights: no dense training, no fine-tuning,
#: and small batches (long windows, large vocabularies).
HF_CAUSAL_LM_DEFAULTS = {
    "dense.epochs": 0,
    "dataset.batch_size": 8,
    "dataset.eval_batch_size": 8,
    "finetune.epochs": 0,
    "metrics": LM_METRICS,
}


@hookimpl
def shrinkbench_register_datasets() -> list[DatasetSpec]:
    """Text datasets yielding (input_ids[T], target_ids[T]) windows."""
    return [
        DatasetSpec(
            name="tinyshakespeare",
            summary="Shakespeare plays (1.1M chars, embedded), character tokens, 90/5/5 split",
            factory="shrinkbench_llm.text_datasets:build_tinyshakespeare",
            parameters=p.TinyShakespeareParameters,
            input_shape=(128,),
            num_classes=TINYSHAKESPEARE_VOCAB,
            config_defaults=TEXT_DATA_DEFAULTS,
        ),
        DatasetSpec(
            name="wikitext2",
            summary="WikiText-2 raw (wikitext-2-raw-v1) from local files / HF cache",
            factory="shrinkbench_llm.text_datasets:build_wikitext2",
            parameters=p.HubTextParameters,
            input_shape=(128,),
            num_classes=TINYSHAKESPEARE_VOCAB,
            config_defaults=TEXT_DATA_DEFAULTS,
        ),
        DatasetSpec(
            name="c4",
            summary="C4 en (allenai/c4 train/validation shard 00000) from local files / HF cache",
            factory="shrinkbench_llm.text_datasets:build_c4",
            parameters=p.HubTextParameters,
            input_shape=(128,),
            num_classes=TINYSHAKESPEARE_VOCAB,
            config_defaults=TEXT_DATA_DEFAULTS,
        ),
        DatasetSpec(
            name="text-files",
            summary="Local .txt / .jsonl files given per split",
            factory="shrinkbench_llm.text_datasets:build_text_files",
            parameters=p.TextFilesParameters,
            input_shape=(128,),
            num_classes=TINYSHAKESPEARE_VOCAB,
            config_defaults=TEXT_DATA_DEFAULTS,
        ),
    ]


@hookimpl
def shrinkbench_register_models() -> list[ModelSpec]:
    """A tiny decoder-only transformer and any Hugging Face causal LM."""
    return [
        ModelSpec(
            name="tiny-gpt",
            summary="Pre-LN decoder-only transformer (4 layers, width 128, 4 heads, GELU MLP)",
            factory="shrinkbench_llm.models:build_tiny_gpt",
            parameters=p.TinyGPTParameters,
            classifier="lm_head",
            metadata={"family": "decoder-only", "task": "causal-lm"},
            config_defaults=TINY_GPT_DEFAULTS,
        ),
        ModelSpec(
            name="hf-causal-lm",
            summary="Any AutoModelForCausalLM: local path / HF cache, or random from a config",
            factory="shrinkbench_llm.models:build_hf_causal_lm",
            parameters=p.HFCausalLMParameters,
            classifier="model.lm_head",
            metadata={"family": "decoder-only", "task": "causal-lm"},
            config_defaults=HF_CAUSAL_LM_DEFAULTS,
        ),
    ]


@hookimpl
def shrinkbench_register_metrics() -> list[MetricSpec]:
    """Perplexity (papers' protocol) and lm-eval zero-shot tasks."""
    return [
        MetricSpec(
            name="perplexity",
            summary="perplexity: exp(mean token NLL), non-overlapping seqlen windows of a split",
            factory="shrinkbench_llm.perplexity:compute",
            parameters=p.PerplexityParameters,
            unit="ppl",
            higher_is_better=False,
        ),
        MetricSpec(
            name="lm_eval",
            summary="accuracy on lm-eval tasks (zero-shot), needs shrinkbench-llm[eval]",
            factory="shrinkbench_llm.lm_eval_metric:compute",
            parameters=p.LMEvalParameters,
            unit="fraction",
            higher_is_better=True,
        ),
    ]


def _strategy(
    name: str, summary: str, params: type, structure: str, ref: str, data: bool = True
) -> StrategySpec:
    return StrategySpec(
        name=name,
        summary=summary,
        factory=f"shrinkbench_llm.strategies:{name}",
        parameters=params,
        scope="layerwise",
        structure=structure,
        needs_data=data,
        reference=ref,
    )


@hookimpl
def shrinkbench_register_strategies() -> list[StrategySpec]:
    """LM pruning with sequential block-wise calibration (-p strategy.nm=2:4 for N:M)."""
    return [
        _strategy(
            "SparseGPT",
            "OBS reconstruction per linear layer (block 128, damp 0.01), blocks in order",
            p.SparseGPTParameters,
            "unstructured",
            SPARSEGPT,
        ),
        _strategy(
            "WandaLM",
            "|W_ij| x ||X_j||_2 per output row, blocks calibrated in order (LM Wanda)",
            p.WandaLMParameters,
            "unstructured",
            WANDA,
        ),
        _strategy(
            "MagnitudeLM",
            "|w| per linear layer (or per row): the LM papers' magnitude baseline",
            p.MagnitudeLMParameters,
            "unstructured",
            MAGNITUDE,
            data=False,
        ),
        _strategy(
            "OWL",
            "Outlier-weighted layerwise sparsity (M=5, lambda=0.08) on Wanda or SparseGPT",
            p.OWLParameters,
            "unstructured",
            OWL,
        ),
    ]

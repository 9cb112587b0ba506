"""Parameter models of the strategies (torch-free, so listing stays cheap)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

_GROUPED = Field(
    "channels",
    description="How grouped convolutions (ResNeXt, RegNet) lose channels: 'channels' = as "
    "many from every convolution group; 'groups' = whole convolution groups, each group's "
    "input and output channels together (the convolution's `groups` shrinks).",
)


_GQA = Field(
    "kv_groups",
    description="How grouped-query attention of Hugging Face models loses heads: 'kv_groups' "
    "= a key/value head with its whole group of query heads; 'query_heads' = every key/value "
    "head stays and each group loses as many query heads.",
)


class _GroupedOption(BaseModel):
    """Leaves ``grouped`` and ``gqa`` out of dumps at their defaults, so resolved configs
    (and run digests) stay as they were before the options existed."""

    @model_serializer(mode="wrap")
    def _without_default_grouped(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("grouped") == "channels":
            data.pop("grouped")
        if data.get("gqa") == "kv_groups":
            data.pop("gqa")
        return data


class ChannelParameters(_GroupedOption):
    """Options of the channel-norm strategies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    norm: Literal["l1", "l2"] = Field("l1", description="Norm scoring each output channel.")
    uniform: bool = Field(
        False,
        description="Remove the same share of every tied channel group (as Torch-Pruning's "
        "pruning_ratio) instead of ranking channels across groups; LayerChannelNorm always does.",
    )
    grouped: Literal["channels", "groups"] = _GROUPED
    gqa: Literal["kv_groups", "query_heads"] = _GQA


class ChannelTaylorParameters(_GroupedOption):
    """Options of the first-order Taylor channel importance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uniform: bool = Field(
        False,
        description="Remove the same share of every tied channel group (see GlobalChannelNorm).",
    )
    grouped: Literal["channels", "groups"] = _GROUPED
    gqa: Literal["kv_groups", "query_heads"] = _GQA


_BN_MODE = Field(
    "train",
    description="Mode the model is measured in: 'train' (BatchNorm on the batch's statistics, "
    "dropout active, as the original ShrinkBench and as fine-tuning will see it) or 'eval' "
    "(running statistics, no dropout: the function that is evaluated).",
)


class MagGradParameters(BaseModel):
    """Options of the gradient-magnitude baselines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bn_mode: Literal["train", "eval"] = _BN_MODE


class MagActParameters(BaseModel):
    """Options of the activation-magnitude baselines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bn_mode: Literal["train", "eval"] = _BN_MODE
    statistic: Literal["mean_abs", "abs_mean"] = Field(
        "mean_abs",
        description="Input-channel score: 'mean_abs' = mean |x| (the size of what the weight "
        "multiplies, signed inputs included) or 'abs_mean' = |mean x| (the original "
        "ShrinkBench's, near zero for a signed channel whatever its size).",
    )


# -- pruning at initialization, second-order, N:M and activation-aware scores -----------------
class SnipParameters(BaseModel):
    """Options of SNIP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batches: int = Field(
        1, ge=1, description="Calibration batches averaged for the gradient (the paper uses one)."
    )


class GraspParameters(BaseModel):
    """Options of GraSP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(
        200.0, gt=0, description="Logits are divided by this before the loss (the paper uses 200)."
    )
    batches: int | None = Field(
        None, ge=1, description="Calibration batches used (default: all that the runner passes)."
    )


class SynFlowParameters(BaseModel):
    """Options of SynFlow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(100, ge=1, description="Scoring/pruning rounds (the paper uses 100).")
    schedule: Literal["exponential", "linear"] = Field(
        "exponential", description="How the kept fraction shrinks over the rounds."
    )
    input_shape: tuple[int, ...] | None = Field(
        None,
        description="Input shape without batch, e.g. [1, 8, 8]; default: the one the runner "
        "passes as `input_shape`.",
    )
    precision: Literal["float64", "float32"] = Field(
        "float64", description="Precision of the scoring copy (float64 avoids overflow)."
    )


class TaylorParameters(BaseModel):
    """Options of the first-order Taylor score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accumulate: Literal["squared", "absolute"] = Field(
        "squared",
        description="Per-batch (w*g)^2 (Molchanov et al. 2019) or |w*g|, averaged over batches.",
    )


class FisherParameters(BaseModel):
    """Options of the Fisher / OBD diagonal score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gradients: Literal["example", "batch"] = Field(
        "example",
        description="Square per-example gradients (the empirical Fisher) or per-batch ones "
        "(cheaper approximation).",
    )
    chunk_size: int = Field(
        16, ge=1, description="Examples whose gradients are computed at once (memory bound)."
    )


class NMParameters(BaseModel):
    """Options of N:M semi-structured sparsity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(2, ge=1, description="Weights kept in every group of m.")
    m: int = Field(4, ge=2, description="Group size, along the input-channel dimension.")
    incompatible: Literal["error", "skip"] = Field(
        "error",
        description="What to do with a prunable parameter whose input dimension is not a "
        "multiple of m: stop with an error, or leave it dense and report it.",
    )

    @model_validator(mode="after")
    def _n_below_m(self) -> NMParameters:
        if not self.n < self.m:
            raise ValueError(f"n must be smaller than m (n:m = {self.n}:{self.m})")
        return self


class WandaParameters(BaseModel):
    """Options of Wanda."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    comparison: Literal["layer", "output"] = Field(
        "layer",
        description="Compare scores within each layer, or within each output row as in the "
        "paper (same fraction kept per row).",
    )

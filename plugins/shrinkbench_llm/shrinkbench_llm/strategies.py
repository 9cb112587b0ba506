"""LM pruning strategies: SparseGPT, WandaLM, MagnitudeLM and OWL.

They prune the linear layers inside the transformer blocks (embeddings and the
LM head are not prunable by the default rule). How much each layer loses:

* ``-p strategy.nm=2:4``: ``n`` kept in every ``m`` consecutive inputs of a row;
* ``-p strategy.sparsity=0.5``: that fraction of every layer, as LM papers set it;
* otherwise the run's ``--compression``: the exact budget, spread over the layers
  in proportion to their size.

Data-driven strategies calibrate sequentially (:mod:`shrinkbench_llm.calibration`)
and change the weights as they go: block ``k`` is pruned before block ``k+1``
sees its outputs, and SparseGPT also updates the weights it keeps. ``compute_masks``
therefore leaves the model pruned (``apply`` re-applies the same masks).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import ConfigError, UserError
from shrinkbench_core.pruning import Strategy
from shrinkbench_core.pruning.importance import allocate_counts

from .calibration import LayerStatistics, find_blocks, sequential_blocks
from .owl import outlier_ratio, owl_sparsities, wanda_scores
from .parameters import (
    LMStrategyParameters,
    MagnitudeLMParameters,
    OWLParameters,
    SparseGPTParameters,
    WandaLMParameters,
    parse_nm,
)
from .selection import layer_mask, nm_mask, prune_count_of, row_mask
from .sparsegpt import sparsegpt_prune

Masks = dict[str, torch.Tensor]


class LMStrategy(Strategy):
    """Shared planning: which linear layers, in which block, how many weights each loses."""

    Parameters = LMStrategyParameters
    uses_data = True
    hessian = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nm = parse_nm(self.options.nm)
        self.blocks_name, self.blocks = find_blocks(self.model, self.prunable)
        self.layers = self._layers_by_block()
        self.report: dict[str, Any] = {}
        self._check()

    # -- planning -------------------------------------------------------------
    def _layers_by_block(self) -> list[dict[str, nn.Linear]]:
        """Prunable linear layers of each block, keyed by parameter name."""
        modules = dict(self.model.named_modules())
        per_block: list[dict[str, nn.Linear]] = [{} for _ in self.blocks]
        outside = []
        for name in self.prunable:
            owner, _, leaf = name.rpartition(".")
            module = modules.get(owner)
            prefix, _, rest = (
                owner.partition(f"{self.blocks_name}.") if self.blocks_name else ("", "", owner)
            )
            index = rest.split(".")[0] if rest else ""
            if (
                leaf != "weight"
                or not isinstance(module, nn.Linear)
                or prefix
                or not index.isdigit()
            ):
                outside.append(name)
                continue
            per_block[int(index)][name] = module
        if outside:
            raise UserError(
                f"{type(self).__name__} prunes the linear layers inside the transformer blocks "
                f"({self.blocks_name}); these prunable parameters are not: "
                f"{', '.join(outside[:5])}. Exclude them with the prunable rule "
                "(-p 'prunable.exclude=[...]')"
            )
        return per_block

    def _check(self) -> None:
        problems = []
        if self.nm and self.options.sparsity is not None:
            problems.append("strategy: set either nm (N:M pattern) or sparsity, not both")
        if self.nm:
            bad = [
                f"{name} ({module.in_features} inputs)"
                for layers in self.layers
                for name, module in layers.items()
                if module.in_features % self.nm[1]
            ]
            if bad:
                problems.append(
                    f"strategy.nm: input sizes not a multiple of m={self.nm[1]}: "
                    + ", ".join(bad[:5])
                )
        blocksize = getattr(self.options, "blocksize", None)
        if self.nm and blocksize and blocksize % self.nm[1]:
            problems.append(f"strategy.blocksize {blocksize} is not a multiple of m={self.nm[1]}")
        if problems:
            raise ConfigError(problems, title=f"{type(self).__name__} cannot prune this model")

    def prune_counts(self) -> dict[str, int]:
        """Weights each layer loses (unstructured; N:M fixes its own)."""
        sizes = {n: m.weight.numel() for layers in self.layers for n, m in layers.items()}
        if self.options.sparsity is not None:
            return {n: prune_count_of(size, self.options.sparsity) for n, size in sizes.items()}
        keep = allocate_counts(sizes, self.keep)
        return {n: sizes[n] - keep[n] for n in sizes}

    def calibration_ids(self) -> torch.Tensor:
        """The calibration windows ``[samples, seqlen]`` of token ids."""
        batches = self._require_data()
        ids = torch.cat([inputs for inputs, _ in batches])
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int):
            raise UserError(
                f"{type(self).__name__} calibrates on token windows [N, T]; got inputs "
                f"{tuple(ids.shape)} {ids.dtype}: use a text dataset"
            )
        # options.samples / seqlen hold calibration.samples / seqlen (the runner links them)
        samples, seqlen = self.options.samples, self.options.seqlen
        if samples is not None:
            if ids.shape[0] < samples:
                raise UserError(
                    f"calibration.samples={samples} but only {ids.shape[0]} calibration windows "
                    "were given (the training split is shorter, or a caller passed fewer); "
                    "lower calibration.samples"
                )
            ids = ids[:samples]
        if seqlen is not None:
            if seqlen > ids.shape[1]:
                raise UserError(
                    f"calibration.seqlen={seqlen} > the dataset's window of {ids.shape[1]} "
                    "tokens; raise -p dataset.seqlen"
                )
            ids = ids[:, :seqlen]
        device = next(self.model.parameters()).device
        return ids.to(device)

    # -- pruning --------------------------------------------------------------
    def prune_layer(
        self, name: str, layer: nn.Linear, stats: LayerStatistics | None, count: int
    ) -> torch.Tensor:
        """Keep-mask of one layer (may update the layer's weight); implemented by subclasses."""
        raise NotImplementedError

    def select(self, scores: torch.Tensor, count: int, groups: str = "row") -> torch.Tensor:
        """N:M, per-row or per-layer keep-mask from ``scores`` (higher = keep)."""
        if self.nm:
            return nm_mask(scores, *self.nm)
        return row_mask(scores, count) if groups == "row" else layer_mask(scores, count)

    def model_masks(self) -> Masks:
        counts = self.prune_counts() if not self.nm else {}
        masks: Masks = {}
        if not self.uses_data:
            for layers in self.layers:
                for name, layer in layers.items():
                    masks[name] = self._apply(
                        layer, self.prune_layer(name, layer, None, counts.get(name, 0))
                    )
            return masks
        ids = self.calibration_ids()
        for index, _block, run in sequential_blocks(
            self.model, self.blocks, ids, description=f"{type(self).__name__} blocks"
        ):
            layers = self.layers[index]
            stats = run.statistics(layers, hessian=self.hessian)
            for name, layer in layers.items():
                mask = self.prune_layer(name, layer, stats[name], counts.get(name, 0))
                masks[name] = self._apply(layer, mask)
                stats[name] = LayerStatistics()  # free the Hessian before the next layer
        return masks

    @staticmethod
    def _apply(layer: nn.Linear, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            layer.weight.mul_(mask.to(layer.weight.device, layer.weight.dtype))
        return mask.to(layer.weight.device)


class MagnitudeLM(LMStrategy):
    """|w| within each linear layer (or each row): the magnitude baseline of LM papers."""

    Parameters = MagnitudeLMParameters
    uses_data = False

    def prune_layer(self, name, layer, stats, count):
        return self.select(layer.weight.detach().abs().float(), count, self.options.groups)


class WandaLM(LMStrategy):
    """Wanda: ``|W_ij| ||X_j||_2``, compared within each output row (or N:M group)."""

    Parameters = WandaLMParameters

    def prune_layer(self, name, layer, stats, count):
        return self.select(wanda_scores(layer.weight, stats.sq_norms), count, "row")


class SparseGPT(LMStrategy):
    """SparseGPT: OBS reconstruction of each layer from its calibration Hessian."""

    Parameters = SparseGPTParameters
    hessian = True

    def prune_layer(self, name, layer, stats, count):
        weight, mask = sparsegpt_prune(
            layer.weight.detach(),
            stats.take_mean_hessian(),
            prune_count=count,
            nm=self.nm,
            blocksize=self.options.blocksize,
            percdamp=self.options.percdamp,
            overwrite_hessian=True,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
        return mask


class OWL(LMStrategy):
    """OWL: per-block sparsity from outlier ratios, then Wanda or SparseGPT per layer."""

    Parameters = OWLParameters

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hessian = self.options.base == "sparsegpt"

    def block_sparsities(self, ids: torch.Tensor, target: float) -> list[float]:
        """Outlier ratio of each block on the dense model, turned into block sparsities."""
        ratios = []
        for index, _block, run in sequential_blocks(
            self.model, self.blocks, ids, description="OWL outliers"
        ):
            layers = self.layers[index]
            stats = run.statistics(layers)
            scores = [wanda_scores(layers[n].weight, stats[n].sq_norms) for n in layers]
            ratios.append(outlier_ratio(scores, self.options.outlier_m))
        sparsities = owl_sparsities(ratios, target, self.options.lamda)
        self.report = {"outlier_ratios": ratios, "block_sparsities": sparsities}
        return sparsities

    def prune_counts(self) -> dict[str, int]:
        sparsity = self.options.sparsity
        target = sparsity if sparsity is not None else 1.0 - self.fraction
        if self.nm:
            n, m = self.nm
            target = 1.0 - n / m
        sparsities = self.block_sparsities(self.calibration_ids(), target)
        counts = {}
        for index, layers in enumerate(self.layers):
            for name, layer in layers.items():
                counts[name] = prune_count_of(layer.weight.numel(), sparsities[index])
        if self.nm:
            self._nm_per_layer = {
                name: (min(max(round(m * (1 - sparsities[i])), 1), m - 1), m)
                for i, layers in enumerate(self.layers)
                for name in layers
            }
            self.report["nm_per_block"] = [
                f"{min(max(round(m * (1 - s)), 1), m - 1)}:{m}" for s in sparsities
            ]
        return counts

    def model_masks(self) -> Masks:
        if self.nm:
            counts = self.prune_counts()
            base_nm, self.nm = self.nm, None  # per-layer patterns below
            try:
                self._counts = counts
                return self._sequential()
            finally:
                self.nm = base_nm
        self._counts = self.prune_counts()
        return self._sequential()

    def _sequential(self) -> Masks:
        ids = self.calibration_ids()
        masks: Masks = {}
        for index, _block, run in sequential_blocks(
            self.model, self.blocks, ids, description=f"OWL+{self.options.base} blocks"
        ):
            layers = self.layers[index]
            stats = run.statistics(layers, hessian=self.hessian)
            for name, layer in layers.items():
                masks[name] = self._apply(layer, self._prune(name, layer, stats[name]))
                stats[name] = LayerStatistics()
        return masks

    def _prune(self, name: str, layer: nn.Linear, stats: LayerStatistics) -> torch.Tensor:
        nm = getattr(self, "_nm_per_layer", {}).get(name)
        count = self._counts[name]
        if self.options.base == "sparsegpt":
            weight, mask = sparsegpt_prune(
                layer.weight.detach(),
                stats.take_mean_hessian(),
                prune_count=count,
                nm=nm,
                blocksize=self.options.blocksize,
                percdamp=self.options.percdamp,
                overwrite_hessian=True,
            )
            with torch.no_grad():
                layer.weight.copy_(weight)
            return mask
        scores = wanda_scores(layer.weight, stats.sq_norms)
        return nm_mask(scores, *nm) if nm else row_mask(scores, count)

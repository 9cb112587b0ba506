"""Wanda: pruning by weights and activations (Sun et al. 2023).

The score of weight ``W_ij`` is ``|W_ij| * ||X_j||_2``: its magnitude times the
Euclidean norm of input channel ``j`` over every example and position of the
calibration batches. Every layer keeps the same fraction of its weights
(layerwise, exact total count). Scores are compared within the whole layer
(``comparison="layer"``, default) or, as in the paper, within each output row
(``comparison="output"``): every row then keeps the same number of weights, up
to one, and the layer still keeps exactly its allotted count.
Parameters that are not the weight of a Linear or convolution layer have no
input channels and are scored by ``|w|`` alone.
"""

from __future__ import annotations

import torch

from shrinkbench_core.pruning import LayerStrategy, Masks, allocate_counts
from shrinkbench_core.pruning.strategy import input_activation_importance
from shrinkbench_strategies.params import WandaParameters


def row_masks(scores: torch.Tensor, alive: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Keep the ``counts[r]`` highest scores of each row ``r`` (dim 0), alive entries only."""
    flat = scores.reshape(scores.shape[0], -1).float()
    ranked = torch.where(alive.reshape(flat.shape), flat, torch.tensor(float("-inf")))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    kept_sorted = positions < counts.to(flat.device).reshape(-1, 1)
    kept = torch.zeros_like(kept_sorted).scatter_(1, order, kept_sorted)
    return kept.reshape(scores.shape)


class Wanda(LayerStrategy):
    """Keep the largest ``|w| * ||X_j||_2`` in every layer (or every output row)."""

    Parameters = WandaParameters

    def input_norms(self) -> dict[str, torch.Tensor]:
        """``||X_j||_2`` of each weight's input channel, broadcast to the weight's shape."""
        if not hasattr(self, "_input_norms"):
            self._input_norms = input_activation_importance(
                self.model, self.prunable, self._require_data(), norm="l2"
            )
        return self._input_norms

    def scores(self) -> dict[str, torch.Tensor]:
        """``|W_ij| * ||X_j||_2`` per prunable weight."""
        norms = self.input_norms()
        return {name: p.abs() * norms[name] for name, p in self.params().items()}

    def layer_masks(self, module_name, module) -> Masks:
        params = self.module_params(module_name)
        norms = self.input_norms()
        masks: Masks = {}
        for name, p in params.items():
            score = p.abs() * norms[name]
            if self.options.comparison == "layer" or p.dim() < 2:
                masks[name] = self.layer_mask(name, score)
            else:
                masks[name] = self.output_row_mask(name, score)
        return masks

    def output_row_mask(self, name: str, score: torch.Tensor) -> torch.Tensor:
        """The layer's allotted count, spread evenly over its output rows (dim 0)."""
        if not hasattr(self, "_layer_keep"):
            self._layer_keep = self.layer_keep()
        param = self.params()[name]
        alive = param != 0
        rows = alive.reshape(alive.shape[0], -1)
        width = len(str(rows.shape[0]))
        sizes = {f"{r:0{width}d}": rows.shape[1] for r in range(rows.shape[0])}
        capacity = {f"{r:0{width}d}": int(c) for r, c in enumerate(rows.sum(1).tolist())}
        counts = allocate_counts(sizes, self._layer_keep[name], capacity=capacity)
        per_row = torch.tensor([counts[key] for key in sizes], dtype=torch.long)
        return row_masks(score, alive, per_row)

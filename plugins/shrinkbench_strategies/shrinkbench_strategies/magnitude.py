"""Magnitude baselines: importance = |w| (Han et al. 2015)."""

from __future__ import annotations

import torch

from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy, map_importances


class GlobalMagWeight(Strategy):
    """Keep the largest-magnitude weights across all prunable layers."""

    def model_masks(self) -> Masks:
        return self.keep_top(map_importances(torch.abs, self.params(), elementwise=True))


class LayerMagWeight(LayerStrategy):
    """Keep the same fraction of largest-magnitude weights in every layer."""

    def layer_masks(self, module_name, module) -> Masks:
        return {
            name: self.layer_mask(name, p.abs())
            for name, p in self.module_params(module_name).items()
        }

"""Gradient-magnitude baselines: importance = |w * dL/dw| on calibration batches.

The first-order Taylor estimate of the loss change when a weight is removed
(Molchanov et al. 2017), as in the original ShrinkBench ``*MagGrad``.
"""

from __future__ import annotations

from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy


class GlobalMagGrad(Strategy):
    """Keep the weights with the largest |weight x gradient| across all layers."""

    def model_masks(self) -> Masks:
        grads = self.gradients()
        return self.keep_top({name: (p * grads[name]).abs() for name, p in self.params().items()})


class LayerMagGrad(LayerStrategy):
    """Keep the same fraction of largest |weight x gradient| in every layer."""

    def layer_masks(self, module_name, module) -> Masks:
        grads = self.gradients()
        return {
            name: self.layer_mask(name, (p * grads[name]).abs())
            for name, p in self.module_params(module_name).items()
        }

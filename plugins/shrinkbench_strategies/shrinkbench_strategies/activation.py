"""Activation-magnitude baselines: importance = |w| x mean |input activation|.

The input statistic is the mean absolute activation of the weight's input
channel over the calibration batches (the original ShrinkBench ``*MagAct``).
"""

from __future__ import annotations

from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy


class GlobalMagAct(Strategy):
    """Keep the weights with the largest |weight| x input activation across all layers."""

    def model_masks(self) -> Masks:
        acts = self.activations()
        return self.keep_top({name: p.abs() * acts[name] for name, p in self.params().items()})


class LayerMagAct(LayerStrategy):
    """Keep the same fraction of largest |weight| x input activation in every layer."""

    def layer_masks(self, module_name, module) -> Masks:
        acts = self.activations()
        return {
            name: self.layer_mask(name, p.abs() * acts[name])
            for name, p in self.module_params(module_name).items()
        }

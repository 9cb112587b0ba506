"""Gradient-magnitude baselines: importance = |w * dL/dw| on calibration batches.

The first-order Taylor estimate of the loss change when a weight is removed
(Molchanov et al. 2017), the original ShrinkBench's ``*MagGrad``. The gradient is
the mean over the calibration batches of the cross-entropy's gradient, measured
with the model in train mode by default (BatchNorm on batch statistics, as the
original measured it) or in eval mode with ``bn_mode="eval"``; the model's
weights, buffers and ``.grad`` are left as they were.
"""

from __future__ import annotations

import torch

from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy
from shrinkbench_core.pruning.strategy import compute_gradients
from shrinkbench_strategies.params import MagGradParameters


class _GradientMixin:
    Parameters = MagGradParameters

    def gradients(self) -> dict[str, torch.Tensor]:
        """Mean calibration gradient per prunable parameter, in the chosen ``bn_mode``."""
        if self._gradients is None:
            train = self.options.bn_mode == "train"
            self._gradients = compute_gradients(
                self.model, self.prunable, self._require_data(), train=train
            )
        return self._gradients


class GlobalMagGrad(_GradientMixin, Strategy):
    """Keep the weights with the largest |weight x gradient| across all layers."""

    def model_masks(self) -> Masks:
        grads = self.gradients()
        return self.keep_top({name: (p * grads[name]).abs() for name, p in self.params().items()})


class LayerMagGrad(_GradientMixin, LayerStrategy):
    """Keep the same fraction of largest |weight x gradient| in every layer."""

    def layer_masks(self, module_name, module) -> Masks:
        grads = self.gradients()
        return {
            name: self.layer_mask(name, (p * grads[name]).abs())
            for name, p in self.module_params(module_name).items()
        }

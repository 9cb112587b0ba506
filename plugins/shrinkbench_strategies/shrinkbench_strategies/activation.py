"""Activation-magnitude baselines: importance = |w| x input-channel activation.

The input statistic of a weight's input channel over the calibration batches is
the mean absolute activation by default (``statistic="mean_abs"``), or the
absolute value of the mean activation (``statistic="abs_mean"``), which is what
the original ShrinkBench's ``*MagAct`` used. The two agree on non-negative inputs
(after a ReLU) and differ on signed ones (a network's first layer, inputs after
BatchNorm): a channel of large zero-mean activations scores near zero under
``abs_mean``. Activations are measured in train mode by default (BatchNorm on
batch statistics, as the original did), or in eval mode with ``bn_mode="eval"``.
"""

from __future__ import annotations

import torch

from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy
from shrinkbench_core.pruning.strategy import input_activation_importance
from shrinkbench_strategies.params import MagActParameters

_NORMS = {"mean_abs": "l1", "abs_mean": "abs_mean"}


class _ActivationMixin:
    Parameters = MagActParameters

    def activations(self) -> dict[str, torch.Tensor]:
        """The chosen input statistic, broadcast to every prunable weight."""
        if self._activations is None:
            self._activations = input_activation_importance(
                self.model,
                self.prunable,
                self._require_data(),
                norm=_NORMS[self.options.statistic],
                train=self.options.bn_mode == "train",
            )
        return self._activations


class GlobalMagAct(_ActivationMixin, Strategy):
    """Keep the weights with the largest |weight| x input activation across all layers."""

    def model_masks(self) -> Masks:
        acts = self.activations()
        return self.keep_top({name: p.abs() * acts[name] for name, p in self.params().items()})


class LayerMagAct(_ActivationMixin, LayerStrategy):
    """Keep the same fraction of largest |weight| x input activation in every layer."""

    def layer_masks(self, module_name, module) -> Masks:
        acts = self.activations()
        return {
            name: self.layer_mask(name, p.abs() * acts[name])
            for name, p in self.module_params(module_name).items()
        }

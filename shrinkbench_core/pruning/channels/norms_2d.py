"""torchvision ConvNeXt's ``LayerNorm2d`` with removed channels (see :mod:`.norms`)."""

from __future__ import annotations

import torch
from torchvision.models.convnext import LayerNorm2d

from shrinkbench_core.pruning.channels.norms import padded_layer_norm


class PaddedLayerNorm2d(LayerNorm2d):
    """``LayerNorm2d`` over kept channels, with the statistics of ``full_width`` channels."""

    full_width: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = padded_layer_norm(x.permute(0, 2, 3, 1), self.full_width, self.weight, self.bias,
                              self.eps)  # fmt: skip
        return x.permute(0, 3, 1, 2)

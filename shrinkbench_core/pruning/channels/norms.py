"""LayerNorm over channels of which some were removed.

In the masked model a removed channel is exactly zero at the LayerNorm's input
and still counts in its mean and variance; its weight and bias entries are
masked, so its output is zero. The shrunk model's LayerNorm normalizes the kept
channels with the statistics of the full width (the removed channels taken as
zeros), so its outputs equal the masked model's. ``PaddedLayerNorm`` replaces an
``nn.LayerNorm`` (last dimension); ``PaddedLayerNorm2d`` torchvision's
``LayerNorm2d`` (dimension 1 of NCHW). Both keep the parameter names.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PaddedLayerNorm", "is_layer_norm_2d", "padded_class", "padded_layer_norm"]


def padded_layer_norm(
    x: torch.Tensor,
    full_width: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """LayerNorm over the last dimension of ``x`` as if it had ``full_width`` entries, the
    missing ones zero."""
    kept = x.shape[-1]
    mean = x.sum(-1, keepdim=True) / full_width
    centered = x - mean
    variance = (centered.pow(2).sum(-1, keepdim=True) + (full_width - kept) * mean.pow(2)) / (
        full_width
    )
    out = centered * torch.rsqrt(variance + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


class PaddedLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over kept channels, with the statistics of ``full_width`` channels."""

    full_width: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return padded_layer_norm(x, self.full_width, self.weight, self.bias, self.eps)


def is_layer_norm_2d(module: nn.Module | None) -> bool:
    """torchvision's ``LayerNorm2d`` (ConvNeXt): a LayerNorm over dim 1 of NCHW."""
    return type(module).__name__ in ("LayerNorm2d", "PaddedLayerNorm2d") and type(
        module
    ).__module__.startswith(("torchvision.", "shrinkbench_core."))


def padded_class(module: nn.Module) -> type[nn.Module]:
    """The padded replacement class of a LayerNorm module."""
    if is_layer_norm_2d(module):
        from shrinkbench_core.pruning.channels.norms_2d import PaddedLayerNorm2d

        return PaddedLayerNorm2d
    from shrinkbench_core.pruning.channels.hf_stream import PaddedRMSNorm, is_rms_norm

    return PaddedRMSNorm if is_rms_norm(module) else PaddedLayerNorm

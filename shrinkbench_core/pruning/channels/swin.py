"""Swin window attention with heads removed (torchvision's ``ShiftedWindowAttention``/V2).

torchvision's functional window attention derives the head width from the
embedding width, so a module whose heads were partly removed needs its own
forward: the subclasses here keep every attribute and parameter name of the
original (state dicts and masks still fit) and compute the same windowed,
shifted attention with the head width taken from the ``qkv`` layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

__all__ = ["PrunedShiftedWindowAttention", "PrunedShiftedWindowAttentionV2", "pruned_class"]


def _shift_mask(
    height: int, width: int, window: list[int], shift: list[int], device: torch.device
) -> torch.Tensor:
    """Additive mask (windows, N, N): -100 between tokens from different regions of the
    cyclically shifted map, so that attention stays within each original region."""
    labels = torch.zeros(height, width, device=device)
    bounds_h = ((0, height - window[0]), (height - window[0], height - shift[0]),
                (height - shift[0], height))  # fmt: skip
    bounds_w = ((0, width - window[1]), (width - window[1], width - shift[1]),
                (width - shift[1], width))  # fmt: skip
    region = 0
    for top, bottom in bounds_h:
        for left, right in bounds_w:
            labels[top:bottom, left:right] = region
            region += 1
    labels = _windows(labels[None, :, :, None], window).squeeze(-1)  # (windows, N)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)


def _windows(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window_h * window_w, C)."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window[0], window[0], width // window[1], window[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], channels)


def _merge(x: torch.Tensor, window: list[int], batch: int, height: int, width: int):
    """Inverse of :func:`_windows`."""
    x = x.view(batch, height // window[0], width // window[1], window[0], window[1], -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, -1)


def window_attention(module: ShiftedWindowAttention, x: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Shifted-window multi-head self-attention of ``module`` on ``x`` (B, H, W, C)."""
    batch, height, width, _ = x.shape
    window = list(module.window_size)
    x = F.pad(x, (0, 0, 0, (-width) % window[1], 0, (-height) % window[0]))
    padded_h, padded_w = x.shape[1], x.shape[2]
    shift = [0 if window[0] >= padded_h else module.shift_size[0],
             0 if window[1] >= padded_w else module.shift_size[1]]  # fmt: skip
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    tokens = _windows(x, window)
    bias = module.qkv.bias
    if cosine and bias is not None:  # V2 has no key bias
        bias = bias.clone()
        third = bias.numel() // 3
        bias[third : 2 * third] = 0
    qkv = F.linear(tokens, module.qkv.weight, bias)
    heads = module.num_heads
    head_width = qkv.shape[-1] // (3 * heads)
    q, k, v = qkv.reshape(tokens.shape[0], tokens.shape[1], 3, heads, head_width).permute(
        2, 0, 3, 1, 4
    )
    if cosine:
        scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        scores = scores * torch.clamp(module.logit_scale, max=math.log(100.0)).exp()
    else:
        scores = (q * head_width**-0.5) @ k.transpose(-2, -1)
    scores = scores + module.get_relative_position_bias()
    if any(shift):
        mask = _shift_mask(padded_h, padded_w, window, shift, x.device)
        count = mask.shape[0]
        scores = scores.view(-1, count, heads, *scores.shape[-2:]) + mask[None, :, None]
        scores = scores.view(-1, heads, *scores.shape[-2:])
    weights = F.dropout(scores.softmax(-1), module.attention_dropout, module.training)
    out = (weights @ v).transpose(1, 2).reshape(tokens.shape[0], tokens.shape[1], -1)
    out = F.dropout(module.proj(out), module.dropout, module.training)
    out = _merge(out, window, batch, padded_h, padded_w)
    if any(shift):
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
    return out[:, :height, :width, :].contiguous()


class PrunedShiftedWindowAttention(ShiftedWindowAttention):
    """``ShiftedWindowAttention`` whose inner width (heads x head width) may be smaller
    than its embedding width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_attention(self, x, cosine=False)


class PrunedShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
    """``ShiftedWindowAttentionV2`` (cosine attention) with heads removed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_attention(self, x, cosine=True)


def pruned_class(module: torch.nn.Module) -> type | None:
    """The pruned subclass for a Swin attention module, or None."""
    if isinstance(module, ShiftedWindowAttentionV2):
        return PrunedShiftedWindowAttentionV2
    if isinstance(module, ShiftedWindowAttention):
        return PrunedShiftedWindowAttention
    return None

"""Structured baselines: remove whole output channels (filters) by their norm.

A channel's score is the L1 or L2 norm of its weights (Li et al. 2017),
divided by the number of its weights (L1) or its square root (L2) so that
channels of differently sized layers compare fairly in the global variant.
Channels are removed from the lowest score up until the budget is met, so the
achieved compression is at least the requested one and exceeds it by less
than one channel's weights. Every layer keeps at least one channel.
"""

from __future__ import annotations

import torch

from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy
from shrinkbench_strategies.params import ChannelParameters


def channel_scores(weight: torch.Tensor, norm: str) -> torch.Tensor:
    """Size-normalized L1 or L2 norm of each output channel (dim 0) of ``weight``."""
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    if norm == "l1":
        return flat.abs().mean(1)
    return flat.pow(2).mean(1).sqrt()


def channel_masks(weight: torch.Tensor, kept_channels: torch.Tensor) -> torch.Tensor:
    """Keep-mask of ``weight`` keeping the output channels flagged in ``kept_channels``."""
    shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
    return kept_channels.reshape(shape).expand_as(weight).clone()


class GlobalChannelNorm(Strategy):
    """Remove the lowest-norm output channels across all prunable layers."""

    Parameters = ChannelParameters

    def model_masks(self) -> Masks:
        params = self.params()
        entries = []  # (score, channel size, layer, channel index)
        for name, p in params.items():
            scores = channel_scores(p, self.options.norm)
            size = p[0].numel()
            best = int(torch.argmax(scores))
            for index, score in enumerate(scores.tolist()):
                forced = index == best  # every layer keeps at least one channel
                entries.append((float("inf") if forced else score, size, name, index))
        entries.sort(key=lambda e: (-e[0], list(params).index(e[2]), e[3]))
        kept = {name: torch.zeros(p.shape[0], dtype=torch.bool) for name, p in params.items()}
        budget = self.keep - sum(size for score, size, _, _ in entries if score == float("inf"))
        for score, size, name, index in entries:
            if score == float("inf"):
                kept[name][index] = True
            elif size <= budget:
                kept[name][index] = True
                budget -= size
            else:
                break
        return {name: channel_masks(p, kept[name].to(p.device)) for name, p in params.items()}


class LayerChannelNorm(LayerStrategy):
    """Remove the same fraction of lowest-norm output channels in every layer."""

    Parameters = ChannelParameters

    def layer_masks(self, module_name, module) -> Masks:
        masks: Masks = {}
        for name, p in self.module_params(module_name).items():
            channels = p.shape[0]
            keep = max(1, int(self.fraction * channels))
            scores = channel_scores(p, self.options.norm)
            order = torch.sort(scores, descending=True, stable=True).indices[:keep]
            kept = torch.zeros(channels, dtype=torch.bool, device=p.device)
            kept[order] = True
            masks[name] = channel_masks(p, kept)
        return masks

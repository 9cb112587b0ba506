"""Units of channel removal: single tied channels, or bundles that keep grouped convolutions
balanced; and a uniform selection (the same share of every group).

A group whose channels a grouped convolution reads or writes (ResNeXt, RegNet) can
only lose the same number of channels in every convolution group; its removal
units are *bundles* holding the ``r``-th lowest-scored channel of every convolution
group. Any other group's units are its single tied channels. Every group keeps at
least one unit (its best), so no layer loses all its channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shrinkbench_core.pruning.channels.graph import ChannelGroup, TiedChannel

__all__ = [
    "Unit",
    "lowest_norm_channels",
    "norm_scores",
    "removal_units",
    "uniform_selection",
]


@dataclass(frozen=True)
class Unit:
    """Tied channels removed together, and their score (the mean of theirs)."""

    score: float
    channels: tuple[TiedChannel, ...]


def removal_units(
    group: ChannelGroup, scores: Sequence[float], candidates: Sequence[int] | None = None
) -> list[Unit]:
    """The removal units of ``group`` among ``candidates`` (indices into its channels,
    default: the removable ones), lowest score first; the group's best unit is left out."""
    candidates = list(group.removable if candidates is None else candidates)
    slots = group.slots()
    if slots is None:
        ranked = sorted(candidates, key=lambda i: (scores[i], i))
        if len(ranked) == group.size:
            ranked = ranked[:-1]
        return [Unit(float(scores[i]), (group.channels[i],)) for i in ranked]
    by_slot: dict[int, list[int]] = {slot: [] for slot in set(slots)}
    for index in candidates:
        by_slot[slots[index]].append(index)
    if not all(by_slot.values()):
        return []  # a convolution group with nothing removable: none can lose channels
    members = [sorted(indices, key=lambda i: (scores[i], i)) for indices in by_slot.values()]
    # Every convolution group keeps at least one channel.
    depth = min(min(len(indices) for indices in members), min(map(slots.count, by_slot)) - 1)
    units = []
    for rank in range(depth):
        chosen = [indices[rank] for indices in members]
        score = sum(float(scores[i]) for i in chosen) / len(chosen)
        units.append(Unit(score, tuple(group.channels[i] for i in chosen)))
    return units


def uniform_selection(
    groups: Sequence[ChannelGroup],
    share: float,
    scores: Callable[[ChannelGroup], Sequence[float]],
) -> list[TiedChannel]:
    """The lowest-scored ``share`` of every group's removal units (Torch-Pruning's
    ``pruning_ratio``): ``round(share * units)`` per group, the best unit always kept."""
    chosen: list[TiedChannel] = []
    for group in groups:
        units = removal_units(group, scores(group))
        total = len(units) + (1 if _keeps_best(group) else 0)
        for unit in units[: min(round(share * total), len(units))]:
            chosen.extend(unit.channels)
    return chosen


def _keeps_best(group: ChannelGroup) -> bool:
    return len(group.removable) == group.size


def norm_scores(model: nn.Module, p: float = 1.0) -> Callable[[ChannelGroup], list[float]]:
    """Scores for :func:`uniform_selection`: L-p norm of each tied channel's producer rows."""
    from shrinkbench_core.pruning.structured import channel_norms

    def score(group: ChannelGroup) -> list[float]:
        return channel_norms(model, group, p).tolist()

    return score


def lowest_norm_channels(model: nn.Module, groups: Sequence[ChannelGroup], share: float):
    """The ``share`` of lowest-L1 removal units of every group (benchmarks and tests)."""
    with torch.no_grad():
        return uniform_selection(groups, share, norm_scores(model))

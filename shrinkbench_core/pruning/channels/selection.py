"""Units of channel removal: single tied channels, bundles that keep grouped convolutions
balanced, or whole convolution groups; and a uniform selection (the same share of every
group).

A group whose channels a grouped convolution reads or writes (ResNeXt, RegNet) can
only lose the same number of channels in every convolution group. Two ways respect
that (``grouped``):

* ``"channels"`` (the default): the group's removal units are *bundles* holding the
  ``r``-th lowest-scored channel of every convolution group;
* ``"groups"``: whole convolution groups go. Convolution group ``g`` of a grouped
  convolution is one unit holding the tied channels it reads (its input block) and
  those it writes (its output block), so the convolution loses input and output
  channels of the same groups and its ``groups`` shrinks; the producers and
  consumers of those channels shrink with them. The unit's score is the mean of its
  channels' scores. A convolution whose channels also pass through another grouped
  convolution, or whose channel groups are only partly read by it, keeps bundles.

Any other group's units are its single tied channels. Every group (and every grouped
convolution) keeps at least one unit (its best), so no layer loses all its channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from shrinkbench_core.pruning.channels.graph import ChannelGroup, TiedChannel

__all__ = [
    "GROUPED_MODES",
    "Grouped",
    "Unit",
    "lowest_norm_channels",
    "norm_scores",
    "removal_plan",
    "removal_units",
    "uniform_selection",
]

Grouped = Literal["channels", "groups"]
"""How grouped convolutions lose channels: as many from every group, or whole groups."""
GROUPED_MODES: tuple[str, ...] = get_args(Grouped)


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


Scores = Callable[[ChannelGroup], Sequence[float]]
"""Score of every tied channel of a group (higher = more important)."""
Candidates = Callable[[ChannelGroup], Sequence[int]]
"""Indices of a group's channels that may be removed."""


def removal_plan(
    groups: Sequence[ChannelGroup],
    scores: Scores,
    grouped: str = "channels",
    candidates: Candidates | None = None,
) -> list[list[Unit]]:
    """The removal units of ``groups``, one list per independent decision, lowest score first.

    A decision is one tied group's units (:func:`removal_units`), or with
    ``grouped="groups"`` one grouped convolution's whole convolution groups (the
    tied groups it reads and writes together). ``candidates(group)`` gives the indices
    that may go (default: the removable ones); ``scores`` is called once per group that
    has any. Decisions with nothing to remove are left out.
    """
    return [units for units, _ in _decisions(groups, scores, grouped, candidates) if units]


def _decisions(
    groups: Sequence[ChannelGroup], scores: Scores, grouped: str, candidates: Candidates | None
) -> list[tuple[list[Unit], int]]:
    """Each decision's units and its number of units counting a kept best one."""
    if grouped not in GROUPED_MODES:
        raise ValueError(
            f"grouped must be one of {', '.join(GROUPED_MODES)}, got {grouped!r}"
        )
    pick = candidates or (lambda group: group.removable)
    allowed = [list(pick(group)) for group in groups]
    decisions: list[tuple[list[Unit], int]] = []
    done: set[int] = set()
    if grouped == "groups":
        for members in _grouped_convolutions(groups).values():
            units, total = _whole_groups(groups, members, allowed, scores)
            decisions.append((units, total))
            done.update(members)
    for index, group in enumerate(groups):
        if index in done or not allowed[index]:
            continue
        units = removal_units(group, scores(group), allowed[index])
        keeps_best = len(allowed[index]) == group.size
        decisions.append((units, len(units) + (1 if keeps_best and units else 0)))
    return decisions


def _grouped_convolutions(groups: Sequence[ChannelGroup]) -> dict[str, list[int]]:
    """Per grouped convolution, the indices of the tied groups that lose whole convolution
    groups with it: every channel of those groups passes through this convolution only,
    within one convolution group (input and output block alike)."""
    touched: dict[str, set[int]] = {}
    for index, group in enumerate(groups):
        for channel in group.channels:
            for key in channel.slots:
                touched.setdefault(key.rpartition(":")[0], set()).add(index)
    eligible: dict[str, list[int]] = {}
    claimed: set[int] = set()
    for conv, members in touched.items():
        if members & claimed:
            continue
        channels = [channel for index in members for channel in groups[index].channels]
        if all(
            len(set(channel.slots.values())) == 1
            and min(channel.slots.values()) >= 0
            and {key.rpartition(":")[0] for key in channel.slots} == {conv}
            for channel in channels
        ) and _balanced(conv, channels):
            eligible[conv] = sorted(members)
            claimed.update(members)
    return eligible


def _balanced(conv: str, channels: Sequence[TiedChannel]) -> bool:
    """Whether every convolution group seen has as many input and as many output channels
    among ``channels`` as the others, and some of each (none is a model input, say)."""
    counts: dict[str, dict[int, int]] = {f"{conv}:in": {}, f"{conv}:out": {}}
    for channel in channels:
        for key, slot in channel.slots.items():
            counts[key][slot] = counts[key].get(slot, 0) + 1
    slots = set(counts[f"{conv}:in"]) | set(counts[f"{conv}:out"])
    return all(
        set(per_slot) == slots and len(set(per_slot.values())) == 1
        for per_slot in counts.values()
    )


def _whole_groups(
    groups: Sequence[ChannelGroup],
    members: list[int],
    allowed: list[list[int]],
    scores: Scores,
) -> tuple[list[Unit], int]:
    """One unit per convolution group of a grouped convolution: the tied channels of its
    input and output blocks; a group with a channel that may not go cannot go."""
    if not any(allowed[index] for index in members):
        return [], 0
    by_slot: dict[int, list[tuple[float, TiedChannel]]] = {}
    blocked: set[int] = set()
    for index in members:
        group, ok = groups[index], set(allowed[index])
        for position, (channel, score) in enumerate(
            zip(group.channels, scores(group), strict=True)
        ):
            slot = next(iter(channel.slots.values()))
            by_slot.setdefault(slot, []).append((float(score), channel))
            if position not in ok:
                blocked.add(slot)
    units = sorted(
        (
            Unit(sum(s for s, _ in entries) / len(entries), tuple(c for _, c in entries))
            for slot, entries in sorted(by_slot.items())
            if slot not in blocked
        ),
        key=lambda unit: unit.score,
    )
    if not blocked:
        units = units[:-1]  # the convolution keeps its best group
    return units, len(units) + (0 if blocked else 1)


def uniform_selection(
    groups: Sequence[ChannelGroup],
    share: float,
    scores: Scores,
    grouped: str = "channels",
) -> list[TiedChannel]:
    """The lowest-scored ``share`` of every decision's removal units (Torch-Pruning's
    ``pruning_ratio``): ``round(share * units)`` per decision, the best unit always kept
    (``grouped``: see :func:`removal_plan`)."""
    chosen: list[TiedChannel] = []
    for units, total in _decisions(groups, scores, grouped, None):
        for unit in units[: min(round(share * total), len(units))]:
            chosen.extend(unit.channels)
    return chosen


def norm_scores(model: nn.Module, p: float = 1.0) -> Callable[[ChannelGroup], list[float]]:
    """Scores for :func:`uniform_selection`: L-p norm of each tied channel's producer rows."""
    from shrinkbench_core.pruning.structured import channel_norms

    def score(group: ChannelGroup) -> list[float]:
        return channel_norms(model, group, p).tolist()

    return score


def lowest_norm_channels(
    model: nn.Module, groups: Sequence[ChannelGroup], share: float, grouped: str = "channels"
) -> list[TiedChannel]:
    """The ``share`` of lowest-L1 removal units of every group (benchmarks and tests)."""
    with torch.no_grad():
        return uniform_selection(groups, share, norm_scores(model), grouped)

"""Composable importance helpers, in torch, exact and deterministic.

Importances are mappings from parameter name to a tensor of the parameter's
shape (higher = more important). Selections keep *exactly* the requested
number of entries: entries above the threshold are kept, and ties at the
threshold are broken by position (parameter order, then flattened index), so
results never depend on how many values happen to equal the threshold.

Global selection is a two-pass radix select over the float bit patterns,
processed in chunks, so it never materializes a flat copy of all importances
(extra memory is about one byte per weight: the masks themselves).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

Importances = Mapping[str, torch.Tensor]
Masks = dict[str, torch.Tensor]

_CHUNK = 1 << 20  # elements processed at a time by the global selection
_BUCKETS = 1 << 16


class LazyImportances(Mapping[str, torch.Tensor]):
    """``fn(param)`` for each parameter, computed on access and never stored.

    ``elementwise=True`` promises that ``fn`` maps each entry independently
    (like ``torch.abs``), which lets selections score a sample of entries
    without scoring whole parameters.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        params: Mapping[str, torch.Tensor],
        elementwise: bool = False,
    ):
        self._fn = fn
        self._params = params
        self.elementwise = elementwise

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._fn(self._params[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def numel_of(self, name: str) -> int:
        """Number of values of ``name`` (without computing them when ``fn`` keeps shapes)."""
        param = self._params[name]
        return param.numel() if isinstance(param, torch.Tensor) else self[name].numel()

    def sample(self, name: str, positions: torch.Tensor) -> torch.Tensor:
        """Scores of the flattened ``positions`` of ``name`` (elementwise ``fn`` only)."""
        flat = self._params[name].detach().reshape(-1)
        return self._fn(flat[positions.to(flat.device)])


class RankedImportances(Mapping[str, torch.Tensor]):
    """Importances with the entries of already-zero weights ranked last (``-inf``).

    Selecting from these keeps only nonzero weights, so the number of nonzero
    weights after pruning is exactly the number kept. ``any_zero=False`` skips
    the ranking when the caller knows no weight is zero.
    """

    def __init__(
        self,
        importances: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor],
        any_zero: bool = True,
    ):
        self._importances = importances
        self._params = params
        self._any_zero = any_zero

    def __getitem__(self, name: str) -> torch.Tensor:
        scores = self._importances[name].detach()
        fresh = isinstance(self._importances, LazyImportances)
        scores = scores.float() if fresh or scores.dtype != torch.float32 else scores.clone()
        if self._any_zero:
            scores.masked_fill_(self._params[name] == 0, float("-inf"))
        return scores

    def __iter__(self) -> Iterator[str]:
        return iter(self._importances)

    def __len__(self) -> int:
        return len(self._importances)

    def numel_of(self, name: str) -> int:
        """Number of entries of ``name``."""
        return self._params[name].numel()

    @property
    def elementwise(self) -> bool:
        """Whether the wrapped importances can be sampled entry by entry."""
        return bool(getattr(self._importances, "elementwise", False))

    def sample(self, name: str, positions: torch.Tensor) -> torch.Tensor:
        """Ranked scores of the flattened ``positions`` of ``name``."""
        scores = self._importances.sample(name, positions).float()  # type: ignore[attr-defined]
        if self._any_zero:
            alive = self._params[name].reshape(-1)[positions.to(scores.device)] != 0
            scores = torch.where(alive, scores, torch.tensor(float("-inf")))
        return scores


def map_importances(
    fn: Callable[[torch.Tensor], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    elementwise: bool = False,
) -> LazyImportances:
    """Apply ``fn`` (e.g. ``torch.abs``) to every parameter, lazily.

    Pass ``elementwise=True`` when ``fn`` scores each entry on its own: the
    global selection then samples entries instead of scoring whole tensors.
    """
    return LazyImportances(fn, params, elementwise)


def flatten_importances(importances: Importances) -> torch.Tensor:
    """All importances concatenated into one 1-D tensor (parameter order)."""
    return torch.cat([importances[name].detach().reshape(-1) for name in importances])


@dataclass(frozen=True)
class Threshold:
    """A selection threshold: keep values ``> value``, plus the first ``ties_kept`` equal to it."""

    value: float
    ties_kept: int
    keep: int

    def __float__(self) -> float:
        return float(self.value)


def _sortable_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys whose signed order equals the float order of ``values`` (NaN last)."""
    bits = values.detach().to(torch.float32).contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _key_to_float(key: int) -> float:
    bits = key ^ ((key >> 31) & 0x7FFFFFFF) if key < 0 else key
    return torch.tensor([bits], dtype=torch.int32).view(torch.float32).item()


def _chunks(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        yield flat[start : start + _CHUNK]


def _select_key(importances: Importances, keep: int) -> tuple[int, int]:
    """Radix-select the key of the ``keep``-th largest value; return (key, ties to keep)."""
    high = torch.zeros(_BUCKETS, dtype=torch.int64)
    for name in importances:
        for chunk in _chunks(importances[name]):
            high += torch.bincount((_sortable_keys(chunk) >> 16) + 32768, minlength=_BUCKETS)
    above = torch.flip(high, [0]).cumsum(0)  # values in this bucket or higher
    bucket = _BUCKETS - 1 - int(torch.searchsorted(above, keep))
    greater = int(above[_BUCKETS - 2 - bucket]) if bucket < _BUCKETS - 1 else 0
    low = torch.zeros(_BUCKETS, dtype=torch.int64)
    for name in importances:
        for chunk in _chunks(importances[name]):
            keys = _sortable_keys(chunk)
            in_bucket = keys[((keys >> 16) + 32768) == bucket]
            if in_bucket.numel():
                low += torch.bincount(in_bucket & 0xFFFF, minlength=_BUCKETS)
    low_above = torch.flip(low, [0]).cumsum(0) + greater
    index = int(torch.searchsorted(low_above, keep))
    low_value = _BUCKETS - 1 - index
    strictly_greater = int(low_above[index - 1]) if index > 0 else greater
    key = ((bucket - 32768) << 16) | low_value
    return key, keep - strictly_greater


def fraction_threshold(importances: Importances | torch.Tensor, fraction: float) -> Threshold:
    """The threshold that keeps ``round(fraction * n)`` of all values, exactly.

    ``importances`` is a mapping (selected across all its tensors) or a single
    tensor. ``fraction`` is the fraction to keep, in [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction to keep must be in [0, 1], got {fraction}")
    mapping = {"": importances} if isinstance(importances, torch.Tensor) else importances
    total = sum(mapping[name].numel() for name in mapping)
    keep = round(fraction * total)
    return count_threshold(mapping, keep)


def count_threshold(importances: Importances, keep: int) -> Threshold:
    """The threshold that keeps exactly ``keep`` values across ``importances``."""
    total = sum(importances[name].numel() for name in importances)
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} values")
    if keep == 0:
        return Threshold(float("inf"), 0, 0)
    if keep == total:
        return Threshold(float("-inf"), total, total)
    key, ties = _select_key(importances, keep)
    return Threshold(_key_to_float(key), ties, keep)


def importance_masks(importances: Importances, threshold: Threshold | float) -> Masks:
    """Boolean keep-masks: values above ``threshold`` (ties broken by position).

    A plain float threshold keeps values strictly greater than it.
    """
    if not isinstance(threshold, Threshold):
        return {name: importances[name] > threshold for name in importances}
    if threshold.keep == 0:
        return {name: torch.zeros_like(importances[name], dtype=torch.bool) for name in importances}
    if threshold.ties_kept == threshold.keep and threshold.value == float("-inf"):
        return {name: torch.ones_like(importances[name], dtype=torch.bool) for name in importances}
    key = int(_sortable_keys(torch.tensor([threshold.value])).item())
    ties_left = threshold.ties_kept
    masks: Masks = {}
    for name in importances:
        keys = _sortable_keys(importances[name])
        mask = keys > key
        if ties_left > 0:
            equal = keys == key
            count = int(equal.sum())
            if count <= ties_left:
                mask |= equal
            else:
                flat_equal = equal.reshape(-1)
                positions = flat_equal.nonzero().squeeze(1)[:ties_left]
                mask.view(-1)[positions] = True
                count = ties_left
            ties_left -= count
        masks[name] = mask
    return masks


def fraction_mask(importances: Importances | torch.Tensor, fraction: float) -> Masks | torch.Tensor:
    """Keep the ``fraction`` most important values (globally across a mapping)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction to keep must be in [0, 1], got {fraction}")
    if isinstance(importances, torch.Tensor):
        return top_count_masks({"": importances}, round(fraction * importances.numel()))[""]
    total = sum(_numel(importances, name) for name in importances)
    return top_count_masks(importances, round(fraction * total))


def _numel(importances: Importances, name: str) -> int:
    numel_of = getattr(importances, "numel_of", None)
    if numel_of is not None:
        return numel_of(name)
    return importances[name].numel()


_SAMPLE = 1 << 18  # importances sampled to bracket the threshold


def top_count_masks(importances: Importances, keep: int) -> Masks:
    """Keep exactly the ``keep`` most important values across ``importances``.

    Ties are broken by position (parameter order, then flattened index), exactly
    as a stable descending sort of all values would. A seeded random sample
    brackets the threshold, one pass keeps everything above the bracket and
    collects the few values inside it, and those are sorted exactly. Extra
    memory: the masks plus one parameter's scores at a time.
    """
    names = list(importances)
    sizes = [_numel(importances, name) for name in names]
    total = sum(sizes)
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} values")
    if keep in (0, total):
        return {
            name: torch.full_like(importances[name], keep == total, dtype=torch.bool)
            for name in names
        }
    low, high = _bracket(importances, names, sizes, keep)
    masks, kept_above, candidates = _split(importances, names, low, high)
    if not kept_above <= keep <= kept_above + sum(len(c[1]) for c in candidates):
        masks, kept_above, candidates = _split(importances, names, float("-inf"), float("inf"))
    _keep_candidates(masks, candidates, keep - kept_above)
    return masks


def _bracket(
    importances: Importances, names: list[str], sizes: list[int], keep: int
) -> tuple[float, float]:
    """Values that surely bracket the ``keep``-th largest, from a seeded sample."""
    total = sum(sizes)
    if total <= _SAMPLE:
        return float("-inf"), float("inf")
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(0, total, (_SAMPLE,), generator=generator).sort().values
    offsets = torch.tensor([0, *sizes]).cumsum(0)
    samples = []
    for index, name in enumerate(names):
        start, end = int(offsets[index]), int(offsets[index + 1])
        lo, hi = torch.searchsorted(positions, torch.tensor([start, end])).tolist()
        if hi > lo:
            local = positions[lo:hi] - start
            if getattr(importances, "elementwise", False):
                sample = importances.sample(name, local)  # type: ignore[attr-defined]
                samples.append(sample.float().cpu())
            else:
                flat = importances[name].detach().reshape(-1)
                samples.append(flat[local.to(flat.device)].float().cpu())
    values = torch.cat(samples).sort(descending=True).values
    rank = keep / total * _SAMPLE
    margin = 6 * math.sqrt(_SAMPLE * (keep / total) * (1 - keep / total)) + 64
    upper = int(rank - margin)
    lower = int(rank + margin)
    high = float(values[upper]) if upper >= 0 else float("inf")
    low = float(values[lower]) if lower < _SAMPLE else float("-inf")
    return low, high


def _split(
    importances: Importances, names: list[str], low: float, high: float
) -> tuple[Masks, int, list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """Masks of values above ``high``, and (name, positions, values) of those in [low, high]."""
    masks: Masks = {}
    kept = torch.zeros((), dtype=torch.int64)
    candidates = []
    for name in names:
        scores = importances[name].detach()
        mask = scores > high
        masks[name] = mask
        kept = kept + mask.sum().cpu()
        if low == float("-inf"):
            inside = ~mask
        else:
            inside = scores >= low
            inside &= scores <= high
        positions = inside.reshape(-1).nonzero().squeeze(1)
        if positions.numel():
            candidates.append((name, positions, scores.reshape(-1)[positions].float()))
    return masks, int(kept), candidates


def _keep_candidates(
    masks: Masks, candidates: list[tuple[str, torch.Tensor, torch.Tensor]], count: int
) -> None:
    """Keep the ``count`` best candidates (value descending, then position)."""
    if count <= 0 or not candidates:
        return
    values = torch.cat([c[2].cpu() for c in candidates])
    chosen = torch.zeros(values.numel(), dtype=torch.bool)
    chosen[torch.sort(values, descending=True, stable=True).indices[:count]] = True
    start = 0
    for name, positions, _ in candidates:
        picked = chosen[start : start + len(positions)].to(positions.device)
        masks[name].view(-1)[positions[picked]] = True
        start += len(positions)


def allocate_counts(
    sizes: Mapping[str, int], keep: int, capacity: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Split ``keep`` over layers in proportion to ``sizes``, summing exactly to ``keep``.

    Largest-remainder rounding; ``capacity`` caps what a layer can keep (e.g.
    its nonzero weights), the excess going to the others.
    """
    capacity = dict(capacity or sizes)
    total_capacity = sum(capacity.values())
    if keep > total_capacity:
        raise ValueError(f"cannot keep {keep} weights: only {total_capacity} available")
    allocation = {name: 0 for name in sizes}
    remaining, open_layers = keep, [name for name in sizes if capacity[name] > 0]
    while remaining > 0 and open_layers:
        weight = sum(sizes[name] for name in open_layers)
        shares = {name: remaining * sizes[name] / weight for name in open_layers}
        floors = {
            name: min(int(shares[name]), capacity[name] - allocation[name]) for name in open_layers
        }
        leftover = remaining - sum(floors.values())
        by_remainder = sorted(open_layers, key=lambda n: (-(shares[n] - int(shares[n])), n))
        for name in by_remainder:
            if leftover == 0:
                break
            if floors[name] < capacity[name] - allocation[name]:
                floors[name] += 1
                leftover -= 1
        for name in open_layers:
            allocation[name] += floors[name]
        remaining = keep - sum(allocation.values())
        open_layers = [name for name in open_layers if allocation[name] < capacity[name]]
    return allocation

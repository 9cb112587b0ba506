"""Composable importance helpers, in torch, exact and deterministic.

Importances are mappings from parameter name to a tensor of the parameter's
shape (higher = more important). Selections keep *exactly* the requested
number of entries: entries above the threshold are kept, and ties at the
threshold are broken by position (parameter order, then flattened index), so
results never depend on how many values happen to equal the threshold.

Global selection (:func:`top_count_masks`) brackets the threshold with a
seeded stratified sample, then scans the importances one piece at a time:
everything above the bracket goes straight into the masks and the few values
inside it are settled by an exact sort. Elementwise scores (like ``torch.abs``)
are computed piece by piece into a reused buffer, so extra memory is about one
byte per weight: the masks themselves. :func:`count_threshold` is the exact
radix select over float bit patterns for callers that want the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

import torch

Importances = Mapping[str, torch.Tensor]
Masks = dict[str, torch.Tensor]

_CHUNK = 1 << 20  # elements processed at a time by the global selection
_BUCKETS = 1 << 16
_SAMPLE = 1 << 18  # importances sampled to bracket the threshold (at least)
_SAMPLE_MAX = 1 << 22  # ... and at most: about total / 64 in between
_SCAN_CHUNK = 1 << 18  # entries scored at a time by the selection scan
_OUT_CAPABLE = {torch.abs, torch.square, torch.neg, torch.exp, torch.log1p}


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
        # torch's own elementwise functions can write into a reused buffer
        self._writes_out = elementwise and fn in _OUT_CAPABLE
        self._scratch: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

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
        picked = flat[positions.to(flat.device)]
        # score exactly as score_pieces does: float32 first for the functions it converts
        return self._fn(picked.float() if self._writes_out else picked)

    def shape_of(self, name: str) -> torch.Size:
        """Shape of the scores of ``name`` (that of the parameter)."""
        return self._params[name].shape

    def score_pieces(self, name: str) -> Iterator[tuple[int, torch.Tensor, bool]]:
        """``(offset, float32 scores, owned)`` of slices of the flattened parameter.

        An elementwise ``fn`` is applied slice by slice, so no more than one
        slice of scores exists at a time. ``owned`` scores share no memory with
        the parameter (the caller may modify them until it asks for the next).
        """
        param = self._params[name].detach()
        if not self.elementwise:
            scores = self[name].detach().reshape(-1)
            yield from _tensor_pieces(scores, owned=not _shares_memory(scores, param))
            return
        flat = param.reshape(-1)
        for start in range(0, flat.numel(), _SCAN_CHUNK):
            piece = flat[start : start + _SCAN_CHUNK]
            if self._writes_out:
                # into one reused float32 buffer, converting other dtypes (bf16) there too:
                # a fresh float copy per piece fragments the heap between the few
                # long-lived candidates kept per piece (4 B/param of growth measured)
                buffer = _scratch(self._scratch, torch.float32, piece.device)[: piece.numel()]
                source = piece
                if piece.dtype != torch.float32:
                    source = buffer.copy_(piece)
                yield start, self._fn(source, out=buffer), True
            else:
                scores = self._fn(piece).float()
                yield start, scores, not _shares_memory(scores, param)


def _scratch(
    cache: dict[tuple[torch.dtype, torch.device], torch.Tensor],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """A reusable piece-sized buffer: allocating one per piece or per parameter
    fragments the heap (small long-lived allocations land in the freed holes)."""
    key = (dtype, device)
    if key not in cache:
        cache[key] = torch.empty(_SCAN_CHUNK, dtype=dtype, device=device)
    return cache[key]


def _shares_memory(first: torch.Tensor, second: torch.Tensor) -> bool:
    return first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()


class RankedImportances(Mapping[str, torch.Tensor]):
    """Importances with the entries of already-zero weights ranked last (``-inf``).

    Selecting from these keeps only nonzero weights, so the number of nonzero
    weights after pruning is exactly the number kept. ``any_zero=False`` skips
    the ranking when the caller knows no weight is zero; a collection of names
    limits it to those parameters.
    """

    def __init__(
        self,
        importances: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor],
        any_zero: bool | Collection[str] = True,
    ):
        self._importances = importances
        self._params = params
        self._any_zero = any_zero
        self._scratch: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def _ranks(self, name: str) -> bool:
        if isinstance(self._any_zero, bool):
            return self._any_zero
        return name in self._any_zero

    def __getitem__(self, name: str) -> torch.Tensor:
        scores = self._importances[name].detach()
        fresh = isinstance(self._importances, LazyImportances)
        scores = scores.float() if fresh or scores.dtype != torch.float32 else scores.clone()
        if self._ranks(name):
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
        if self._ranks(name):
            alive = self._params[name].reshape(-1)[positions.to(scores.device)] != 0
            scores = torch.where(alive, scores, torch.tensor(float("-inf")))
        return scores

    def shape_of(self, name: str) -> torch.Size:
        """Shape of the scores of ``name`` (that of the parameter)."""
        return self._params[name].shape

    def score_pieces(self, name: str) -> Iterator[tuple[int, torch.Tensor, bool]]:
        """Ranked ``(offset, float32 scores, owned)`` slices of ``name``'s importances."""
        flat_param = self._params[name].detach().reshape(-1)
        ranks = self._ranks(name)
        for start, scores, owned in _score_pieces(self._importances, name):
            if ranks:
                size = scores.numel()
                piece = flat_param[start : start + size]
                if piece.device == scores.device:
                    dead = _scratch(self._scratch, torch.bool, scores.device)
                    is_dead = torch.eq(piece, 0, out=dead[:size])
                else:  # scores computed on another device than the weights
                    is_dead = (piece == 0).to(scores.device)
                if owned:
                    scores.masked_fill_(is_dead, float("-inf"))
                else:
                    scores, owned = scores.masked_fill(is_dead, float("-inf")), True
            yield start, scores, owned


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


def _score_pieces(importances: Importances, name: str) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """``(offset, float32 scores, owned)`` pieces of the flattened importances of ``name``.

    Mappings that can score a slice of a parameter on their own (an elementwise
    :class:`LazyImportances`, or :class:`RankedImportances` around one) provide
    ``score_pieces`` and never hold more than one piece of scores. A piece may be
    a reused buffer: use it before asking for the next. ``owned`` pieces share no
    memory with the caller's tensors and may be modified.
    """
    own = getattr(importances, "score_pieces", None)
    if own is not None:
        yield from own(name)
        return
    yield from _tensor_pieces(importances[name].detach().reshape(-1), owned=False)


def _tensor_pieces(flat: torch.Tensor, owned: bool) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """Float32 slices of a 1-D tensor; a converted slice is always a fresh copy."""
    for start in range(0, flat.numel(), _SCAN_CHUNK):
        piece = flat[start : start + _SCAN_CHUNK]
        yield start, piece.float(), owned or piece.dtype != torch.float32


def top_count_masks(importances: Importances, keep: int) -> Masks:
    """Keep exactly the ``keep`` most important values across ``importances``.

    Ties are broken by position (parameter order, then flattened index), exactly
    as a stable descending sort of all values would. A seeded stratified sample
    brackets the threshold; one scan, a piece at a time, keeps everything above
    the bracket and collects the few values inside it, and a selection among
    those settles the rest. Extra memory: the masks plus one piece of scores.
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
    if not kept_above <= keep <= kept_above + sum(len(c[2]) for c in candidates):
        masks, kept_above, candidates = _split(importances, names, float("-inf"), float("inf"))
    _keep_candidates(masks, candidates, keep - kept_above)
    return masks


def _sample_positions(size: int, stride: int, generator: torch.Generator) -> torch.Tensor:
    """One uniformly drawn position in each stride-long stratum of ``range(size)``, sorted."""
    strata = torch.arange(0, size, stride)
    positions = strata + torch.randint(0, stride, (strata.numel(),), generator=generator)
    return positions[positions < size]


def _bracket(
    importances: Importances, names: list[str], sizes: list[int], keep: int
) -> tuple[float, float]:
    """Values that surely bracket the ``keep``-th largest, from a seeded stratified sample."""
    total = sum(sizes)
    if total <= _SAMPLE:
        return float("-inf"), float("inf")
    generator = torch.Generator().manual_seed(0)
    # a larger sample narrows the bracket, so fewer candidates are held (bf16 ties included)
    stride = total // min(max(total >> 6, _SAMPLE), _SAMPLE_MAX)
    samples = []
    for name, size in zip(names, sizes, strict=True):
        local = _sample_positions(size, stride, generator)
        if not local.numel():
            continue
        if getattr(importances, "elementwise", False):
            sample = importances.sample(name, local)  # type: ignore[attr-defined]
        else:
            flat = importances[name].detach().reshape(-1)
            sample = flat[local.to(flat.device)]
        samples.append(sample.float().cpu())
    # integer keys sort in the float order, and torch sorts int32 by radix (fast)
    descending = _descending_order(torch.cat(samples)).values
    count = descending.numel()
    share = keep / total
    rank = share * count  # descending rank of the threshold within the sample
    margin = 6 * math.sqrt(count * share * (1 - share)) + 64
    upper, lower = int(rank - margin), int(rank + margin)
    high = _key_to_float(~int(descending[upper])) if upper >= 0 else float("inf")
    low = _key_to_float(~int(descending[lower])) if lower < count else float("-inf")
    return low, high


def _descending_order(values: torch.Tensor) -> torch.return_types.sort:
    """Stable sort of ``values`` (float) from largest to smallest, NaN as the smallest.

    Sorts the bitwise complement of the order-preserving int32 keys ascending,
    which torch does by radix sort, about 8x faster than a float sort.
    """
    values = torch.nan_to_num(values.float(), nan=float("-inf"), posinf=float("inf"))
    values = values + 0.0  # -0.0 becomes 0.0: equal floats must tie
    return torch.sort(~_sortable_keys(values), stable=True)


Candidates = list[tuple[str, int, torch.Tensor, torch.Tensor]]


def _split(
    importances: Importances, names: list[str], low: float, high: float
) -> tuple[Masks, int, Candidates]:
    """Masks of values above ``high``, and those in [low, high] as candidates.

    A candidate list holds ``(name, piece offset, int32 positions in the piece, values)``:
    8 bytes per candidate.
    """
    masks: Masks = {}
    kept = 0
    candidates = []
    scratch: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
    pool = _MaskPool(sum(_numel(importances, name) for name in names))
    for name in names:
        mask: torch.Tensor | None = None
        shape = _shape(importances, name)
        for start, scores, _ in _score_pieces(importances, name):
            if mask is None:
                mask = pool.take(shape, scores.device)
            size = scores.numel()
            above = torch.gt(scores, high, out=mask.view(-1)[start : start + size])
            kept += int(torch.count_nonzero(above))
            inside = _scratch(scratch, torch.bool, scores.device)[:size]
            if low == float("-inf"):
                torch.logical_not(above, out=inside)
            else:
                torch.ge(scores, low, out=inside)
                inside ^= above  # above the bracket implies at least ``low``
            positions = inside.nonzero().squeeze(1)
            if positions.numel():
                candidates.append((name, start, positions.int(), scores[positions]))
        masks[name] = mask if mask is not None else torch.zeros(shape, dtype=torch.bool)
    return masks, kept, candidates


class _MaskPool:
    """Bool masks carved out of one allocation (per device): no heap fragmentation."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._buffers: dict[torch.device, torch.Tensor] = {}
        self._used: dict[torch.device, int] = {}

    def take(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """An uninitialized bool tensor of ``shape`` on ``device``."""
        if device not in self._buffers:
            self._buffers[device] = torch.empty(self._total, dtype=torch.bool, device=device)
            self._used[device] = 0
        start = self._used[device]
        size = math.prod(shape)
        self._used[device] = start + size
        return self._buffers[device][start : start + size].view(shape)


def _shape(importances: Importances, name: str) -> torch.Size:
    shape_of = getattr(importances, "shape_of", None)
    return shape_of(name) if shape_of is not None else importances[name].shape


def _keep_candidates(masks: Masks, candidates: Candidates, count: int) -> None:
    """Keep the ``count`` best candidates (value descending, then position; NaN last)."""
    if count <= 0 or not candidates:
        return
    values = torch.cat([c[3].cpu() for c in candidates])
    chosen = torch.zeros(values.numel(), dtype=torch.bool)
    chosen[_descending_order(values).indices[:count]] = True
    del values
    start = 0
    for name, offset, positions, _ in candidates:
        picked = chosen[start : start + len(positions)].to(positions.device)
        masks[name].view(-1)[positions[picked].long() + offset] = True
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

"""From one survey row's reported numbers to accuracy, compression and speedup.

Each quantity can be reported in several ways (an accuracy or an error rate,
an absolute count or a fraction kept or saved, a ratio). Every way the row
offers is turned into a *candidate*; candidates that agree (within rounding)
give the value, taken from the first in precedence order; candidates that
disagree make the value *contradictory* and it is dropped, not chosen.
The rules are listed in :mod:`shrinkbench_core.survey.load`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shrinkbench_core.survey.values import Column, Issue, Kind, Unit

#: Two accuracies (fractions) that differ by at most this much are the same number rounded.
ACCURACY_TOLERANCE = 0.002
#: Two ratios that differ by at most this much, relative to the smaller, agree.
RATIO_TOLERANCE = 0.02

_FRACTION = Column(Unit.PERCENT, 0.0, 1.0)
_DELTA = Column(Unit.PERCENT, -1.0, 1.0)
_POSITIVE = Column(Unit.NUMBER, 0.0, open_low=True)

#: The numeric columns of ``results.csv``, their unit and valid range.
COLUMNS: dict[str, Column] = {
    "NumTrials": Column(Unit.NUMBER, 1.0),
    "Top1": _FRACTION,
    "Top5": _FRACTION,
    "Err1": _FRACTION,
    "Err5": _FRACTION,
    "dTop1": _DELTA,
    "dTop5": _DELTA,
    "stdTop1": _FRACTION,
    "OrigTop1": _FRACTION,
    "OrigTop5": _FRACTION,
    "OrigErr1": _FRACTION,
    "OrigErr5": _FRACTION,
    "stdOrigTop1": _FRACTION,
    "MParams": _POSITIVE,
    "OrigMParams": _POSITIVE,
    "GFLOPS": _POSITIVE,
    "OrigGFLOPS": _POSITIVE,
    # a fraction kept of 0 or saved of 100% would be an infinite ratio
    "keptParams": Column(Unit.PERCENT, 0.0, open_low=True),
    "keptFLOPS": Column(Unit.PERCENT, 0.0, open_low=True),
    "savedParams": Column(Unit.PERCENT, high=1.0, open_high=True),
    "savedFLOPS": Column(Unit.PERCENT, high=1.0, open_high=True),
    "old/new Nparam": _POSITIVE,
    "old/new FLOPS": _POSITIVE,
}


@dataclass(frozen=True)
class Candidate:
    """One way a row states a quantity: the value, how it was obtained, whether computed."""

    value: float
    how: str
    derived: bool


@dataclass
class Resolved:
    """The outcome for one quantity: its value (or ``None``), provenance and issues."""

    value: float | None = None
    how: str | None = None
    derived: bool = False
    issues: list[Issue] = field(default_factory=list)


def agree(candidates: list[Candidate], *, relative: bool) -> bool:
    """Whether all candidates are the same number up to rounding."""
    values = [c.value for c in candidates]
    low, high = min(values), max(values)
    if relative:
        return high <= low * (1.0 + RATIO_TOLERANCE)
    return high - low <= ACCURACY_TOLERANCE


def choose(name: str, candidates: list[Candidate | None], *, relative: bool) -> Resolved:
    """Pick the first candidate if all present candidates agree, else report a contradiction."""
    present = [c for c in candidates if c is not None]
    if not present:
        return Resolved()
    if not agree(present, relative=relative):
        shown = ", ".join(f"{c.how} gives {c.value:.4g}" for c in present)
        return Resolved(issues=[Issue(name, Kind.CONTRADICTORY, shown)])
    first = present[0]
    return Resolved(first.value, first.how, first.derived)


def _reported(values: Mapping[str, float | None], column: str) -> Candidate | None:
    value = values.get(column)
    return None if value is None else Candidate(value, column, derived=False)


def _complement(values: Mapping[str, float | None], column: str) -> Candidate | None:
    value = values.get(column)
    return None if value is None else Candidate(1.0 - value, f"1 - {column}", derived=True)


def original_accuracy(values: Mapping[str, float | None], k: int) -> Resolved:
    """Original (dense) top-k accuracy: ``OrigTop<k>``, else ``1 - OrigErr<k>``."""
    return choose(
        f"orig_top{k}",
        [_reported(values, f"OrigTop{k}"), _complement(values, f"OrigErr{k}")],
        relative=False,
    )


@dataclass
class Accuracy:
    """Top-k accuracy after pruning, the original accuracy and their difference."""

    top: Resolved
    orig: Resolved
    delta: Resolved


def accuracy(values: Mapping[str, float | None], k: int, orig: Resolved) -> Accuracy:
    """Resolve top-k, its original value and the change, all three consistent or all dropped.

    Candidates for the pruned accuracy, in precedence order: ``Top<k>``,
    ``1 - Err<k>``, original + ``dTop<k>``. When the original is not reported
    it is derived as pruned - ``dTop<k>``; the change, when not reported, as
    pruned - original. A contradiction drops all three: the data cannot say
    which of them is wrong.
    """
    name = f"top{k}"
    delta_reported = values.get(f"dTop{k}")
    from_delta = None
    if orig.value is not None and delta_reported is not None:
        from_delta = Candidate(orig.value + delta_reported, f"OrigTop{k} + dTop{k}", derived=True)
    top = choose(
        name,
        [_reported(values, f"Top{k}"), _complement(values, f"Err{k}"), from_delta],
        relative=False,
    )
    if top.issues:
        dropped = Issue(
            f"orig_top{k}",
            Kind.CONTRADICTORY,
            f"dropped with {name} and delta_{name}: " + top.issues[0].detail,
        )
        return Accuracy(top, Resolved(issues=orig.issues + [dropped]), Resolved())
    if orig.value is None and top.value is not None and delta_reported is not None:
        orig = Resolved(top.value - delta_reported, f"top{k} - dTop{k}", True, orig.issues)
    if delta_reported is not None:
        delta = Resolved(delta_reported, f"dTop{k}", derived=False)
    elif top.value is not None and orig.value is not None:
        delta = Resolved(top.value - orig.value, f"top{k} - orig_top{k}", derived=True)
    else:
        delta = Resolved()
    return Accuracy(top, orig, delta)


@dataclass(frozen=True)
class RatioColumns:
    """The columns that state one reduction (parameters or FLOPs) in its four ways."""

    name: str
    ratio: str
    absolute: str
    original: str
    kept: str
    saved: str


PARAMETERS = RatioColumns(
    "compression", "old/new Nparam", "MParams", "OrigMParams", "keptParams", "savedParams"
)
FLOPS = RatioColumns("speedup", "old/new FLOPS", "GFLOPS", "OrigGFLOPS", "keptFLOPS", "savedFLOPS")


def reduction_ratio(values: Mapping[str, float | None], columns: RatioColumns) -> Resolved:
    """Compression (parameters) or theoretical speedup (FLOPs) as original / remaining.

    Candidates, in precedence order: the reported ratio (``old/new``), original
    / absolute count, 1 / fraction kept, 1 / (1 - fraction saved).
    """
    get = values.get
    candidates: list[Candidate | None] = [_reported(values, columns.ratio)]
    absolute, original = get(columns.absolute), get(columns.original)
    if absolute is not None and original is not None:
        how = f"{columns.original} / {columns.absolute}"
        candidates.append(Candidate(original / absolute, how, derived=True))
    if get(columns.kept) is not None:
        candidates.append(Candidate(1.0 / get(columns.kept), f"1 / {columns.kept}", True))
    if get(columns.saved) is not None:
        how = f"1 / (1 - {columns.saved})"
        candidates.append(Candidate(1.0 / (1.0 - get(columns.saved)), how, derived=True))
    resolved = choose(columns.name, candidates, relative=True)
    if resolved.value is None and not resolved.issues:
        resolved.issues.append(Issue(columns.name, Kind.MISSING, _why_missing(values, columns)))
    return resolved


def _why_missing(values: Mapping[str, float | None], columns: RatioColumns) -> str:
    if values.get(columns.absolute) is not None:
        return f"{columns.absolute} reported without {columns.original}"
    if values.get(columns.original) is not None:
        return f"only {columns.original} reported"
    what = "parameter counts" if columns is PARAMETERS else "FLOP counts"
    return f"no {what}, ratio, kept or saved fraction reported"


def ordered_topk(top1: Resolved, top5: Resolved, label: str) -> Issue | None:
    """Top-5 can never be below top-1; returns the contradiction if it is."""
    if top1.value is None or top5.value is None:
        return None
    if top5.value >= top1.value - ACCURACY_TOLERANCE:
        return None
    detail = f"{label}top5 {top5.value:.4f} is below {label}top1 {top1.value:.4f}"
    return Issue(f"{label}top1/{label}top5", Kind.CONTRADICTORY, detail)

"""Per-phase wall time of a run, summed over its resumed segments.

Phases nest: time spent in an inner phase (``calibration`` inside ``prune``, ``evaluate``
of the "pruned" stage inside ``finetune``) counts for the inner phase only, so the phases
add up to ``total``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Adds the seconds spent in each phase to ``totals`` (e.g. restored from a checkpoint)."""

    def __init__(self, totals: dict[str, float] | None = None) -> None:
        self.totals: dict[str, float] = dict(totals or {})
        self._open: list[tuple[str, float]] = []
        self._segment_start = time.perf_counter()
        self._total_before = self.totals.get("total", 0.0)

    def _add(self, phase: str, seconds: float) -> None:
        self.totals[phase] = self.totals.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the block's time for ``name`` (and not for the phase it is nested in)."""
        now = time.perf_counter()
        if self._open:
            outer, started = self._open[-1]
            self._add(outer, now - started)
        self._open.append((name, now))
        try:
            yield
        finally:
            now = time.perf_counter()
            phase, started = self._open.pop()
            self._add(phase, now - started)
            if self._open:
                self._open[-1] = (self._open[-1][0], now)

    def snapshot(self) -> dict[str, float]:
        """The totals now, open phases and ``total`` included (what a checkpoint records)."""
        now = time.perf_counter()
        totals = dict(self.totals)
        for phase, started in self._open[-1:]:
            totals[phase] = totals.get(phase, 0.0) + now - started
        totals["total"] = self._total_before + now - self._segment_start
        return totals

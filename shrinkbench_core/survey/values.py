"""Parsing single cells of the survey exports, and the record of what could not be used.

Units are read from the column, never guessed from the size of a number:
columns that hold a percentage must carry a ``%`` sign and are divided by 100;
columns that hold a count (millions of parameters, GFLOPs) or a ratio must be
a bare number. Anything else is *unparseable*; a number outside the range its
column allows is *implausible*. Either way the cell is dropped and an
:class:`Issue` says why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class Kind(str, Enum):
    """Why a value of the survey could not be used."""

    MISSING = "missing"
    CONTRADICTORY = "contradictory"
    UNPARSEABLE = "unparseable"
    IMPLAUSIBLE = "implausible"


@dataclass(frozen=True)
class Issue:
    """One value the data cannot support: which field, what kind of problem, the evidence."""

    field: str
    kind: Kind
    detail: str


class Unit(str, Enum):
    """How a column of ``results.csv`` writes its numbers."""

    PERCENT = "percent"  # "93.55%": a fraction written as a percentage
    NUMBER = "number"  # "0.8500": a count (millions, GFLOPs) or a ratio


@dataclass(frozen=True)
class Column:
    """A numeric column of ``results.csv``: its unit and the range a valid value lies in.

    ``low``/``high`` bound the parsed value (fractions for percent columns);
    ``open_low``/``open_high`` exclude the bound itself.
    """

    unit: Unit
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def allows(self, value: float) -> bool:
        """Whether ``value`` lies in the column's range."""
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below and math.isfinite(value)

    def describe_range(self) -> str:
        """The allowed range in words, in the unit the column is written in."""
        scale = 100.0 if self.unit is Unit.PERCENT else 1.0
        suffix = "%" if self.unit is Unit.PERCENT else ""
        left = "(" if self.open_low else "["
        right = ")" if self.open_high else "]"
        return f"{left}{self.low * scale:g}{suffix}, {self.high * scale:g}{suffix}{right}"


def parse_cell(text: object, column: Column) -> float:
    """Parse one cell written in ``column``'s unit; returns a float (fractions for percents).

    Raises ``ValueError`` with a short reason when the text is not a number in
    the column's unit. Empty cells are the caller's business (``None``/NaN).
    """
    raw = str(text).strip()
    if column.unit is Unit.PERCENT:
        if not raw.endswith("%"):
            raise ValueError(f"{raw!r} has no '%' sign; this column is written in percent")
        body = raw[:-1].strip()
        if not _NUMBER.fullmatch(body):
            raise ValueError(f"{raw!r} is not a percentage")
        return float(body) / 100.0
    if not _NUMBER.fullmatch(raw):
        raise ValueError(f"{raw!r} is not a plain number")
    return float(raw)


def is_blank(text: object) -> bool:
    """Whether a cell is empty (``None``, NaN or only whitespace)."""
    if text is None:
        return True
    if isinstance(text, float) and math.isnan(text):
        return True
    return str(text).strip() == ""

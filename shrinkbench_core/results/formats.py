"""Render a results table as text: a terminal table, CSV, Markdown or JSON."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from shrinkbench_core.errors import UserError
from shrinkbench_core.results.collect import iter_records

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "json")
#: Columns of the compact terminal table (``--format table``).
COMPACT = (
    "dataset", "model", "strategy", "strategy_params", "seed", "compression",
    "compression_achieved", "theoretical_speedup", "dense_top1", "finetuned_top1",
    "bestval_top1", "status",
)
HEADERS = {
    "strategy_params": "params",
    "compression": "requested",
    "compression_achieved": "achieved",
    "theoretical_speedup": "speedup",
}


def render(frame: pd.DataFrame, fmt: str) -> str:
    """``frame`` as ``table`` (compact columns), ``csv``, ``markdown`` or ``json`` (all columns)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(list(iter_records(frame)), indent=2)
    if fmt == "markdown":
        return to_markdown(frame)
    if fmt == "table":
        from shrinkbench_core.cli import format_table

        columns = [c for c in COMPACT if c in frame.columns]
        rows = [[format_cell(record[c]) for c in columns] for record in iter_records(frame)]
        return format_table([HEADERS.get(c, c) for c in columns], rows, max_width=40)
    raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def format_cell(value: Any) -> str:
    """A cell as short text: floats to 4 significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of every column."""
    columns = list(frame.columns)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines = [line(columns), "|" + "|".join("---" for _ in columns) + "|"]
    lines += [line([format_cell(r[c]) for c in columns]) for r in iter_records(frame)]
    return "\n".join(lines)

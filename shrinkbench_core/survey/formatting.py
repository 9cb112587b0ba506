"""Rendering survey tables as text: a readable table, CSV, Markdown or JSON."""

from __future__ import annotations

import math

import pandas as pd

from shrinkbench_core.errors import UserError

FORMATS = ("table", "csv", "markdown", "json")
#: Columns holding fractions (accuracies and their changes); shown with 4 decimals.
FRACTION_COLUMNS = {
    "top1", "top5", "orig_top1", "orig_top5", "delta_top1", "delta_top5", "std_top1",
    "std_orig_top1",
}  # fmt: skip
#: Longest cell text in the readable table before it is cut with an ellipsis.
TABLE_CELL_WIDTH = 48


def _cell(value: object, column: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if column in FRACTION_COLUMNS:
            return f"{value:.4f}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _text_cells(table: pd.DataFrame, width: int | None) -> list[list[str]]:
    rows = []
    for record in table.itertuples(index=False):
        row = []
        for column, value in zip(table.columns, record, strict=True):
            text = " ".join(_cell(value, column).split())
            if width is not None and len(text) > width:
                text = text[: width - 1] + "…"
            row.append(text)
        rows.append(row)
    return rows


def as_table(table: pd.DataFrame) -> str:
    """Aligned plain-text columns (numbers right-aligned), long cells shortened."""
    header = list(map(str, table.columns))
    rows = _text_cells(table, TABLE_CELL_WIDTH)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    body = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(body) + f"\n({len(table)} rows)"


def as_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    header = list(map(str, table.columns))
    rows = [line(r) for r in _text_cells(table, None)]
    return "\n".join([line(header), line(["---"] * len(header)), *rows])


def render(table: pd.DataFrame, fmt: str) -> str:
    """``table`` as text in ``fmt`` (one of :data:`FORMATS`); CSV/JSON keep full precision."""
    if fmt == "table":
        return as_table(table)
    if fmt == "markdown":
        return as_markdown(table)
    if fmt == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return table.to_json(orient="records", indent=2, force_ascii=False)
    raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

"""Render a results table as text: a terminal table, CSV, Markdown or JSON.

``csv`` and ``json`` carry the numbers as stored (fractions, ratios, ms), one
record per row. ``table`` and ``markdown`` are for reading and for papers: they
format cells as the run summary does (accuracy ``91.23%``, ratios ``8.01x``,
latency ``0.46 ms``, a measured speedup its timing cannot support marked ``?``),
show an aggregated cell as ``mean ± std``, and list failed and damaged runs with
their error under the table instead of among the results.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from shrinkbench_core.errors import UserError
from shrinkbench_core.results.collect import iter_records

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "markdown", "json")
#: Statuses listed under the table (with their error) rather than in it.
APART = ("failed", "damaged")
#: Columns of the compact terminal table (``--format table``).
COMPACT = (
    "dataset", "model", "strategy", "strategy_params", "seed", "compression",
    "compression_achieved", "sparsity", "theoretical_speedup", "measured_speedup", "dense_top1",
    "finetuned_top1", "bestval_top1", "dense_perplexity", "pruned_perplexity",
    "finetuned_perplexity", "status",
)
#: Columns of the compact aggregated table (``--aggregate``), before ``_mean``/``_std``.
COMPACT_AGGREGATED = (
    "dataset", "model", "strategy", "strategy_params", "schedule", "compression", "seeds",
    "compression_achieved", "sparsity", "theoretical_speedup", "measured_speedup", "dense_top1",
    "finetuned_top1", "bestval_top1", "dense_perplexity", "pruned_perplexity",
    "finetuned_perplexity",
)
#: Compact columns shown only when some run has a value (language-model runs).
WHEN_PRESENT = ("sparsity", "dense_perplexity", "pruned_perplexity", "finetuned_perplexity")
HEADERS = {
    "strategy_params": "params",
    "compression": "requested",
    "compression_achieved": "achieved",
    "theoretical_speedup": "speedup",
    "measured_speedup": "measured",
    "structured_speedup": "shrunk",
}
RATIOS = ("compression", "compression_achieved", "theoretical_speedup", "measured_speedup",
          "structured_speedup")
FAILED_SHOWN = ("dataset", "model", "strategy", "strategy_params", "compression", "seed")


def render(
    frame: pd.DataFrame,
    fmt: str,
    columns: list[str] | None = None,
    aggregated: pd.DataFrame | None = None,
) -> str:
    """``frame`` (one row per run) as text in ``fmt``.

    With ``aggregated`` (from :func:`~shrinkbench_core.results.aggregate.aggregate_results`)
    that table is rendered instead, and ``frame`` only supplies the failed runs
    listed under a ``table``/``markdown``. ``columns`` selects and orders columns
    (for an aggregated table a base name such as ``finetuned_top1`` selects its
    mean and std); default: all for csv/json/markdown, the compact ones for table.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    shown = aggregated if aggregated is not None else frame
    apart = frame[frame["status"].isin(APART)] if "status" in frame else frame.iloc[0:0]
    if fmt in ("table", "markdown") and aggregated is None:
        shown = shown[~shown["status"].isin(APART)]
    unreliable = (
        [value is False for value in shown["measured_speedup_reliable"].tolist()]
        if "measured_speedup_reliable" in shown.columns else None
    )
    if columns is not None:
        shown = shown[select_columns(shown, columns)]
    elif fmt == "table":
        compact = COMPACT_AGGREGATED if aggregated is not None else COMPACT
        compact = [c for c in compact if c not in WHEN_PRESENT or _has_values(shown, c)]
        shown = shown[select_columns(shown, [c for c in compact if _available(shown, c)])]
    if fmt == "csv":
        return shown.to_csv(index=False)
    if fmt == "json":
        return json.dumps(list(iter_records(shown)), indent=2)
    header, rows = display_rows(shown, unreliable)
    if fmt == "markdown":
        text = to_markdown(header, rows)
    else:
        from shrinkbench_core.cli import format_table

        text = format_table(header, rows, max_width=40)
    return text + "".join(
        failed_listing(apart[apart["status"] == status], markdown=fmt == "markdown",
                       title=f"{status} runs")
        for status in APART
    )


def _available(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns or f"{column}_mean" in frame.columns


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    name = column if column in frame.columns else f"{column}_mean"
    return name in frame.columns and bool(frame[name].notna().any())


def select_columns(frame: pd.DataFrame, wanted: list[str]) -> list[str]:
    """The columns of ``frame`` named by ``wanted`` (``x`` also selects ``x_mean``, ``x_std``).

    Raises :class:`UserError` naming unknown columns and listing the available ones.
    """
    chosen: list[str] = []
    unknown = []
    for name in wanted:
        matches = [name] if name in frame.columns else [
            c for c in (f"{name}_mean", f"{name}_std") if c in frame.columns
        ]
        if not matches:
            unknown.append(name)
        chosen += [c for c in matches if c not in chosen]
    if unknown:
        bases = sorted({c.removesuffix("_mean").removesuffix("_std") for c in frame.columns})
        raise UserError(
            f"unknown column(s) {', '.join(unknown)}; available: {', '.join(bases)}"
        )
    return chosen


def format_value(column: str, value: Any, std: Any = None) -> str:
    """A cell as the run summary shows it (``91.23%``, ``8.01x``, ``0.46 ms``), ± ``std``."""
    if _missing(value):
        return ""
    if not isinstance(value, float) or isinstance(value, bool):
        return str(value)
    base = column.removesuffix("_mean")
    spread = not _missing(std)
    if base.endswith(("_top1", "_top5")) or base == "sparsity":
        return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if spread else "") + "%"
    if base in RATIOS:
        digits = ".3g" if base == "compression" else ".2f"
        return f"{value:{digits}}" + (f" ± {std:.2f}" if spread else "") + "x"
    if base.endswith("_ms"):
        return f"{value:.3g}" + (f" ± {std:.2g}" if spread else "") + " ms"
    return f"{value:.4g}" + (f" ± {std:.2g}" if spread else "")


def display_rows(
    frame: pd.DataFrame, unreliable: list[bool] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells; ``x_mean`` and ``x_std`` become one ``x`` cell.

    ``unreliable`` (one flag per row) marks measured speedups with ``?``.
    """
    columns = [c for c in frame.columns if not (c.endswith("_std") and
                                                f"{c[:-4]}_mean" in frame.columns)]
    header = [HEADERS.get(c.removesuffix("_mean"), c.removesuffix("_mean")) for c in columns]
    rows = []
    for index, record in enumerate(iter_records(frame)):
        cells = [
            format_value(c, record[c], record.get(f"{c[:-5]}_std") if c.endswith("_mean")
                         else None)
            for c in columns
        ]
        if "measured_speedup" in columns and unreliable and unreliable[index] and cells[
            columns.index("measured_speedup")
        ]:
            cells[columns.index("measured_speedup")] += "?"  # as the run summary marks it
        rows.append(cells)
    return header, rows


def failed_listing(failed: pd.DataFrame, markdown: bool = False, title: str = "failed runs") -> str:
    """Failed (or damaged) runs with their error, one line each ('' when there are none)."""
    if failed.empty:
        return ""
    lines = ["", "", f"{title} ({len(failed)}):"]  # a blank line after the table
    for record in iter_records(failed):
        what = " ".join(
            f"{key}={record[key]}" if key in ("compression", "seed") else str(record[key])
            for key in FAILED_SHOWN if record.get(key) not in (None, "")
        )
        error = (record.get("error") or "no error recorded").splitlines()[0]
        lines.append(f"{'- ' if markdown else '  '}{what}: {error} ({record.get('path')})")
    return "\n".join(lines)


def format_cell(value: Any) -> str:
    """A cell as short text: floats to 4 significant digits, missing values empty."""
    if _missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(row) for row in rows]
    return "\n".join(lines)

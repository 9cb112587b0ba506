"""The compact end-of-run table: dense vs pruned vs fine-tuned."""

from __future__ import annotations

from typing import Any

STAGES = (("dense", "dense"), ("pruned", "pruned"), ("finetuned", "fine-tuned"))


def stage_value(stage: dict[str, Any], metric: str, key: str) -> Any:
    """``stage[metric][key]`` or ``None``."""
    value = stage.get(metric)
    return value.get(key) if isinstance(value, dict) else None


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "ms":
        return f"{value:.2f} ms"
    return str(value)


def summary_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per stage: accuracy, compression, theoretical and measured speedup, latency."""
    rows = []
    for key, label in STAGES:
        stage = metrics.get(key) or {}
        rows.append(
            [
                label,
                _fmt(stage_value(stage, "accuracy", "test_top1"), "pct"),
                _fmt(stage_value(stage, "accuracy", "test_top5"), "pct"),
                _fmt(stage_value(stage, "size", "compression_ratio"), "x"),
                _fmt(stage_value(stage, "flops", "theoretical_speedup"), "x"),
                _fmt(stage_value(stage, "latency", "median_ms"), "ms"),
                _fmt(stage_value(stage, "latency", "measured_speedup"), "x"),
            ]
        )
    return rows


def summary_table(metrics: dict[str, Any]) -> str:
    """The table printed at the end of ``shrinkbench-run``."""
    from shrinkbench_core.cli import format_table

    header = ["stage", "test top-1", "test top-5", "compression", "speedup", "latency", "measured"]
    return format_table(header, summary_rows(metrics))

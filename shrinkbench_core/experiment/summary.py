"""The compact end-of-run table: dense vs pruned vs fine-tuned, and how latency was measured.

Latency figures come from one paired measurement per pruned stage (the dense and
the pruned model timed in turns, :func:`~shrinkbench_core.metrics.latency.compare_latency`),
so every figure shown can be checked against the others: the dense row shows the
dense time of the fine-tuned stage's pairing (of the pruned stage's when there was
no fine-tuning), the ``measured`` column is dense / stage median of that stage's
own pairing, and the lines under the table give each pairing's two medians, the
batch size and the unit. A ratio whose per-round spread is too large to support
it is marked ``?`` and explained.
"""

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
        return f"{value:.3g} ms"
    return str(value)


def _stages(metrics: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(key, label, metrics.get(key) or {}) for key, label in STAGES]


def paired_reference(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The label and latency of the last stage timed in turns with the dense model."""
    for _, label, stage in reversed(_stages(metrics)):
        if stage_value(stage, "latency", "dense_median_ms") is not None:
            return label, stage["latency"]
    return None


def _measured(latency: dict[str, Any]) -> str:
    text = _fmt(latency.get("measured_speedup"), "x")
    return text + "?" if latency.get("measured_speedup_reliable") is False else text


def summary_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per stage: accuracy, compression, theoretical and measured speedup, latency."""
    reference = paired_reference(metrics)
    rows = []
    for key, label, stage in _stages(metrics):
        latency = stage.get("latency") if isinstance(stage.get("latency"), dict) else {}
        median = latency.get("median_ms")
        if key == "dense" and reference is not None:
            median = reference[1]["dense_median_ms"]  # the dense time paired with a pruned one
        rows.append(
            [
                label,
                _fmt(stage_value(stage, "accuracy", "test_top1"), "pct"),
                _fmt(stage_value(stage, "accuracy", "test_top5"), "pct"),
                _fmt(stage_value(stage, "size", "compression_ratio"), "x"),
                _fmt(stage_value(stage, "flops", "theoretical_speedup"), "x"),
                _fmt(median, "ms"),
                _measured(latency) if key != "dense" else "-",
            ]
        )
    return rows


def latency_unit(metrics: dict[str, Any]) -> str:
    """``ms per batch of N`` (the batch the latency metric timed), or ``ms per batch``."""
    sizes = {
        stage_value(stage, "latency", "batch_size") for _, _, stage in _stages(metrics)
    } - {None}
    return f"ms per batch of {sizes.pop()}" if len(sizes) == 1 else "ms per batch"


def latency_notes(metrics: dict[str, Any]) -> list[str]:
    """Lines under the table: how latency was timed, each pairing, unsupported ratios."""
    notes = []
    for key, label, stage in _stages(metrics):
        latency = stage.get("latency")
        if key == "dense" or not isinstance(latency, dict):
            continue
        if latency.get("dense_median_ms") is None:
            continue
        low, high = latency.get("measured_speedup_low"), latency.get("measured_speedup_high")
        spread = f" (95% interval {low:.2f}x-{high:.2f}x)" if low and high else ""
        threads = latency.get("threads")
        notes.append(
            f"{label}: dense {latency['dense_median_ms']:.3g} ms vs {label} "
            f"{latency['median_ms']:.3g} ms, timed in turns ({latency.get('repeats')} passes "
            f"each, batch of {latency.get('batch_size')}, {latency.get('device')}, "
            f"{threads} thread{'' if threads == 1 else 's'}) -> measured "
            f"{latency['measured_speedup']:.2f}x{spread}"
        )
        if latency.get("measured_speedup_reliable") is False:
            ratio, spread = latency["measured_speedup"], latency.get("measured_speedup_spread", 0)
            notes.append(
                f"! {label}: the timing is too spread to support {ratio:.2f}x (its 95% interval "
                f"is {100 * spread:.0f}% of it wide); time it with more repeats on an idle "
                "machine (the latency metric's `repeats` parameter)"
            )
    if notes:
        reference = paired_reference(metrics)
        if reference is not None:
            notes.insert(0, f"latency: median, {latency_unit(metrics)}; the dense row shows the "
                         f"dense time of the {reference[0]} pairing")
    return notes


def summary_table(metrics: dict[str, Any]) -> str:
    """The table printed at the end of ``shrinkbench-run``, with the latency notes under it."""
    from shrinkbench_core.cli import format_table

    header = [
        "stage", "test top-1", "test top-5", "compression", "speedup",
        f"latency ({latency_unit(metrics)})", "measured",
    ]  # fmt: skip
    lines = [format_table(header, summary_rows(metrics)), *latency_notes(metrics)]
    return "\n".join(lines)

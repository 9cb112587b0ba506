"""``shrinkbench show RUN_DIR``: config, metrics per stage, per-layer sparsity, training curve.

Reads only the run directory's files (JSON and CSV); no torch import.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from shrinkbench_core.errors import UserError


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}{DAMAGED_HINT}") from None


#: What to do about a damaged file of a run directory.
DAMAGED_HINT = (
    ". Rerun the run's command to rewrite it (it resumes from checkpoints/last.pt), "
    "or with --force to redo the run"
)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, ValueError, csv.Error) as error:
        raise UserError(f"cannot read {path}: {error}{DAMAGED_HINT}") from None


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[("finetune.optimizer.lr", 0.05), ...]``: nested dicts as dotted keys."""
    if isinstance(data, dict) and data:
        items: list[tuple[str, Any]] = []
        for key, value in data.items():
            items += flatten(value, f"{prefix}{key}.")
        return items
    return [(prefix.rstrip("."), data)]


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None


def curve_summary(rows: list[dict[str, str]]) -> list[str]:
    """Per training stage: epochs, train loss first -> last, validation top-1 last and best."""
    if not rows:
        return ["  (no logs.csv: no fine-tuning epochs recorded)"]
    stages: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        stages.setdefault(row.get("stage") or "finetune", []).append(row)
    lines = []
    for stage, stage_rows in stages.items():
        losses = [v for v in (_number(r.get("train_loss")) for r in stage_rows) if v is not None]
        accs = [(_number(r.get("validation_top1")), r.get("epoch")) for r in stage_rows]
        accs = [(value, epoch) for value, epoch in accs if value is not None]
        seconds = sum(_number(r.get("epoch_seconds")) or 0.0 for r in stage_rows)
        parts = [f"{len(stage_rows)} epochs"]
        if losses:
            parts.append(f"train loss {losses[0]:.4f} -> {losses[-1]:.4f}")
        if accs:
            best, epoch = max(accs, key=lambda item: item[0])
            last = accs[-1][0]
            parts.append(f"validation top-1 last {last:.2%}, best {best:.2%} (epoch {epoch})")
        if seconds:
            parts.append(f"{seconds:.1f} s")
        lines.append(f"  {stage}: " + ", ".join(parts))
    return lines


def sparsity_table(rows: list[dict[str, str]]) -> list[str]:
    """Per masked parameter: shape, kept / size, compression; then the total."""
    if not rows:
        return ["  (no masks_summary.csv)"]
    from shrinkbench_core.cli import format_table

    table = []
    size = kept = 0
    for row in rows:
        row_size, row_kept = int(row["size"]), int(row["kept"])
        size, kept = size + row_size, kept + row_kept
        table.append([
            row["parameter"],
            row["shape"],
            f"{row_kept:,} / {row_size:,}",
            f"{1 - row_kept / row_size:.1%}" if row_size else "-",
            f"{row_size / row_kept:.2f}x" if row_kept else "inf",
        ])
    table.append([
        "(all masked)", "", f"{kept:,} / {size:,}", f"{1 - kept / size:.1%}" if size else "-",
        f"{size / kept:.2f}x" if kept else "inf",
    ])
    text = format_table(["parameter", "shape", "kept / size", "sparsity", "compression"], table,
                        max_width=200)
    return ["  " + line for line in text.splitlines()]


def stage_table(metrics: dict[str, Any]) -> list[str]:
    """The run's summary table (as ``shrinkbench-run`` prints it)."""
    try:
        from shrinkbench_core.experiment.summary import summary_table

        return ["  " + line for line in summary_table(metrics).splitlines()]
    except Exception:  # a run written by another version: show the raw numbers
        return [
            f"  {key} = {value}"
            for stage in ("dense", "pruned", "finetuned")
            for key, value in flatten(metrics.get(stage) or {}, f"{stage}.")
            if not isinstance(value, (list, dict))
        ]


def show_run(path: str | Path) -> dict[str, Any]:
    """Everything the run directory records, as a dict (``--json``)."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(
            f"{root} is not a run directory, nor one of: strategy, dataset, model, metric, "
            "schedule, tracker (usage: shrinkbench show RUN_DIR | shrinkbench show KIND NAME)"
        )
    record = _read_json(root / "config.json")
    if record is None:
        raise UserError(f"{root} is not a run directory (it has no config.json)")
    return {
        "path": str(root),
        "status": _read_json(root / "status.json") or {"status": "not started"},
        "config": record.get("config", record),
        "seeds": record.get("seeds"),
        "versions": record.get("versions"),
        "metrics": _read_json(root / "metrics.json"),
        "masks": _read_csv(root / "masks_summary.csv"),
        "logs": _read_csv(root / "logs.csv"),
    }


def format_run(info: dict[str, Any]) -> str:
    """The run, human-readable."""
    status = info["status"]
    lines = [f"run {info['path']}", f"status: {status.get('status')}"]
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    lines.append("config:")
    lines += [f"  {key} = {json.dumps(value)}" for key, value in flatten(info["config"])]
    if info.get("seeds"):
        seeds = ", ".join(f"{k}={v}" for k, v in info["seeds"].items())
        lines.append(f"  (seeds used: {seeds})")
    metrics = info.get("metrics")
    lines.append("metrics per stage:")
    if metrics:
        lines += stage_table(metrics)
        compression = metrics.get("compression") or {}
        if compression:
            lines.append(
                "  compression requested {requested}, achieved {achieved}".format(
                    requested=compression.get("requested"),
                    achieved=_fmt(compression.get("achieved")),
                )
            )
    else:
        lines.append("  (no metrics.json yet: the run is not complete)")
    lines.append("per-layer sparsity:")
    lines += sparsity_table(info["masks"])
    lines.append("training:")
    lines += curve_summary(info["logs"])
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)

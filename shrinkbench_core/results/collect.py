"""Collect run directories into one table: one row per run.

Reads each run's ``config.json``, ``status.json`` and (when complete)
``metrics.json``. Missing files and missing keys give empty cells, never an
error, so failed and unfinished runs are listed with their status too. A run
whose files are damaged (truncated, corrupted, a folder in place of a file, or a
complete run without a readable ``config.json`` or ``metrics.json``) is listed
with status ``damaged`` and an error naming each file and what to do; it never
stops the table.

Accuracy columns are on the test split: ``finetuned_*`` after the final
fine-tuning epoch, and ``bestval_*`` of the epoch with the best validation
accuracy (when the dataset has a validation split). The maximum over test
epochs is never reported.

Latency columns come from one paired measurement, that of the last pruned stage
(fine-tuned, else pruned): ``latency_ms`` and ``dense_latency_ms`` are the
medians of the pruned and the dense model timed in turns, per batch of
``latency_batch_size``, and ``measured_speedup`` is their ratio
(``measured_speedup_reliable`` is false when the timing was too spread to
support it). ``structured_speedup`` is the measured speedup of the physically
shrunk model (the ``structured`` metric), when measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinkbench_core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

#: Every column of the results table, in order.
COLUMNS = (
    "dataset",
    "model",
    "strategy",
    "strategy_params",
    "schedule",
    "seed",
    "compression",
    "compression_achieved",
    "sparsity",
    "theoretical_speedup",
    "measured_speedup",
    "measured_speedup_reliable",
    "structured_speedup",
    "dense_top1",
    "dense_top5",
    "pruned_top1",
    "pruned_top5",
    "finetuned_top1",
    "finetuned_top5",
    "bestval_epoch",
    "bestval_top1",
    "bestval_top5",
    "dense_perplexity",
    "pruned_perplexity",
    "finetuned_perplexity",
    "dense_latency_ms",
    "latency_ms",
    "latency_batch_size",
    "status",
    "error",
    "model_params",
    "dataset_params",
    "digest",
    "path",
)
#: Columns holding numbers (coerced; empty cells are NaN).
NUMERIC = (
    "compression", "compression_achieved", "theoretical_speedup", "measured_speedup",
    "structured_speedup", "dense_top1", "dense_top5", "pruned_top1", "pruned_top5",
    "finetuned_top1", "finetuned_top5", "bestval_top1", "bestval_top5", "dense_latency_ms",
    "latency_ms", "sparsity", "dense_perplexity", "pruned_perplexity", "finetuned_perplexity",
)
SORT_BY = [
    "dataset", "model", "model_params", "strategy", "strategy_params", "schedule", "compression",
    "seed",
]
RUN_FILES = ("status.json", "config.json")
#: Status of a run whose files are damaged (listed apart with the problem).
DAMAGED = "damaged"


def find_run_dirs(root: str | Path) -> list[Path]:
    """Run directories at or under ``root`` (a run, a sweep output, or a folder of them)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    if any((root / name).is_file() for name in RUN_FILES):
        return [root]
    found = {path.parent for name in RUN_FILES for path in root.rglob(name)}
    # hidden folders hold no results: `.replaced/` keeps a run that `--force` is redoing
    return sorted(p for p in found if not any(x.startswith(".") for x in p.relative_to(root).parts))


def load_results(root: str | Path) -> pd.DataFrame:
    """The results table of every run under ``root``: one row per run, columns :data:`COLUMNS`.

    Failed and unfinished runs are rows too (``status``, ``error``); with no runs
    the frame is empty but has every column. For mean and standard deviation over
    seeds, pass the frame to :func:`~shrinkbench_core.results.aggregate.aggregate_results`.
    """
    import pandas as pd

    rows = [run_row(path) for path in find_run_dirs(root)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    for column in ("bestval_epoch", "latency_batch_size"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    if frame.empty:
        return frame
    return frame.sort_values(SORT_BY, na_position="last", kind="stable").reset_index(drop=True)


def run_row(path: Path) -> dict[str, Any]:
    """One row of the results table from one run directory."""
    problems: list[str] = []
    config_file = _read_checked(path / "config.json", problems) or {}
    config = config_file.get("config", config_file) if isinstance(config_file, dict) else {}
    metrics = _read_checked(path / "metrics.json", problems) or {}
    status_file = _read_checked(path / "status.json", problems)
    status = status_file.get("status", "unknown") if isinstance(status_file, dict) else "unknown"
    if status_file is None and not problems:
        status = "not started"
    if status == "complete" and not problems:
        problems += [f"{name} is missing" for name, data in
                     (("config.json", config_file), ("metrics.json", metrics)) if not data]
    error = status_file.get("error") if isinstance(status_file, dict) else None
    if problems:
        status, error = DAMAGED, damage_message(problems)
    strategy, dataset, model = (_section(config, key) for key in ("strategy", "dataset", "model"))
    compression = metrics.get("compression") if isinstance(metrics.get("compression"), dict) else {}
    finetuned = _dict(metrics.get("finetuned"))
    best = _dict(metrics.get("best_validation"))
    row: dict[str, Any] = {
        "dataset": dataset.get("name"),
        "model": model.get("name"),
        "strategy": strategy.get("name"),
        "strategy_params": format_params(strategy.get("params")),
        "schedule": format_schedule(config.get("schedule")),
        "seed": config.get("seed"),
        "compression": compression.get("requested", config.get("compression")),
        "compression_achieved": _first(
            compression.get("achieved"), _get(finetuned, "size", "compression_ratio")
        ),
        "theoretical_speedup": _first(
            metrics.get("theoretical_speedup"), _get(finetuned, "flops", "theoretical_speedup")
        ),
        # LM papers' sparsity: zero fraction of the prunable layers (embeddings, head excluded)
        "sparsity": _first(
            *(_get(_dict(metrics.get(s)), "size", "pruned_fraction") for s in LAST_FIRST)
        ),
        "bestval_epoch": best.get("epoch"),
        **paired_latency(metrics),
        "structured_speedup": _first(
            *(_get(_dict(metrics.get(s)), "structured", "shrunk_speedup") for s in LAST_FIRST)
        ),
        "status": status,
        "error": error,
        "model_params": format_params(model.get("params")),
        "dataset_params": format_params(dataset.get("params")),
        "digest": metrics.get("digest") or config_file.get("digest"),
        "path": str(path),
    }
    for stage, prefix in (("dense", "dense"), ("pruned", "pruned"), ("finetuned", "finetuned"),
                          ("best_validation", "bestval")):
        top1, top5 = test_accuracy(_dict(metrics.get(stage)))
        row[f"{prefix}_top1"], row[f"{prefix}_top5"] = top1, top5
        if prefix != "bestval":  # the perplexity metric (shrinkbench-llm), test split
            row[f"{prefix}_perplexity"] = _get(_dict(metrics.get(stage)), "perplexity",
                                               "test_perplexity")
    return row


def test_accuracy(stage: dict[str, Any]) -> tuple[float | None, float | None]:
    """(top-1, top-5) on the test split of one stage of ``metrics.json``."""
    accuracy = _dict(stage.get("accuracy"))
    return (
        _first(accuracy.get("test_top1"), accuracy.get("top1")),
        _first(accuracy.get("test_top5"), accuracy.get("top5")),
    )


LAST_FIRST = ("finetuned", "pruned")


def paired_latency(metrics: dict[str, Any]) -> dict[str, Any]:
    """Latency columns from the last stage timed in turns with the dense model.

    Runs written before the pairing existed (no ``dense_median_ms``) give the
    fine-tuned median and no dense latency or ratio, never a mix of stages.
    """
    for name in LAST_FIRST:
        latency = _dict(_dict(metrics.get(name)).get("latency"))
        if latency.get("dense_median_ms") is not None:
            return {
                "dense_latency_ms": latency["dense_median_ms"],
                "latency_ms": latency_ms({"latency": latency}),
                "measured_speedup": latency.get("measured_speedup"),
                "measured_speedup_reliable": latency.get("measured_speedup_reliable"),
                "latency_batch_size": latency.get("batch_size"),
            }
    finetuned = _dict(metrics.get("finetuned"))
    return {
        "dense_latency_ms": None,
        "latency_ms": latency_ms(finetuned),
        "measured_speedup": None,
        "measured_speedup_reliable": None,
        "latency_batch_size": _get(finetuned, "latency", "batch_size"),
    }


def latency_ms(stage: dict[str, Any]) -> float | None:
    """Median forward latency of one stage, in milliseconds."""
    latency = _dict(stage.get("latency"))
    if latency.get("median_ms") is not None:
        return latency["median_ms"]
    seconds = latency.get("median_seconds")
    return 1000 * seconds if isinstance(seconds, (int, float)) else None


def format_schedule(schedule: Any) -> str:
    """``oneshot``, or the kind with its non-default settings: ``iterative(rounds=5,...)``."""
    if not isinstance(schedule, dict):
        return "oneshot"  # runs from before schedules existed
    settings = {k: v for k, v in schedule.items() if k != "kind"}
    try:
        from shrinkbench_core.experiment.schedule_config import ScheduleConfig

        defaults = {name: field.default for name, field in ScheduleConfig.model_fields.items()}
        settings = {k: v for k, v in settings.items() if k not in defaults or v != defaults[k]}
    except ImportError:  # pragma: no cover - an older core
        pass
    kind = str(schedule.get("kind", "oneshot"))
    return f"{kind}({format_params(settings)})" if format_params(settings) else kind


def format_params(params: Any) -> str:
    """Compact, sorted ``key=value,...`` list of component parameters ('' when none).

    Parameters set to ``None`` (unset options such as ``checkpoint``) are left out.
    """
    if not isinstance(params, dict):
        return ""
    return ",".join(
        f"{key}={_compact(params[key])}" for key in sorted(params) if params[key] is not None
    )


def _compact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + format_params(value) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _read_checked(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None when missing); a damaged file is added to ``problems``."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        problems.append(f"{path.name} cannot be read ({error.strerror or error})")
        return None
    except ValueError as error:
        problems.append(f"{path.name} is not valid JSON ({str(error).splitlines()[0][:80]})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} does not hold a JSON object")
        return None
    return data


def damage_message(problems: list[str]) -> str:
    """The ``error`` cell of a damaged run: what is wrong and what to do."""
    return (
        "; ".join(problems) + ": rerun the run's command to rewrite them (it resumes from "
        "checkpoints/last.pt), or with --force to redo the run"
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    return _dict(config.get(key))


def _get(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def iter_records(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Rows as dicts with ``None`` for missing values (JSON-ready)."""
    import pandas as pd

    for record in frame.to_dict(orient="records"):
        yield {k: (None if _is_missing(v, pd) else _plain(v)) for k, v in record.items()}


def _is_missing(value: Any, pd: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value

"""One line per training epoch on stderr, from the ``shrinkbench_epoch_end`` run event.

The progress bars of an epoch disappear when it ends (and are off when stderr is
not a terminal), so this built-in plugin leaves a line per epoch instead::

    [dense] epoch 3/10  train loss 0.4121  acc 87.20%  val loss 0.4550  acc 85.10%  lr 0.1  12.3 s

It is registered by :func:`shrinkbench_core.plugins.make_plugin_manager` beside the
built-in plugin, and stays silent when the run is quiet (``run.extra["quiet"]``,
set by the runner from ``--quiet``). Torch-free.
"""

from __future__ import annotations

import sys
from typing import Any

from shrinkbench_core.hookspecs import hookimpl

#: How the line names each training stage's epochs total in the run's config.
EPOCHS_SECTION = {"dense": "dense", "finetune": "finetune"}


def _number(value: Any, kind: str) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "s":
        return f"{value:.1f} s"
    if kind == "lr":
        return f"{value:.3g}"
    return f"{value:.4f}"


def epoch_line(stage: str, epoch: int, logs: dict[str, Any], total: int | None = None) -> str:
    """The line printed for one epoch (missing values are left out)."""
    parts = [f"[{stage}] epoch {epoch}" + (f"/{total}" if total else "")]
    for label, key, kind in (
        ("train loss", "train_loss", "loss"),
        ("acc", "train_acc", "pct"),
        ("val loss", "val_loss", "loss"),
        ("acc", "val_acc", "pct"),
        ("compression", "compression", "lr"),
        ("lr", "lr", "lr"),
        ("", "epoch_seconds", "s"),
    ):
        text = _number(logs.get(key), kind)
        if text is not None:
            parts.append(f"{label} {text}".strip() + ("x" if key == "compression" else ""))
    return "  ".join(parts)


def _total_epochs(config: dict[str, Any], stage: str) -> int | None:
    section = config.get(EPOCHS_SECTION.get(stage, stage))
    epochs = section.get("epochs") if isinstance(section, dict) else None
    return epochs if isinstance(epochs, int) and epochs > 0 else None


class EpochLines:
    """The plugin object: prints :func:`epoch_line` to stderr unless the run is quiet."""

    @hookimpl
    def shrinkbench_epoch_end(self, run, stage: str, epoch: int, logs: dict) -> None:
        """Print the epoch's line."""
        if (getattr(run, "extra", None) or {}).get("quiet"):
            return
        total = _total_epochs(getattr(run, "config", None) or {}, stage)
        print(epoch_line(stage, epoch, logs or {}, total), file=sys.stderr, flush=True)

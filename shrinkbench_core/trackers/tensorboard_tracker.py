"""The ``tensorboard`` tracker: event files written with ``torch.utils.tensorboard``.

Tags: ``STAGE/KEY`` per training epoch (``finetune/train_loss`` at step = epoch),
``stages/METRIC/KEY`` per evaluated stage (step 0 dense, 1 pruned, 2 fine-tuned),
``pruning/compression`` and ``pruning/layer_sparsity`` (a histogram) per pruning step,
``sparsity/PARAMETER`` per layer, the config as text and the hyperparameters with the final
metrics in the HParams dashboard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shrinkbench_core.lifecycle import RunInfo
from shrinkbench_core.trackers.base import Tracker
from shrinkbench_core.trackers.values import (
    STAGE_ORDER,
    finite,
    flat_params,
    layer_sparsity,
    scalars,
)

#: Final metrics shown beside the hyperparameters (HParams dashboard).
HPARAM_METRICS = {
    "compression/achieved": "final/compression",
    "theoretical_speedup": "final/theoretical_speedup",
    "finetuned/accuracy/test_top1": "final/test_top1",
    "finetuned/accuracy/test_loss": "final/test_loss",
}


class TensorBoardTracker(Tracker):
    """Writes the run's events under ``log_dir`` (default ``RUN_DIR/tensorboard``)."""

    writer: Any = None

    def log_dir(self, run: RunInfo) -> Path:
        """Where the event files go."""
        return Path(self.params.log_dir) if self.params.log_dir else Path(run.path) / "tensorboard"

    def on_start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir(run)), flush_secs=self.params.flush_secs)
        text = json.dumps(run.config, indent=2, sort_keys=True, default=str)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "))

    def on_epoch(self, run: RunInfo, stage: str, epoch: int, logs: dict[str, Any]) -> None:
        for key, value in scalars(logs).items():
            if key != "epoch":
                self.writer.add_scalar(f"{stage}/{key}", value, epoch)

    def on_stage(self, run: RunInfo, stage: str, metrics: dict[str, Any]) -> None:
        step = STAGE_ORDER.get(stage, len(STAGE_ORDER))
        for key, value in scalars(metrics).items():
            self.writer.add_scalar(f"stages/{key}", value, step)
        self.writer.flush()

    def on_pruning(
        self, run: RunInfo, step: int, compression: float, summary: Any, details: dict[str, Any]
    ) -> None:
        import numpy as np

        self.writer.add_scalar("pruning/compression", compression, step)
        for key, value in scalars(details).items():
            self.writer.add_scalar(f"pruning/{key}", value, step)
        sparsity = layer_sparsity(summary)
        if sparsity:
            self.writer.add_histogram(
                "pruning/layer_sparsity", np.array(list(sparsity.values())), step
            )
        if self.params.layer_sparsity:
            for name, value in sparsity.items():
                self.writer.add_scalar(f"sparsity/{name}", value, step)

    def on_end(
        self, run: RunInfo, status: str, metrics: dict[str, Any] | None, error: str | None
    ) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_text("status", status + (f": {error}" if error else ""))
        final = finite(scalars(metrics or {}))
        metric_dict = {tag: final[key] for key, tag in HPARAM_METRICS.items() if key in final}
        hparam_dict = {
            key: value
            for key, value in flat_params(run.config).items()
            if key not in ("output",) and not key.startswith("trackers")
        }
        hparam_dict["status"] = status
        for summary in hparams(hparam_dict, metric_dict):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metric_dict.items():
            self.writer.add_scalar(tag, value, 0)
        self.close()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        self.close()

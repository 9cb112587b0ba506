"""The ``wandb`` tracker: a Weights & Biases run per experiment attempt.

``mode`` defaults to ``$WANDB_MODE`` (``offline`` writes ``RUN_DIR/wandb/offline-run-*``,
to upload later with ``wandb sync``). The config is the run's config; ``STAGE/KEY`` is logged
per epoch against ``STAGE/epoch``, ``pruning/*`` and ``sparsity/*`` against
``pruning/step``; stage metrics go to the summary as ``STAGE/METRIC/KEY``. The run finishes
with exit code 0 (complete), 1 (failed) or 130 (interrupted). A resumed experiment starts a
new W&B run in the same group (the run directory's name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shrinkbench_core.lifecycle import RunInfo
from shrinkbench_core.trackers.base import Tracker
from shrinkbench_core.trackers.values import layer_sparsity, scalars

EXIT_CODES = {"complete": 0, "failed": 1, "interrupted": 130}


class WandbTracker(Tracker):
    """Logs the run to Weights & Biases."""

    wandb_run: Any = None

    def on_start(self, run: RunInfo) -> None:
        import wandb

        directory = Path(self.params.dir) if self.params.dir else Path(run.path)
        directory.mkdir(parents=True, exist_ok=True)
        self.defined: set[str] = set()
        self.wandb_run = wandb.init(
            project=self.params.project,
            entity=self.params.entity,
            mode=self.params.mode,
            dir=str(directory),
            name=run.name,
            group=run.name,
            job_type="resume" if run.resumed else "run",
            tags=list(self.params.tags),
            config=run.config,
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )

    def _define(self, prefix: str, step_metric: str) -> None:
        if prefix not in self.defined:
            self.wandb_run.define_metric(step_metric)
            self.wandb_run.define_metric(f"{prefix}/*", step_metric=step_metric)
            self.defined.add(prefix)

    def on_epoch(self, run: RunInfo, stage: str, epoch: int, logs: dict[str, Any]) -> None:
        self._define(stage, f"{stage}/epoch")
        values = {f"{stage}/{key}": value for key, value in scalars(logs).items()}
        values[f"{stage}/epoch"] = epoch
        self.wandb_run.log(values)

    def on_stage(self, run: RunInfo, stage: str, metrics: dict[str, Any]) -> None:
        self.wandb_run.summary.update(scalars(metrics, prefix=stage))

    def on_pruning(
        self, run: RunInfo, step: int, compression: float, summary: Any, details: dict[str, Any]
    ) -> None:
        self._define("pruning", "pruning/step")
        self._define("sparsity", "pruning/step")
        values: dict[str, Any] = {"pruning/step": step, "pruning/compression": compression}
        values.update(scalars(details, prefix="pruning"))
        values.update({f"sparsity/{k}": v for k, v in layer_sparsity(summary).items()})
        self.wandb_run.log(values)

    def on_end(
        self, run: RunInfo, status: str, metrics: dict[str, Any] | None, error: str | None
    ) -> None:
        summary: dict[str, Any] = {"status": status}
        if error:
            summary["error"] = error
        if metrics:
            summary["compression"] = (metrics.get("compression") or {}).get("achieved")
            summary["theoretical_speedup"] = metrics.get("theoretical_speedup")
        self.wandb_run.summary.update({k: v for k, v in summary.items() if v is not None})
        self.finish(EXIT_CODES.get(status, 1))

    def finish(self, exit_code: int) -> None:
        """Finish the W&B run (once)."""
        if self.wandb_run is not None:
            wandb_run, self.wandb_run = self.wandb_run, None
            wandb_run.finish(exit_code=exit_code)

    def abort(self) -> None:
        self.finish(1)

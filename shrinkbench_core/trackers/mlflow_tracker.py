"""The ``mlflow`` tracker: one MLflow run per experiment, through ``MlflowClient``.

The tracking URI is the ``tracking_uri`` parameter, else ``$MLFLOW_TRACKING_URI``, else the
local file store ``./mlruns``. Params are the flattened config (``finetune.optimizer.lr``);
metrics are ``STAGE/KEY`` per epoch (step = epoch), ``STAGE/METRIC/KEY`` per evaluated stage,
``pruning/compression`` and ``sparsity/PARAMETER`` per pruning step. When the run ends,
``metrics.json``, ``config.json`` and ``logs.csv`` are uploaded as artifacts and the MLflow
run is ended FINISHED (complete), FAILED or KILLED (interrupted). A resumed experiment
continues the MLflow run of the same run directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shrinkbench_core.lifecycle import RunInfo
from shrinkbench_core.trackers.base import Tracker
from shrinkbench_core.trackers.values import flat_params, layer_sparsity, scalars

MLFLOW_STATUS = {"complete": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
ARTIFACTS = ("metrics.json", "config.json", "logs.csv")
RUN_DIR_TAG = "shrinkbench.run_dir"


def tracking_uri(configured: str | None) -> str:
    """The parameter, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns`` (as a file URI)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or Path("mlruns").resolve().as_uri()


def is_file_store(uri: str) -> bool:
    """Whether ``uri`` names MLflow's file store (a plain path or ``file:``)."""
    return urlparse(uri).scheme in ("", "file")


class MlflowTracker(Tracker):
    """Logs the run to MLflow."""

    client: Any = None
    run_id: str | None = None

    def on_start(self, run: RunInfo) -> None:
        uri = tracking_uri(self.params.tracking_uri)
        if is_file_store(uri):
            # MLflow 3 keeps the file store behind this opt-in; ./mlruns is our default.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        self.client = MlflowClient(tracking_uri=uri)
        name = self.params.experiment_name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(name)
        )
        self.run_id = self._previous_run(experiment_id, run) if run.resumed else None
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            return
        created = self.client.create_run(
            experiment_id,
            run_name=run.name,
            tags={RUN_DIR_TAG: str(run.path), "shrinkbench.digest": run.digest},
        )
        self.run_id = created.info.run_id
        params = [
            Param(key, str(value)[:MAX_PARAM_VAL_LENGTH])
            for key, value in flat_params(run.config).items()
        ]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(
                self.run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            )

    def _previous_run(self, experiment_id: str, run: RunInfo) -> str | None:
        path = str(run.path).replace("'", "\\'")
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_DIR_TAG}` = '{path}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        batch = MAX_METRICS_PER_BATCH
        for start in range(0, len(metrics), batch):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + batch])

    def on_epoch(self, run: RunInfo, stage: str, epoch: int, logs: dict[str, Any]) -> None:
        values = {f"{stage}/{key}": value for key, value in scalars(logs).items()}
        values.pop(f"{stage}/epoch", None)
        self._log(values, epoch)

    def on_stage(self, run: RunInfo, stage: str, metrics: dict[str, Any]) -> None:
        self._log(scalars(metrics, prefix=stage), 0)

    def on_pruning(
        self, run: RunInfo, step: int, compression: float, summary: Any, details: dict[str, Any]
    ) -> None:
        values = {"pruning/compression": float(compression)}
        values.update(scalars(details, prefix="pruning"))
        values.update({f"sparsity/{k}": v for k, v in layer_sparsity(summary).items()})
        self._log(values, step)

    def on_end(
        self, run: RunInfo, status: str, metrics: dict[str, Any] | None, error: str | None
    ) -> None:
        self.client.set_tag(self.run_id, "shrinkbench.status", status)
        if error:
            self.client.set_tag(self.run_id, "shrinkbench.error", error[:5000])
        if self.params.artifacts:
            for name in ARTIFACTS:
                path = Path(run.path) / name
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))
        self.run_id = None

    def abort(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status="FAILED")
            self.run_id = None

"""The built-in experiment trackers: TensorBoard, MLflow and Weights & Biases.

Only specs and parameter models live here; the trackers themselves
(:mod:`shrinkbench_core.trackers`) import their library when a run starts, and the
library comes from an optional extra (``pip install 'shrinkbench-core[tensorboard]'``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shrinkbench_core.specs import TrackerSpec


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorBoardParams(_Params):
    """Options of the ``tensorboard`` tracker."""

    log_dir: str | None = Field(
        None, description="Folder of the event files; default RUN_DIR/tensorboard."
    )
    flush_secs: int = Field(30, ge=1, description="Seconds between flushes to disk.")
    layer_sparsity: bool = Field(
        True, description="Log each layer's sparsity as a scalar at every pruning step."
    )


class MlflowParams(_Params):
    """Options of the ``mlflow`` tracker."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else the file store "
        "./mlruns.",
    )
    experiment_name: str = Field("shrinkbench", min_length=1, description="MLflow experiment.")
    artifacts: bool = Field(
        True, description="Upload metrics.json, config.json and logs.csv when the run ends."
    )


class WandbParams(_Params):
    """Options of the ``wandb`` tracker."""

    project: str = Field("shrinkbench", min_length=1, description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (user or team); default yours.")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="W&B mode; default $WANDB_MODE, else online."
    )
    dir: str | None = Field(None, description="Folder of wandb's local files; default RUN_DIR.")
    tags: tuple[str, ...] = Field((), description="Tags of the W&B run.")


def tracker_specs() -> list[TrackerSpec]:
    """Specs of the three built-in trackers."""
    return [
        TrackerSpec(
            name="tensorboard",
            summary="TensorBoard event files under RUN_DIR/tensorboard.",
            factory="shrinkbench_core.trackers.tensorboard_tracker:TensorBoardTracker",
            parameters=TensorBoardParams,
            requires=("tensorboard",),
            extra="shrinkbench-core[tensorboard]",
        ),
        TrackerSpec(
            name="mlflow",
            summary="MLflow run per experiment (./mlruns or MLFLOW_TRACKING_URI).",
            factory="shrinkbench_core.trackers.mlflow_tracker:MlflowTracker",
            parameters=MlflowParams,
            requires=("mlflow",),
            extra="shrinkbench-core[mlflow]",
        ),
        TrackerSpec(
            name="wandb",
            summary="Weights & Biases run (honours WANDB_MODE).",
            factory="shrinkbench_core.trackers.wandb_tracker:WandbTracker",
            parameters=WandbParams,
            requires=("wandb",),
            extra="shrinkbench-core[wandb]",
        ),
    ]

"""The core's own plugin: embedded default data and models, standard metrics, trackers.

It registers through the same hooks as every third-party plugin. Importing it
does not import torch: factories are named as ``"module:attr"`` strings.
"""

from __future__ import annotations

from shrinkbench_core.builtin.catalogue import dataset_specs, model_specs
from shrinkbench_core.hookspecs import hookimpl


@hookimpl
def shrinkbench_register_datasets() -> list:
    """Register ``digits`` (embedded, no download) and ``mnist``."""
    return dataset_specs()


@hookimpl
def shrinkbench_register_models() -> list:
    """Register ``mlp``, ``lenet300`` and ``lenet5``."""
    return model_specs()


@hookimpl
def shrinkbench_register_metrics() -> list:
    """Register the standard metrics: size, flops, accuracy, latency, memory."""
    from shrinkbench_core.builtin.metrics import metric_specs

    return metric_specs()


@hookimpl
def shrinkbench_register_trackers() -> list:
    """Register the ``tensorboard``, ``mlflow`` and ``wandb`` trackers."""
    from shrinkbench_core.builtin.trackers import tracker_specs

    return tracker_specs()


@hookimpl
def shrinkbench_register_schedules() -> list:
    """Register the ``oneshot``, ``iterative`` and ``gradual`` schedules, and the
    sparse-training ones: ``static``, ``set``, ``rigl``."""
    from shrinkbench_core.builtin.schedule_specs import schedule_specs
    from shrinkbench_core.builtin.sparse_schedule_specs import sparse_schedule_specs

    return schedule_specs() + sparse_schedule_specs()


# logs.csv is written by the built-in plugin, from the lifecycle events
from shrinkbench_core.builtin.logs import (  # noqa: E402, F401
    shrinkbench_epoch_end,
    shrinkbench_run_start,
)

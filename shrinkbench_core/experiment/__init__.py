"""Running experiments: stages, schedules, run directories, resume.

:func:`run_experiment` runs one experiment from a config, with registered components or
with a model and data the caller built. Importing this package does not import torch
(the config and ``shrinkbench list`` use its torch-free modules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shrinkbench_core.config import ExperimentConfig
    from shrinkbench_core.data import DataSplits
    from shrinkbench_core.experiment.runner import RunResult
    from shrinkbench_core.registry import Registry

__all__ = ["RunResult", "run_experiment"]


def run_experiment(
    config: ExperimentConfig,
    *,
    model: Any = None,
    data: DataSplits | None = None,
    registry: Registry | None = None,
    quiet: bool = False,
    force: bool = False,
) -> RunResult:
    """Run (or resume, or report as complete) one experiment; return its :class:`RunResult`.

    Args:
        config: the experiment. Its registered names are resolved against ``registry``
            (default: the installed plugins); every problem is one
            :class:`~shrinkbench_core.errors.ConfigError`.
        model: an ``nn.Module`` or a zero-argument factory returning one, used instead of
            ``config.model`` (a factory is called once, seeded with the init seed). Its
            structure and initial weights are hashed into the run's digest and the dense
            cache's, so different models never share either; the object itself is not
            changed (the run trains a copy).
        data: :class:`~shrinkbench_core.data.DataSplits` used instead of ``config.dataset``
            (its batch sizes and workers still apply); hashed likewise.
        quiet: no progress bars.
        force: redo a completed run from scratch.

    Passing ``model`` (``data``) while the config also names ``model`` (``dataset``) is a
    ConfigError. ``config.json`` records user objects under ``user_objects`` with their
    fingerprints. A rerun with the same objects resumes or reports "already complete".
    """
    from shrinkbench_core.experiment.resolve import resolve_config
    from shrinkbench_core.experiment.runner import Experiment
    from shrinkbench_core.registry import get_registry

    registry = registry or get_registry()
    template = None
    if model is not None:
        from shrinkbench_core.experiment.user_objects import materialize_model

        template = materialize_model(model, config.seeds.resolve(config.seed).init or 0)
    provided: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    if template is not None or data is not None:
        from shrinkbench_core.experiment.user_objects import with_user_objects

        config, provided, provenance = with_user_objects(config, template, data)
    resolved = resolve_config(config, registry, provided=provided)
    experiment = Experiment(
        resolved,
        quiet=quiet,
        registry=registry,
        user_model=template,
        user_data=data,
        provenance=provenance,
    )
    return experiment.run(force=force)


def __getattr__(name: str) -> Any:
    if name == "RunResult":
        from shrinkbench_core.experiment.runner import RunResult

        return RunResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

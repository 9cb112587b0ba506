"""The plugin contract: every hook a ShrinkBench plugin can implement.

A plugin is a module (or object) with functions decorated by
``shrinkbench_core.hookimpl`` whose names match the hooks below. Installed
plugins are found through the ``shrinkbench`` entry-point group; the core's
own plugin (:mod:`shrinkbench_core.builtin`) registers through these very same
hooks.

Every registration hook is called once per plugin manager, with no
arguments, and must return a list of specs (possibly empty). The core
validates each item, fills in provenance (plugin, distribution, version) and
rejects anything that is not a valid spec with a message naming the plugin
and the field. All plugins' results are collected (no hook is
``firstresult``), so the order in which plugins are called does not matter.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "shrinkbench"
ENTRY_POINT_GROUP = "shrinkbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def shrinkbench_register_strategies() -> list:
    """Register pruning strategies.

    Called once, when the registry is first built. Return a list of
    :class:`shrinkbench_core.specs.StrategySpec` (or dicts with the same
    fields). Each spec's ``factory`` names a subclass of
    :class:`shrinkbench_core.pruning.Strategy`; it is imported only when the
    strategy is used. ``parameters`` is the pydantic model of the strategy's own
    options (``-p key=value`` on the command line). Set ``needs_data`` and
    ``needs_gradients`` when the strategy scores with calibration batches.
    """


@hookspec
def shrinkbench_register_datasets() -> list:
    """Register datasets.

    Called once, when the registry is first built. Return a list of
    :class:`shrinkbench_core.specs.DatasetSpec` (or dicts with the same
    fields). ``factory`` names ``build(params, *, seed) -> DataSplits``
    (:class:`shrinkbench_core.data.DataSplits`): the train, optional
    validation, and test splits as torch datasets. ``input_shape`` (without
    the batch dimension) and ``num_classes`` are declared on the spec so that
    models can be matched to data without loading anything.
    """


@hookspec
def shrinkbench_register_models() -> list:
    """Register model architectures.

    Called once, when the registry is first built. Return a list of
    :class:`shrinkbench_core.specs.ModelSpec` (or dicts with the same
    fields). ``factory`` names ``build(params, *, num_classes, input_shape) ->
    torch.nn.Module``. ``input_shapes`` lists the inputs the model accepts
    (empty: any). ``classifier`` names the output layer, which is excluded
    from pruning by default; when omitted the core finds it by tracing.
    ``metadata`` holds published facts shown by ``shrinkbench list models``.
    """


@hookspec
def shrinkbench_register_metrics() -> list:
    """Register metrics.

    Called once, when the registry is first built. Return a list of
    :class:`shrinkbench_core.specs.MetricSpec` (or dicts with the same
    fields). ``factory`` names ``compute(context, params) -> dict`` where
    ``context`` is a :class:`shrinkbench_core.metrics.MetricContext` (model,
    masks, data loaders, example input, device). Declare the ``unit`` and
    whether higher is better so tables and plots read the value correctly.
    """


# -- lifecycle: run events -------------------------------------------------------------
# Called by the runner while an experiment runs (see :mod:`shrinkbench_core.lifecycle`).
# ``run`` is a :class:`shrinkbench_core.lifecycle.RunInfo` (path, name, digest, config).
# Every implementation is called (no ``firstresult``); return values are ignored. An
# implementation that raises is reported once on stderr and disabled for the rest of the
# run: a tracker never stops a run or loses its results.


@hookspec
def shrinkbench_run_start(run) -> None:
    """Called once when an experiment starts or resumes, before the dense stage.

    ``run.resumed`` is True when the run continues an interrupted one. The run directory
    exists and ``config.json`` is written.
    """


@hookspec
def shrinkbench_run_end(run, status: str, metrics, error) -> None:
    """Called once when an experiment ends.

    ``status`` is ``"complete"``, ``"failed"`` or ``"interrupted"``. ``metrics`` is the
    content of ``metrics.json`` for a complete run, else None. ``error`` is a one-line
    description of what went wrong, else None.
    """


@hookspec
def shrinkbench_stage_end(run, stage: str, metrics: dict) -> None:
    """Called when a stage has been evaluated.

    ``stage`` is ``"dense"``, ``"pruned"`` or ``"finetuned"`` (and ``"best"``, the epoch
    with the best validation accuracy). ``metrics`` maps metric names to the metric's
    result dict, exactly as in ``metrics.json``.
    """


@hookspec
def shrinkbench_epoch_end(run, stage: str, epoch: int, logs: dict) -> None:
    """Called after every training epoch of a stage.

    ``stage`` is ``"dense"``, ``"round<k>"`` (the training between pruning rounds of an
    iterative schedule, k from 1) or ``"finetune"``. ``epoch`` counts from 1 within the
    stage. ``logs`` is the row written to ``logs.csv``: at least ``train_loss``,
    ``train_acc``, ``val_loss``, ``val_acc`` (None without a validation split), ``lr``,
    ``epoch_seconds``, plus ``compression`` while pruning is under way. Called on the
    writing process only (rank 0 of a distributed run).
    """


@hookspec
def shrinkbench_pruning_step(run, step: int, compression: float, summary, details: dict) -> None:
    """Called after every change of the masks: a pruning round or step, a sparse-training update.

    ``step`` numbers the changes from 1; ``compression`` is the model's compression after
    the change; ``summary`` is the per-parameter table of :func:`masks_summary` (a pandas
    DataFrame); ``details`` holds what the schedule adds (e.g. ``{"schedule": "rigl",
    "changed": 1234, "global_step": 500}``).
    """


@hookspec
def shrinkbench_register_trackers() -> list:
    """Register experiment trackers (TensorBoard, MLflow, W&B, ...).

    Called once, when the registry is first built. Return a list of
    :class:`shrinkbench_core.specs.TrackerSpec` (or dicts with the same fields). A
    tracker is selected by name with ``-p trackers=[NAME,...]``; its ``factory`` names a
    callable ``factory(params) -> object`` returning a plugin object whose methods are
    ``shrinkbench_*`` lifecycle hook implementations; it is registered for the run's
    duration only. ``requires`` lists the modules the tracker imports and ``extra`` the
    ``pip install`` extra that provides them, so a missing library is reported before
    anything runs.
    """


@hookspec
def shrinkbench_register_schedules() -> list:
    """Register pruning schedules: when, and how often, a model's masks change.

    Called once, when the registry is first built. Return a list of
    :class:`shrinkbench_core.specs.ScheduleSpec` (or dicts with the same fields). A
    schedule is selected with ``schedule.kind = NAME`` in the experiment config and takes
    its own options from ``schedule.params`` (validated against the spec's ``parameters``
    model; the built-in ``oneshot``, ``iterative`` and ``gradual`` keep their settings as
    fields of the ``schedule`` section). ``factory`` names a subclass of
    :class:`shrinkbench_core.experiment.schedule_api.Schedule`, built as
    ``factory(params, compression=target)`` and imported only when a run uses it.

    The schedule drives the run through a
    :class:`shrinkbench_core.experiment.schedule_api.ScheduleSession`: it can prune the
    model to a compression with the run's strategy, train epochs with masks held, rewind
    surviving weights, swap the held masks, and announce each mask change (the
    ``shrinkbench_pruning_step`` event). A schedule acts before fine-tuning
    (:meth:`Schedule.prune`), during it after every optimizer step
    (:meth:`Schedule.training_callback`), or both; set ``during_training`` on the spec when
    the masks change while the model trains (gradual pruning, sparse training).
    """

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

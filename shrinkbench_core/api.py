"""The public Python API: ``import shrinkbench_core as sb``.

A few verbs at the package top level, in the style of torchvision's
``list_models`` / ``get_model`` and timm's ``create_model``:

* lookups: :func:`list_components`, :func:`get_strategy`, :func:`get_model`,
  :func:`get_dataset` (the registry's names, with the CLI's errors);
* any ``nn.Module``: :func:`prune` and :func:`evaluate`;
* whole experiments: :func:`run` (registered names or your own model and data),
  :func:`run_sweep`;
* shipping the result: :func:`export`.

Errors a user can act on are :class:`~shrinkbench_core.errors.UserError`
subclasses with a message that says what was wrong and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinkbench_core.errors import ConfigError, UserError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from shrinkbench_core.data import DataSplits
    from shrinkbench_core.exporting.core import ExportResult
    from shrinkbench_core.metrics.flops import FlopReport
    from shrinkbench_core.pruning.strategy import Strategy
    from shrinkbench_core.registry import Registry
    from shrinkbench_core.sweep.driver import SweepSummary

__all__ = [
    "PruneResult",
    "evaluate",
    "export",
    "get_dataset",
    "get_model",
    "get_strategy",
    "list_components",
    "prune",
    "run",
    "run_sweep",
]

# -- lookups --------------------------------------------------------------------
def _registry(registry: Registry | None = None) -> Registry:
    from shrinkbench_core.registry import get_registry

    return registry or get_registry()


def component_kind(kind: str) -> str:
    """The registry's kind for ``kind``: singular or plural, any case (``Strategy`` ->
    ``strategies``); a clear error otherwise."""
    from shrinkbench_core.registry import SINGULAR

    lowered = kind.lower()
    for plural, singular in SINGULAR.items():
        if lowered in (plural, singular):
            return plural
    raise UserError(
        f"unknown component kind {kind!r}; choose one of: {', '.join(SINGULAR)}"
    )


def list_components(kind: str, pattern: str | None = None) -> list[str]:
    """Names of the registered components of one kind, sorted.

    ``kind`` is ``strategies``, ``datasets``, ``models``, ``metrics``,
    ``schedules`` or ``trackers`` (singular works too); ``pattern`` a shell-style
    filter, case-insensitive (``"Global*"``). A name registered by several
    plugins is listed once per plugin as ``plugin:name``, the form
    :func:`get_strategy` and friends accept.
    """
    registry = _registry()
    kind = component_kind(kind)
    display = {spec.qualified_name: name for spec, name in zip(
        registry.specs(kind), registry.names(kind), strict=True
    )}
    return [display[spec.qualified_name] for spec in registry.list(kind, pattern)]


def _validated(spec: Any, params: Mapping[str, Any], section: str) -> Any:
    """``spec.parameters(**params)``; problems as one :class:`ConfigError`."""
    from pydantic import ValidationError

    from shrinkbench_core.config import format_validation_error

    try:
        return spec.parameters(**params)
    except ValidationError as error:
        allowed = ", ".join(spec.parameters.model_fields) or "(none)"
        lines = [
            line + (f" (allowed: {allowed})" if line.endswith("unknown field") else "")
            for line in format_validation_error(error, prefix=f"{section}.")
        ]
        raise ConfigError(lines, title=f"invalid parameters for {spec.kind} {spec.name}") from None


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name`` (or ``plugin:name``).

    Unknown names suggest close matches; a name two plugins register lists the
    ``plugin:name`` candidates. Use the class directly
    (``cls(model, 4, classifier="fc").apply()``) or pass it to :func:`prune`.
    """
    return _registry().get("strategies", name).load()


def get_model(
    name: str, *, num_classes: int, input_shape: Sequence[int], **params: Any
) -> nn.Module:
    """Build the registered model ``name`` for ``num_classes`` classes and inputs of
    ``input_shape`` (without the batch dimension); ``params`` are the model's own
    options (see ``shrinkbench show model NAME``)."""
    spec = _registry().get("models", name)
    shape = tuple(int(size) for size in input_shape)
    if not spec.accepts(shape):
        allowed = ", ".join(str(s) for s in spec.input_shapes)
        raise UserError(f"model {spec.name} accepts inputs of shape {allowed}, not {shape}")
    options = _validated(spec, params, "model")
    return spec.load()(options, num_classes=num_classes, input_shape=shape)


def get_dataset(name: str, *, seed: int = 0, **params: Any) -> DataSplits:
    """Build the registered dataset ``name``: its train/validation/test splits as a
    :class:`~shrinkbench_core.data.DataSplits`; ``params`` are the dataset's own
    options (``root=...``), ``seed`` seeds any random split it makes."""
    spec = _registry().get("datasets", name)
    return spec.load()(_validated(spec, params, "dataset"), seed=seed)


# -- pruning any nn.Module ----------------------------------------------------------
@dataclass
class PruneResult:
    """What :func:`prune` did.

    ``model`` is the pruned model (the one passed in when ``inplace``),
    ``masks`` the keep-masks by parameter name (``True`` = keep), ``classifier``
    the module left dense (``None`` when none was excluded), ``prunable`` the
    parameters the strategy could prune. ``compression`` is measured on the
    model (all parameters / nonzero parameters, masked ones counted by their
    masks); ``theoretical_speedup`` (dense / nonzero multiply-adds for
    ``example_input``) and ``layers`` (one row per masked parameter) are
    computed when first read.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    strategy: str
    requested_compression: float
    compression: float
    example_input: Any = field(repr=False)
    classifier: str | None = None
    prunable: list[str] = field(default_factory=list, repr=False)
    _flops: FlopReport | None = field(default=None, init=False, repr=False)

    @property
    def flops(self) -> FlopReport:
        """Multiply-adds of the pruned model for ``example_input``, dense and nonzero."""
        if self._flops is None:
            from shrinkbench_core.metrics.flops import count_flops

            self._flops = count_flops(self.model, self.example_input)
        return self._flops

    @property
    def theoretical_speedup(self) -> float:
        """Dense multiply-adds / multiply-adds of nonzero weights (the paper's speedup)."""
        return self.flops.theoretical_speedup

    @property
    def layers(self) -> pd.DataFrame:
        """Per masked parameter: shape, size, kept, pruned, compression (a pandas table)."""
        from shrinkbench_core.pruning.masks import masks_summary

        return masks_summary(self.masks)

    def summary(self) -> str:
        """One line: strategy, requested and achieved compression, theoretical speedup."""
        return (
            f"{self.strategy}: compression {self.compression:.2f}x (requested "
            f"{self.requested_compression:g}x), theoretical speedup "
            f"{self.theoretical_speedup:.2f}x, {len(self.masks)} masked parameters, "
            f"classifier {self.classifier or '(none excluded)'}"
        )


def _strategy_class(strategy: str | type) -> tuple[type[Strategy], Any]:
    """The class and, when registered, its spec."""
    from shrinkbench_core.pruning.strategy import Strategy

    registry = _registry()
    if isinstance(strategy, str):
        spec = registry.get("strategies", strategy)
        return spec.load(), spec
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        factory = f"{strategy.__module__}:{strategy.__qualname__}"
        specs = [spec for spec in registry.specs("strategies") if spec.factory == factory]
        return strategy, specs[0] if specs else None
    raise UserError(
        f"strategy must be a registered name (see sb.list_components('strategies')) or a "
        f"Strategy subclass, not {type(strategy).__name__}"
    )


def _calibration_batches(calibration: Any, count: int) -> list[tuple[Any, Any]] | None:
    if calibration is None:
        return None
    if isinstance(calibration, (list, tuple)):
        batches = list(calibration)
    elif isinstance(calibration, Iterable):
        batches = list(itertools.islice(calibration, count))
    else:
        raise UserError(
            "calibration must be a list of (inputs, targets) batches or a DataLoader, "
            f"not {type(calibration).__name__}"
        )
    for index, batch in enumerate(batches):
        if not (isinstance(batch, (list, tuple)) and len(batch) == 2):
            raise UserError(
                f"calibration[{index}] must be an (inputs, targets) pair, "
                f"got {type(batch).__name__}"
            )
    return batches


def _prunable_names(
    model: nn.Module, prunable: Any, classifier: str | bool | None, example: Any
) -> tuple[list[str], str | None]:
    """The prunable parameter names and the classifier left dense."""
    from shrinkbench_core.pruning.prunable import (
        PrunableRule,
        locate_classifier,
        prunable_parameters,
    )

    if prunable is not None and not isinstance(prunable, (PrunableRule, Mapping)):
        names = list(prunable)
        known = dict(model.named_parameters())
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UserError(
                f"prunable names parameters the model does not have: {', '.join(unknown[:5])}. "
                f"Its parameters look like: {', '.join(list(known)[:3])} ..."
            )
        return names, classifier if isinstance(classifier, str) else None
    if isinstance(prunable, Mapping):
        from pydantic import ValidationError

        from shrinkbench_core.config import format_validation_error

        try:
            prunable = PrunableRule(**prunable)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, prefix="prunable.")) from None
    rule = prunable or PrunableRule()
    if classifier is False or not rule.exclude_classifier:
        return prunable_parameters(model, rule, None), None
    if isinstance(classifier, str):
        if classifier not in dict(model.named_modules()):
            raise UserError(f"classifier={classifier!r} is not a module of the model")
        return prunable_parameters(model, rule, classifier), classifier
    problems: list[str] = []
    found = locate_classifier(model, example, problems)
    if found is None:
        raise UserError(
            f"cannot find the classifier of {type(model).__name__}: {'; '.join(problems)}.\n"
            "Pass classifier='module.name' (the output layer, left dense), or "
            "classifier=False to prune every layer."
        )
    return prunable_parameters(model, rule, found), found


def prune(
    model: nn.Module,
    strategy: str | type[Strategy],
    compression: float,
    *,
    example_input: Any,
    calibration: Any = None,
    inplace: bool = True,
    prunable: Any = None,
    classifier: str | bool | None = None,
    seed: int = 0,
    calibration_batches: int = 4,
    **params: Any,
) -> PruneResult:
    """Prune any ``nn.Module`` to ``compression`` (all parameters / nonzero parameters).

    Args:
        model: the model; pruned in place unless ``inplace=False`` (then a copy).
        strategy: a registered name (``"GlobalMagWeight"``) or a ``Strategy`` subclass.
        compression: target ratio, >= 1 (4 keeps a quarter of the parameters).
        example_input: one input batch (e.g. ``torch.randn(1, 3, 224, 224)``) on the
            model's device: it locates the classifier when tracing the graph
            alone cannot, and counts multiply-adds for ``theoretical_speedup``.
        calibration: ``(inputs, targets)`` batches, or a DataLoader whose first
            ``calibration_batches`` batches are used, for data-driven strategies.
        prunable: parameter names to prune, or a ``PrunableRule`` (or its fields
            as a dict); default: every convolution and linear weight but the
            classifier's.
        classifier: module name of the layer to leave dense; default: found by
            tracing (the fx graph, else a forward pass of ``example_input``);
            ``False`` prunes every layer. An untraceable model is an error that
            says to pass it.
        seed: seed of any randomness in the strategy.
        params: the strategy's own options (``norm="l2"``), validated.

    Channel strategies also mask the biases and BatchNorm entries of removed
    channels, so the masked model equals its physically shrunk version.
    """
    import torch
    from torch import nn

    from shrinkbench_core.pruning.masks import apply_masks

    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) and not isinstance(example_input, tuple):
        raise UserError(
            "example_input must be a tensor (one input batch, e.g. torch.randn(1, 3, 224, 224))"
        )
    cls, spec = _strategy_class(strategy)
    name = spec.name if spec is not None else cls.__name__
    options = _validated(spec or _ClassSpec(cls), params, "strategy")
    batches = _calibration_batches(calibration, calibration_batches)
    if spec is not None and spec.needs_data and not batches:
        raise UserError(
            f"strategy {name} needs calibration data: pass calibration=[(inputs, targets), ...] "
            "or calibration=a DataLoader"
        )
    if not inplace:
        model = copy.deepcopy(model)
    names, found = _prunable_names(model, prunable, classifier, example_input)
    shape = tuple(example_input.shape[1:]) if isinstance(example_input, torch.Tensor) else None
    pruner = cls(
        model,
        compression,
        params=options,
        calibration=batches,
        prunable=names,
        classifier=found,
        seed=seed,
        input_shape=shape,
    )
    masks = pruner.apply()
    if spec is not None and spec.structure == "channel":
        import warnings

        from shrinkbench_core.pruning.structured import complete_channel_masks

        try:
            masks = complete_channel_masks(model, masks, example_input)
        except UserError as error:  # untraceable: the weight-only masks stay, as in a run
            warnings.warn(f"channel masks not completed: {error}", stacklevel=2)
        apply_masks(model, masks)
    return PruneResult(
        model=model,
        masks=masks,
        strategy=name,
        requested_compression=float(compression),
        compression=_compression(model, masks),
        example_input=example_input,
        classifier=found,
        prunable=names,
    )


@dataclass(frozen=True)
class _ClassSpec:
    """Stands in for a spec when a strategy class is not registered."""

    cls: type

    @property
    def parameters(self) -> type:
        return self.cls.Parameters

    @property
    def kind(self) -> str:
        return "strategy"

    @property
    def name(self) -> str:
        return self.cls.__name__


def _compression(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> float:
    """All parameters / nonzero parameters, a masked parameter counted by its mask (its
    pruned entries are zero; counting the bool mask reads a quarter of the bytes)."""
    import torch

    total = nonzero = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            total += param.numel()
            source = masks.get(name, param)
            nonzero += int(torch.count_nonzero(source))
    return total / nonzero if nonzero else math.inf


# -- evaluating any nn.Module ----------------------------------------------------
def _loaders(data: Any, batch_size: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader, Dataset

    from shrinkbench_core.data import DataSplits

    def loader(dataset: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False)

    if isinstance(data, DataSplits):
        loaders = {"test": loader(data.test)}
        if data.validation is not None and len(data.validation):  # type: ignore[arg-type]
            loaders["validation"] = loader(data.validation)
        return loaders
    if isinstance(data, DataLoader):
        return {"test": data}
    if isinstance(data, Dataset):
        return {"test": loader(data)}
    raise UserError(
        "data must be a DataSplits (sb.get_dataset), a torch Dataset or a DataLoader, "
        f"not {type(data).__name__}"
    )


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    metrics: Sequence[str] = ("size", "flops", "accuracy"),
    masks: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Registered metrics of ``model`` on ``data``: ``{metric: {key: value}}``.

    ``data`` is a ``DataSplits`` (test and validation splits are evaluated, keys
    prefixed ``test_`` / ``validation_``), a Dataset or a DataLoader (its
    batches are the test split). ``masks`` (e.g. ``PruneResult.masks``) are
    applied to a copy when the model does not hold them yet, and name the
    prunable parameters for ``size``. Any registered metric works
    (``metrics=["size", "flops", "accuracy", "latency", "memory"]``); the
    model is evaluated on the device of its parameters.
    """
    import torch

    from shrinkbench_core.metrics import MetricContext
    from shrinkbench_core.pruning.masks import apply_masks, validate_masks
    from shrinkbench_core.pruning.prunable import locate_classifier, prunable_parameters

    registry = _registry()
    specs = []
    problems = []
    for index, name in enumerate(metrics):
        try:
            specs.append(registry.get("metrics", name))
        except UserError as error:
            problems.append(f"metrics[{index}]: {str(error).splitlines()[0]}")
    if problems:
        raise ConfigError(problems, title="invalid metrics")
    loaders = _loaders(data, batch_size)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    inputs = next(iter(loaders["test"]))[0]
    example = inputs[:1].to(device)
    if masks:
        validate_masks(model, masks)
        params = dict(model.named_parameters())
        if any(bool((params[n].detach()[~m.to(device)] != 0).any()) for n, m in masks.items()):
            model = copy.deepcopy(model)
            apply_masks(model, masks)
        prunable = list(masks)
    else:
        prunable = prunable_parameters(model, classifier=locate_classifier(model, example))
    context = MetricContext(
        model=model,
        example_input=example,
        device=device,
        masks=dict(masks or {}),
        prunable=prunable,
        loaders=loaders,
        stage="pruned" if masks else "dense",
        batch_size=batch_size,
    )
    results: dict[str, Any] = {}
    for spec in specs:
        compute = spec.load()
        if "split" in spec.parameters.model_fields:
            merged: dict[str, Any] = {}
            for split in loaders:
                values = compute(context, spec.parameters(split=split))
                merged.update({f"{split}_{key}": value for key, value in values.items()})
            results[spec.name] = merged
        else:
            results[spec.name] = compute(context, spec.parameters())
    return results


# -- whole experiments ----------------------------------------------------------
_SECTIONS = ("strategy", "dataset", "model")


def config_dict(config: Any = None, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An experiment config as a plain dict: ``config`` (a dict, an ``ExperimentConfig``
    or a TOML/YAML/JSON file) with ``fields`` applied on top.

    A field is any experiment field, dotted or nested: ``strategy="LayerMagWeight"``
    (a name), ``compression=8``, ``finetune={"epochs": 1}``,
    ``**{"finetune.optimizer.lr": 0.01}``, ``strategy={"name": "X", "norm": "l2"}``.
    """
    from shrinkbench_core.config import ExperimentConfig, apply_override, read_config_file

    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, ExperimentConfig):  # what was set: components' defaults fill the rest
        data = config.model_dump(mode="json", exclude_unset=True)
    elif isinstance(config, Mapping):
        data = copy.deepcopy(dict(config))
    elif isinstance(config, (str, Path)):
        data = read_config_file(config)
    else:
        raise UserError(
            "config must be a dict, an ExperimentConfig or the path of a TOML/YAML/JSON file, "
            f"not {type(config).__name__}"
        )
    for key, value in (fields or {}).items():
        _apply_field(data, key, value, apply_override)
    return data


def _apply_field(data: dict[str, Any], key: str, value: Any, apply_override: Callable) -> None:
    if key in _SECTIONS and isinstance(value, str):
        apply_override(data, f"{key}.name", value)
    elif isinstance(value, Mapping) and key != "params" and not key.endswith(".params"):
        if not value:
            apply_override(data, key, {})
        for inner, item in value.items():
            _apply_field(data, f"{key}.{inner}", item, apply_override)
    else:
        apply_override(data, key, value)


def run(
    config: Any = None,
    /,
    *,
    model: Any = None,
    data: Any = None,
    quiet: bool = False,
    force: bool = False,
    **fields: Any,
) -> Any:
    """Run one whole experiment (dense -> prune -> fine-tune -> evaluate); return its
    ``RunResult`` (``.path`` of the run directory, ``.metrics``).

    ``config`` is a dict, an ``ExperimentConfig`` or a config file; ``fields``
    set any experiment field on top (``strategy="GlobalMagWeight"``,
    ``compression=4``, ``finetune={"epochs": 1}``). ``model`` and ``data`` may
    be registered names (``model="mlp"``, ``model={"name": "mlp",
    "hidden_sizes": [64]}``, ``data="digits"``), or your own ``nn.Module`` (or
    a zero-argument function returning one) and
    :class:`~shrinkbench_core.data.DataSplits`:
    their architecture and initial weights go into the run's digest, so two
    different models never share a run directory or dense cache. Same run
    directory, dense cache and resume as ``shrinkbench-run``; a completed run
    is reported, not redone, unless ``force``. Passing ``model`` while the
    config also names a model (``data`` and a dataset) is a ``ConfigError``.
    """
    from shrinkbench_core.config import build_config
    from shrinkbench_core.experiment import run_experiment

    if isinstance(model, (str, Mapping)):  # a registered name (with its parameters)
        fields = {**fields, "model": model}
        model = None
    if isinstance(data, (str, Mapping)):
        fields = {**fields, "dataset": data}
        data = None
    merged = config_dict(config, fields)
    return run_experiment(build_config(merged), model=model, data=data, quiet=quiet, force=force)


def run_sweep(
    sweep: Any,
    /,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    output: str | Path | None = None,
    quiet: bool = False,
) -> SweepSummary:
    """Run every experiment of a sweep that is not complete yet; return the summary.

    ``sweep`` is a sweep file path, a dict with the sweep file's fields
    (``strategies``, ``compressions``, ``seeds``, ``datasets``, ``models``,
    ``shared``, ``output``) or a ``SweepFile``. Runs go to ``workers`` local
    processes (default 1) or Ray (``executor="ray"``). Works the same from a
    script (with or without ``if __name__ == "__main__":``), ``python - <
    file`` and a notebook: workers never re-import the calling script. Collect
    the results with :func:`shrinkbench_core.results.load_results`.
    """
    from shrinkbench_core.sweep.config import SweepFile, load_sweep_file, parse_sweep
    from shrinkbench_core.sweep.driver import run_sweep as drive

    if isinstance(sweep, SweepFile):
        parsed = sweep
    elif isinstance(sweep, Mapping):
        parsed = parse_sweep(dict(sweep), source="sweep dict")
    elif isinstance(sweep, (str, Path)):
        parsed = load_sweep_file(sweep)
    else:
        raise UserError(
            f"sweep must be a sweep file path, a dict or a SweepFile, not {type(sweep).__name__}"
        )
    return drive(
        parsed,
        executor=executor,
        workers=workers,
        address=address,
        threads=threads,
        output=output,
        quiet=quiet,
    )


def export(
    source: Any,
    out: str | Path,
    *,
    format: str | None = None,  # noqa: A002 - the CLI's --format
    shrink: bool = False,
    model: Any = None,
    example_input: Any = None,
    masks: Mapping[str, Any] | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Export a finished run (its directory or ``RunResult``) or an ``nn.Module`` to a
    file that loads without ShrinkBench, checked by loading it back.

    ``format``: ``pt`` (a ``torch.export`` program), ``safetensors`` (state dict
    and architecture metadata) or ``onnx`` (checked with onnxruntime); default:
    from ``out``'s suffix. ``shrink`` removes pruned channels physically first
    (channel strategies). ``model`` rebuilds a run of your own architecture (a
    module or a function building one); ``example_input`` is needed for a module
    or a run on your own data; ``masks`` are applied to a module's copy first.
    Returns the path, size in bytes and the largest output difference; see
    :func:`shrinkbench_core.exporting.export_model`.
    """
    from shrinkbench_core.exporting import export_model

    return export_model(
        source,
        out,
        format=format,
        shrink=shrink,
        model=model,
        example_input=example_input,
        masks=dict(masks) if masks is not None else None,
        tolerance=tolerance,
    )

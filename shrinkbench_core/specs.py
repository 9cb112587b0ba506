"""Pydantic models of what plugins register.

Every registration hook returns a list of these specs. A spec describes a
component without importing it: ``factory`` is a ``"module:attr"`` string that
is imported only when the component is used, so listing components never
imports torch-heavy code.

Factory contracts (what the object named by ``factory`` must be):

* strategy: a subclass of :class:`shrinkbench_core.pruning.Strategy`.
* dataset: ``build(params, *, seed: int) -> shrinkbench_core.data.DataSplits``.
* model: ``build(params, *, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module``.
* metric: ``compute(context: shrinkbench_core.metrics.MetricContext, params) -> dict[str, object]``.
* schedule: a subclass of :class:`shrinkbench_core.experiment.schedule_api.Schedule`.
* tracker: ``factory(params) -> object`` whose methods implement lifecycle hooks.

``params`` is always an instance of the spec's ``parameters`` model.

Datasets and models may also declare ``config_defaults``: experiment settings that
suit them (a language model trains with AdamW for one epoch, not with the image
classifiers' 15 SGD epochs). They apply only where the user set nothing; see
:func:`shrinkbench_core.config.apply_config_defaults` for the precedence.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]*$"
FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class NoParameters(BaseModel):
    """Parameter model of a component that takes no parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentSpec(BaseModel):
    """Fields shared by every registered component."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: ClassVar[str] = "component"

    name: str = Field(pattern=NAME_PATTERN, description="Registry name, e.g. 'GlobalMagWeight'.")
    summary: str = Field(min_length=1, max_length=200, description="One line shown in listings.")
    factory: str = Field(pattern=FACTORY_PATTERN, description="Lazy 'module:attr' import path.")
    parameters: type[BaseModel] = Field(
        default=NoParameters, description="Pydantic model of the component's own parameters."
    )
    # Provenance, filled in by the core when the plugin is loaded.
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None

    @field_validator("summary")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("summary must be a single line")
        return value.strip()

    @property
    def qualified_name(self) -> str:
        """``plugin:name``, unique across plugins."""
        return f"{self.plugin}:{self.name}" if self.plugin else self.name

    def load(self) -> Any:
        """Import and return the object named by ``factory``."""
        return _import_path(self.factory)

    def parameter_defaults(self) -> dict[str, Any]:
        """Each parameter with its default (``None`` marks a required one)."""
        out: dict[str, Any] = {}
        for field_name, field in self.parameters.model_fields.items():
            out[field_name] = (
                None if field.is_required() else field.get_default(call_default_factory=True)
            )
        return out

    def listing(self) -> dict[str, Any]:
        """A JSON-friendly description for ``shrinkbench list``."""
        data = self.model_dump(exclude={"parameters"}, mode="json")
        data["kind"] = self.kind
        data["parameters"] = {
            name: {
                "default": _jsonable(default),
                "required": self.parameters.model_fields[name].is_required(),
                "description": self.parameters.model_fields[name].description,
            }
            for name, default in self.parameter_defaults().items()
        }
        return data


def _import_path(path: str) -> Any:
    """The object named by ``"module:attr.attr"``."""
    module_name, _, attr_path = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class StrategySpec(ComponentSpec):
    """A pruning strategy.

    ``scope`` says whether the budget is spread over the whole model
    (``global``) or applied to each layer alike (``layerwise``); ``structure``
    what a mask removes. ``needs_data`` / ``needs_gradients`` tell the runner to
    pass calibration batches; gradients are measured on them, so
    ``needs_gradients=True`` implies ``needs_data=True`` (stating
    ``needs_data=False`` beside it is an error).
    """

    kind: ClassVar[str] = "strategy"

    scope: Literal["global", "layerwise"]
    structure: Literal["unstructured", "channel", "n:m"] = "unstructured"
    needs_data: bool = False
    needs_gradients: bool = False
    reference: str | None = Field(default=None, description="Paper the scoring rule follows.")

    @model_validator(mode="before")
    @classmethod
    def _gradients_need_data(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("needs_gradients") is True:
            if "needs_data" not in data:
                return {**data, "needs_data": True}
            if data["needs_data"] is False:
                raise ValueError(
                    "needs_gradients=True needs needs_data=True (gradients are measured on "
                    "calibration batches)"
                )
        return data


class ConfiguringSpec(ComponentSpec):
    """A component that may suggest experiment settings: ``config_defaults``.

    Keys are dotted experiment-config paths (``"dense.epochs"``,
    ``"dense.optimizer.lr"``, ``"finetune.epochs"``, ``"dataset.batch_size"``,
    ``"calibration.samples"``, ``"metrics"``) or the component's own parameters
    (``"model.params.width"`` for a model, ``"dataset.params.seqlen"`` for a dataset).
    What to run, where and with which seeds (component names, strategy, output,
    device, seeds, trackers) cannot be defaulted. Keys and values are checked when the
    spec is built, so a bad key is reported as an error of the plugin that registers it.
    """

    config_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Experiment settings used where the user set none, by dotted key.",
    )

    @model_validator(mode="after")
    def _check_config_defaults(self) -> ConfiguringSpec:
        if self.config_defaults:
            from shrinkbench_core.config import config_default_problems

            problems = config_default_problems(
                self.config_defaults, self.kind, self.parameters
            )
            if problems:
                raise ValueError("invalid config_defaults: " + "; ".join(problems))
        return self


class DatasetSpec(ConfiguringSpec):
    """A classification dataset: its input shape (C, H, W or features) and classes.

    ``check`` optionally names (lazily, ``"module:attr"``) a function
    ``check(params) -> list[str]`` that finds problems cheaply before a run
    (files missing, split sizes larger than the data) without loading the data.
    Each problem is ``"parameter: problem"`` (or just a sentence); the core
    reports it as ``dataset.params.parameter: problem`` during validation.
    """

    kind: ClassVar[str] = "dataset"

    input_shape: tuple[int, ...]
    num_classes: int = Field(gt=1)
    check: str | None = Field(
        default=None, pattern=FACTORY_PATTERN, description="Lazy 'module:attr' of check(params)."
    )

    def load_check(self) -> Any:
        """Import and return the ``check`` function (``None`` when the spec has none)."""
        return _import_path(self.check) if self.check else None


class ModelSpec(ConfiguringSpec):
    """A model architecture.

    ``input_shapes`` lists the input shapes (without batch) the model accepts;
    empty means any. ``metadata`` carries published facts (accuracy, parameter
    count, GFLOPs) for listings.
    """

    kind: ClassVar[str] = "model"

    input_shapes: tuple[tuple[int, ...], ...] = ()
    classifier: str | None = Field(
        default=None, description="Module name of the classifier layer, if fixed."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    def accepts(self, input_shape: tuple[int, ...]) -> bool:
        """Whether this model can consume inputs of ``input_shape``."""
        return not self.input_shapes or tuple(input_shape) in self.input_shapes


class MetricSpec(ComponentSpec):
    """A metric: its unit and whether higher is better (``None``: neither)."""

    kind: ClassVar[str] = "metric"

    unit: str
    higher_is_better: bool | None = None


class ScheduleSpec(ComponentSpec):
    """A pruning schedule: when (and how often) the masks change.

    ``factory`` names a subclass of :class:`shrinkbench_core.experiment.schedule_api.Schedule`,
    built as ``factory(params, compression=target)``. ``during_training`` says that the masks
    change while the model trains (gradual pruning, sparse training) rather than before
    fine-tuning.
    """

    kind: ClassVar[str] = "schedule"

    during_training: bool = False
    reference: str | None = Field(default=None, description="Paper the schedule follows.")


class TrackerSpec(ComponentSpec):
    """An experiment tracker (TensorBoard, MLflow, W&B, ...), selected with ``trackers``.

    ``factory`` names ``factory(params) -> object``: a plugin object whose methods are
    ``shrinkbench_*`` lifecycle hook implementations, registered for one run. ``requires``
    lists the modules it imports when the run starts and ``extra`` the ``pip install``
    target that provides them (e.g. ``"shrinkbench-core[tensorboard]"``), so that a missing
    library is reported before anything runs.
    """

    kind: ClassVar[str] = "tracker"

    requires: tuple[str, ...] = Field(default=(), description="Modules imported at run start.")
    extra: str | None = Field(default=None, description="pip target providing `requires`.")


SPEC_TYPES: dict[str, type[ComponentSpec]] = {
    "strategies": StrategySpec,
    "datasets": DatasetSpec,
    "models": ModelSpec,
    "metrics": MetricSpec,
    "schedules": ScheduleSpec,
    "trackers": TrackerSpec,
}

"""Pydantic experiment configuration, its sources (flags, files) and its digest.

An experiment is fully described by :class:`ExperimentConfig`. It can come
from a TOML/YAML/JSON file and/or command-line flags (flags win). Component
names are checked against the registry and their parameters against each
component's own parameter model; every problem is reported at once as
``field: problem`` lines.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from shrinkbench_core.errors import ConfigError, UserError
from shrinkbench_core.experiment.schedule_config import ScheduleConfig

DEFAULT_METRICS = ("size", "flops", "accuracy", "latency")
DEFAULT_PRUNABLE_TYPES = (
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Linear",
)


class PrunableRule(BaseModel):
    """A rule selecting prunable parameters by module type and name patterns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module_types: tuple[str, ...] = Field(
        DEFAULT_PRUNABLE_TYPES,
        description="Class names of modules (or their base classes) whose `weight` is prunable.",
    )
    include: tuple[str, ...] = Field(
        (),
        description="Extra parameter-name patterns to prune, e.g. 'embed.weight'.",
    )
    exclude: tuple[str, ...] = Field((), description="Parameter-name patterns never to prune.")
    exclude_classifier: bool = Field(True, description="Leave the classifier layer dense.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentConfig(_Strict):
    """A registered component by name, with its own parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DataConfig(ComponentConfig):
    """The dataset, its parameters, and how it is batched."""

    name: str = "digits"
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        0,
        description="DataLoader worker processes; 'auto' picks them per device and core count "
        "(shrinkbench_core.experiment.loading). Pinned memory and persistent workers always "
        "follow the device.",
    )


class ModelConfig(ComponentConfig):
    """The model architecture and its parameters."""

    name: str = "mlp"


class StrategyConfig(ComponentConfig):
    """The pruning strategy and its parameters."""

    name: str = "GlobalMagWeight"


#: Optimizer settings that a given optimizer does not use.
UNUSED_OPTIMIZER_FIELDS = {
    "sgd": ("betas",),
    "adam": ("momentum", "nesterov"),
    "adamw": ("momentum", "nesterov"),
}
#: Highest seed: torch seeds are 64-bit, and stages add offsets to the seed.
MAX_SEED = 2**63 - 1


def _seed_in_range(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"{value} is out of range: a seed is between 0 and 2**63 - 1 = {MAX_SEED} "
            "(torch seeds are 64-bit)"
        )
    return value


Seed = Annotated[int, AfterValidator(_seed_in_range)]


class OptimizerConfig(_Strict):
    """A torch optimizer and its usual settings.

    A dump leaves out the settings the chosen optimizer does not use (SGD's
    momentum and Nesterov for Adam/AdamW, the betas for SGD) while they have
    their defaults; the digest always hashes every field, so it is unchanged.
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)

    @model_serializer(mode="wrap")
    def _used_fields(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if not (info.context or {}).get("all_fields"):
            for name in UNUSED_OPTIMIZER_FIELDS[self.name]:
                if getattr(self, name) == type(self).model_fields[name].default:
                    data.pop(name, None)
        return data


class TrainingConfig(_Strict):
    """How a model is trained: epochs, optimizer and learning-rate schedule."""

    epochs: int = Field(5, ge=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    step_size: int = Field(30, ge=1, description="Epochs between decays (schedule=step).")
    gamma: float = Field(0.1, gt=0, description="Decay factor (schedule=step).")


class DenseConfig(TrainingConfig):
    """Where the dense weights come from, and how they are trained when trained here."""

    source: Literal["train", "checkpoint", "pretrained"] = "train"
    checkpoint: str | None = None
    weights: str | None = Field(None, description="A plugin's named pretrained weights.")
    epochs: int = Field(15, ge=0)


class CalibrationConfig(_Strict):
    """The calibration data of data-driven strategies, as LM papers state it.

    ``samples`` (examples, e.g. token windows) replaces ``calibration_batches`` when set:
    the runner draws just enough batches of ``dataset.batch_size`` and keeps that many.
    ``seqlen`` (tokens per window) is for strategies that calibrate on token windows: it
    is the same setting as their ``seqlen`` parameter (and ``samples`` as their
    ``samples``): set either name, or both alike. Left out of the digest while unset.
    """

    samples: int | None = Field(
        None, ge=1, description="Calibration examples (None: calibration_batches batches)."
    )
    seqlen: int | None = Field(
        None, ge=1, description="Tokens per calibration window (None: the dataset's seqlen)."
    )


class SeedConfig(_Strict):
    """Separate seeds; each defaults to ``seed`` + a fixed offset."""

    init: Seed | None = None
    data_order: Seed | None = None
    augmentation: Seed | None = None
    pruning: Seed | None = None

    def resolve(self, seed: int) -> SeedConfig:
        """Fill unset seeds from the experiment's ``seed``."""
        # Built without validation: seed + offset may pass MAX_SEED, torch still takes it.
        return SeedConfig.model_construct(
            init=seed if self.init is None else self.init,
            data_order=seed + 1 if self.data_order is None else self.data_order,
            augmentation=seed + 2 if self.augmentation is None else self.augmentation,
            pruning=seed + 3 if self.pruning is None else self.pruning,
        )


class MetricConfig(_Strict):
    """A metric by name, with its own parameters (``shrinkbench list metrics`` shows them)."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TrackerConfig(ComponentConfig):
    """An experiment tracker by name (``shrinkbench list trackers``), with its parameters."""


def _tracker_list(value: Any) -> Any:
    """Accept ``tensorboard``, ``tensorboard,mlflow``, ``[tensorboard, {name: mlflow}]``."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value
    items: list[Any] = []
    for item in value:
        if isinstance(item, str):
            items += [{"name": name.strip()} for name in item.split(",") if name.strip()]
        elif isinstance(item, dict):
            items.append(item)
        else:
            raise ValueError(
                f"each entry is a tracker name or a table {{name, params}}, not {item!r}"
            )
    return items


class ExperimentConfig(_Strict):
    """One experiment: dense model -> prune to ``compression`` -> fine-tune -> evaluate."""

    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    compression: float = Field(4.0, description="All parameters / nonzero parameters, >= 1.")
    dataset: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    finetune: TrainingConfig = Field(default_factory=TrainingConfig)
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description="When pruning happens: oneshot (default), iterative or gradual (AGP).",
    )
    prunable: PrunableRule = Field(default_factory=PrunableRule)
    calibration_batches: int = Field(4, ge=0, description="Batches for data-driven strategies.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig,
        description="Calibration samples and window length (LM papers' names); see "
        "CalibrationConfig.",
    )
    metrics: list[MetricConfig] = Field(
        default_factory=lambda: [MetricConfig(name=n) for n in DEFAULT_METRICS],
        description="Metric names, or tables {name, params} to set a metric's parameters.",
    )
    seed: Seed = 0
    seeds: SeedConfig = Field(default_factory=SeedConfig)
    device: str = Field(
        "auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'..."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Training arithmetic: fp32, bf16 (autocast, CPU or CUDA) or fp16 "
        "(autocast with a gradient scaler, CUDA only); weights stay fp32.",
    )
    channels_last: bool = Field(
        False, description="Train in channels-last (NHWC) memory layout (4-d models and inputs)."
    )
    output: str = Field("results", description="Root folder of run directories.")
    trackers: list[TrackerConfig] = Field(
        default_factory=list,
        description="Trackers observing the run, e.g. [tensorboard, mlflow]; not in the digest.",
    )

    @field_validator("trackers", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        return _tracker_list(value)

    @field_validator("compression")
    @classmethod
    def _at_least_one(cls, value: float) -> float:
        if not value >= 1:
            raise ValueError(
                "must be >= 1 (compression = all parameters / nonzero parameters; 4 keeps 25%)"
            )
        return value

    @field_serializer("metrics")
    def _metric_names(self, value: list[MetricConfig]) -> list[Any]:
        # A metric without parameters is written as its name (as before metrics had params).
        return [m.name if not m.params else {"name": m.name, "params": m.params} for m in value]

    def metric_params(self) -> dict[str, dict[str, Any]]:
        """The parameters set for each metric, by metric name."""
        return {metric.name: dict(metric.params) for metric in self.metrics}

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(
                f"'{value}' is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            )
        return value

    def digest(self) -> str:
        """Stable hash of everything that determines the results (not the output path).

        The default (one-shot) schedule is left out, so one-shot runs keep the
        digests (and run directories) they had before schedules existed; so is an
        unset ``schedule.params`` (only plugin schedules have params), and an unset
        ``calibration`` section.
        """
        exclude: dict[str, Any] = {"output": True, "trackers": True}  # trackers only observe
        exclude.update(self._default_training_mode())
        if self.schedule == ScheduleConfig():
            exclude["schedule"] = True
        elif self.schedule.params is None:
            exclude["schedule"] = {"params": True}
        if self.calibration == CalibrationConfig():  # digests from before it existed
            exclude["calibration"] = True
        return config_digest(
            self.model_dump(mode="json", exclude=exclude, context={"all_fields": True})
        )

    def calibration_draw(self) -> tuple[int, int | None]:
        """``(batches to draw, examples to keep)`` for a data-driven strategy.

        ``calibration.samples`` when set (just enough batches, trimmed to it), else
        ``calibration_batches`` whole batches (``None``: keep them all).
        """
        samples = self.calibration.samples
        if samples is None:
            return self.calibration_batches, None
        return -(-samples // self.dataset.batch_size), samples

    def _default_training_mode(self) -> dict[str, bool]:
        """``precision`` / ``channels_last`` left out of digests at their defaults, so runs
        keep the digests they had before these fields existed."""
        defaults = {"precision": "fp32", "channels_last": False}
        return {name: True for name, value in defaults.items() if getattr(self, name) == value}

    def dense_digest(self) -> str:
        """Hash of what determines the dense model: data, model, dense training, init seeds."""
        data = self.model_dump(mode="json", context={"all_fields": True})
        mode = {name: data[name] for name in ("precision", "channels_last")
                if name not in self._default_training_mode()}
        dataset = {
            k: v for k, v in data["dataset"].items() if k not in ("eval_batch_size", "workers")
        }
        seeds = self.seeds.resolve(self.seed)
        return config_digest(
            {
                "dataset": dataset,
                "model": data["model"],
                "dense": data["dense"],
                "seeds": {
                    "init": seeds.init,
                    "data_order": seeds.data_order,
                    "augmentation": seeds.augmentation,
                },
                "device_type": self.device,
                **mode,
            }
        )


def config_digest(data: Any) -> str:
    """SHA-256 of the canonical JSON of ``data`` (sorted keys), as hex."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- sources -----------------------------------------------------------------
def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file into a dict (by suffix)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a directory; give the path of a .toml, .yaml or "
                        ".json file")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"cannot parse {path}: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must contain a table/mapping at the top level")
    return data


def parse_value(text: str) -> Any:
    """Parse a ``-p`` value: numbers, booleans, null, lists and dicts as YAML; else the string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_SECTION_FIELDS = {
    "strategy": set(StrategyConfig.model_fields),
    "dataset": set(DataConfig.model_fields),
    "model": set(ModelConfig.model_fields),
}


def apply_override(data: dict[str, Any], key: str, value: Any) -> tuple[str, ...]:
    """Set ``key`` (``section.field`` or ``field``) in nested ``data``; return its full path.

    For ``strategy``, ``dataset`` and ``model``, a key that is not one of the
    section's own fields is a parameter of the component (``dataset.root`` ->
    ``dataset.params.root``). ``metrics.NAME.KEY`` sets a parameter of the
    configured metric ``NAME`` (``metrics.latency.repeats=50``).
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError([f"{key}: malformed key"], title="invalid -p option")
    if parts[0] == "metrics" and len(parts) > 1:
        return _override_metric(data, parts[1], parts[2:], value)
    if (
        parts[0] in _SECTION_FIELDS
        and len(parts) == 2
        and parts[1] not in _SECTION_FIELDS[parts[0]]
    ):
        parts = [parts[0], "params", parts[1]]
    _set_path(data, parts, value)
    return tuple(parts)


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _override_metric(
    data: dict[str, Any], name: str, parts: list[str], value: Any
) -> tuple[str, ...]:
    """``metrics.NAME.KEY=VALUE``: set a parameter of the configured metric ``NAME``."""
    parts = parts[1:] if parts[:1] == ["params"] else parts
    if not parts:
        raise ConfigError(
            [f"metrics.{name}: name a parameter, e.g. -p metrics.{name}.KEY=VALUE"],
            title="invalid -p option",
        )
    metrics = data.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list):
        raise ConfigError([f"metrics.{name}: metrics is not a list"], title="invalid -p option")
    names = [m if isinstance(m, str) else m.get("name") if isinstance(m, dict) else None
             for m in metrics]
    if name not in names:
        listed = ", ".join(str(n) for n in names) or "none"
        raise ConfigError(
            [f"metrics.{name}: not a configured metric (configured: {listed}); add it with "
             f"-p metrics=[...] before setting its parameters"],
            title="invalid -p option",
        )
    index = names.index(name)
    entry = metrics[index]
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    params = dict(entry.get("params") or {})
    _set_path(params, parts, value)
    entry["params"] = params
    data["metrics"] = [*metrics[:index], entry, *metrics[index + 1:]]
    return ("metrics", name, "params", *parts)


def parse_assignments(
    assignments: list[str], problems: list[str] | None = None
) -> list[tuple[str, Any]]:
    """Split ``key=value`` strings; malformed ones are reported together.

    With ``problems`` given, malformed ones are appended to it instead of raised.
    """
    pairs, found = [], []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            found.append(f"-p {item}: expected key=value (e.g. -p finetune.epochs=3)")
            continue
        pairs.append((key.strip(), parse_value(value)))
    if problems is not None:
        problems.extend(found)
    elif found:
        raise ConfigError(found, title="invalid -p option")
    return pairs


def merge_command_line(
    data: dict[str, Any], settings: list[tuple[str, str, Any]]
) -> list[str]:
    """Apply command-line settings ``(how it was given, key, value)`` to ``data``, in order.

    Rule: the command line overrides the config file, but may set each field
    only once: the same field set twice with different values (``--compression 4
    -p compression=8``) is a problem, as is an override that cannot be applied.
    Returns the problems as ``field: problem`` lines.
    """
    problems: list[str] = []
    given: dict[tuple[str, ...], tuple[str, Any]] = {}
    for how, key, value in settings:
        try:
            path = apply_override(data, key, value)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        if path in given and given[path][1] != value:
            first = given[path][0]
            problems.append(
                f"{'.'.join(path)}: set twice on the command line ({first} and {how}); "
                "give it once"
            )
        given.setdefault(path, (how, value))
    return problems


def format_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """``field: problem`` lines for a pydantic error."""
    lines = []
    for item in error.errors():
        location = ""  # list positions as metrics[1], like every other message
        for part in item["loc"]:
            location += f"[{part}]" if isinstance(part, int) else f".{part}" if location else part
        field = f"{prefix}{location}" if location else prefix.rstrip(".") or "(config)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{field}: {message}")
    return lines


def without_invalid(data: dict[str, Any], error: ValidationError) -> dict[str, Any]:
    """A copy of ``data`` without the values ``error`` points at, so the rest can be checked.

    A removed field takes its default; a list with an invalid entry goes whole
    (removing one entry would shift the positions the other problems name).
    """
    cleaned = copy.deepcopy(data)
    for item in error.errors():
        location = tuple(item["loc"])
        for position, part in enumerate(location):
            if isinstance(part, int):
                location = location[:position]
                break
        _delete(cleaned, location)
    return cleaned


def _delete(data: Any, location: tuple[Any, ...]) -> None:
    node = data
    for part in location[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if not location:
        return
    last = location[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        del node[last]


def salvage_config(data: dict[str, Any], error: ValidationError) -> ExperimentConfig | None:
    """The config ``data`` would be without its invalid values (``None`` if still invalid).

    Used to report the problems of the valid part too (component names and
    parameters) in the same round as the invalid fields.
    """
    for _ in range(3):
        data = without_invalid(data, error)
        try:
            return ExperimentConfig.model_validate(data)
        except ValidationError as again:
            error = again
    return None


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a config dict's structure (components are checked by ``resolve_config``)."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


# -- defaults declared by components -------------------------------------------
#: Experiment fields a component's ``config_defaults`` may not set: what to run, where, and
#: with which seeds stay the user's choice (their defaults are the core's).
NOT_DEFAULTABLE = (
    "strategy", "dataset.name", "model.name", "schedule", "output", "trackers", "device",
    "seed", "seeds",
)  # fmt: skip
#: Sections whose ``params`` are a component's own parameters.
PARAM_SECTIONS = ("strategy", "dataset", "model")


def config_default_problems(
    defaults: dict[str, Any], section: str, parameters: type[BaseModel]
) -> list[str]:
    """``key: problem`` lines for a component's ``config_defaults`` (empty when valid).

    ``section`` is the component's own section (``dataset`` or ``model``): only there may
    ``params.NAME`` be set, NAME being one of ``parameters``' fields. Every other key names
    a field of :class:`ExperimentConfig` (a leaf, not a whole section); values are
    validated as the config validates them.
    """
    problems: list[str] = []
    fields: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in defaults.items():
        parts = str(key).split(".")
        blocked = next(
            (b for b in NOT_DEFAULTABLE if parts[: len(b.split("."))] == b.split(".")), None
        )
        if not all(parts):
            problems.append(f"{key}: malformed key")
        elif blocked:
            problems.append(f"{key}: {blocked} is the user's choice; a component cannot "
                            "default it")
        elif parts[0] in PARAM_SECTIONS and parts[1:2] == ["params"]:
            allowed = ", ".join(parameters.model_fields) or "(none)"
            if parts[0] != section:
                problems.append(f"{key}: a {section} may default only its own parameters "
                                f"({section}.params.NAME), not another component's")
            elif len(parts) != 3 or parts[2] not in parameters.model_fields:
                problems.append(f"{key}: not a parameter of this {section} (allowed: "
                                f"{allowed})")
            else:
                own[parts[2]] = value
        else:
            problem = _field_path_problem(parts)
            if problem:
                problems.append(f"{key}: {problem}")
            else:
                _set_path(fields, parts, copy.deepcopy(value))
    if fields and not problems:
        try:
            ExperimentConfig.model_validate(fields)
        except ValidationError as error:
            problems.extend(format_validation_error(error))
    if own:
        try:
            parameters(**own)
        except ValidationError as error:
            own_errors = [e for e in error.errors() if e["loc"] and e["loc"][0] in own]
            problems.extend(
                f"{section}.params.{'.'.join(str(p) for p in e['loc'])}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in own_errors
            )
    return problems


def _field_path_problem(parts: list[str]) -> str | None:
    """Why ``parts`` is not a leaf field of :class:`ExperimentConfig` (``None``: it is)."""
    model: type[BaseModel] = ExperimentConfig
    for index, part in enumerate(parts):
        where = ".".join(parts[:index]) or "the experiment config"
        if part not in model.model_fields:
            return f"no field '{part}' in {where} (fields: {', '.join(model.model_fields)})"
        annotation = model.model_fields[part].annotation
        nested = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None  # fmt: skip
        if index + 1 < len(parts):
            if nested is None:
                return f"{'.'.join(parts[: index + 1])} has no fields"
            model = nested
        elif nested is not None:
            first = next(iter(nested.model_fields))
            return f"name a field inside it, e.g. {'.'.join(parts)}.{first}"
    return None


def is_set(config: BaseModel, key: str) -> bool:
    """Whether the user set the dotted ``key`` of ``config`` (config file, flag, sweep, API).

    Pydantic records which fields a model was given; a component's ``params`` are a
    dict whose keys are what was given. A field inside a value given whole counts as set.
    """
    node: Any = config
    for part in key.split("."):
        if isinstance(node, BaseModel):
            if part not in node.model_fields_set:
                return False
            node = getattr(node, part)
        elif isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        else:
            return True
    return True


def apply_config_defaults(
    config: ExperimentConfig, layers: list[dict[str, Any]]
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``config`` with the components' ``config_defaults`` where the user set nothing.

    Precedence, lowest first: the core's field defaults < ``layers[0]`` < ``layers[1]``
    ... < what the user set. The resolver passes the dataset's then the model's, so a
    model's defaults win over its dataset's. Returns the config (the same object when no
    default applies, so its digest is untouched) and the defaults applied, by key.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    applied = {key: value for key, value in merged.items() if not is_set(config, key)}
    if not applied:
        return config, {}
    data = config.model_dump(context={"all_fields": True})
    for key, value in applied.items():
        _set_path(data, key.split("."), copy.deepcopy(value))
    try:
        return ExperimentConfig.model_validate(data), applied
    except ValidationError as error:
        raise ConfigError(
            [f"{line} (from a component's config_defaults)"
             for line in format_validation_error(error)]
        ) from None


def link_calibration(data: dict[str, Any], strategy_fields: Any, strategy: str) -> list[str]:
    """Make ``calibration.samples`` / ``seqlen`` and the strategy's parameters of those
    names one setting, in the resolved ``data``; problems as ``field: problem`` lines.

    Rule: a strategy with a ``samples`` (``seqlen``) parameter gets ``calibration.samples``
    (``seqlen``), and a value given only as the parameter (the older name) is copied to
    ``calibration``; both given and different is an error. ``calibration.seqlen`` for a
    strategy without a ``seqlen`` parameter is an error (only LM strategies cut windows);
    ``calibration.samples`` works for every data-driven strategy (the runner draws them).
    """
    problems: list[str] = []
    calibration = data.setdefault("calibration", {}) or {}
    data["calibration"] = calibration
    params = data.get("strategy", {}).get("params")
    if not isinstance(params, dict):
        return problems
    for name in ("samples", "seqlen"):
        given = calibration.get(name)
        own = params.get(name)
        if name not in strategy_fields:
            if given is not None and name == "seqlen":
                problems.append(
                    f"calibration.seqlen: strategy {strategy} does not calibrate on token "
                    "windows (it has no seqlen parameter); leave it unset"
                )
            continue
        if given is not None and own is not None and given != own:
            problems.append(
                f"calibration.{name}: {given}, but strategy.params.{name} (its older name) is "
                f"{own}; set calibration.{name} only"
            )
        elif given is not None:
            params[name] = given
        elif own is not None:
            calibration[name] = own
    return problems


def calibration_window_problems(data: dict[str, Any]) -> list[str]:
    """``calibration.seqlen`` longer than the dataset's windows (its ``seqlen`` parameter),
    found before anything runs: calibration windows are cut from the dataset's."""
    seqlen = (data.get("calibration") or {}).get("seqlen")
    params = (data.get("dataset") or {}).get("params")
    window = params.get("seqlen") if isinstance(params, dict) else None
    if isinstance(seqlen, int) and isinstance(window, int) and seqlen > window:
        return [
            f"calibration.seqlen: {seqlen} tokens > the dataset's windows of {window} "
            "(dataset.seqlen); lower the first or raise the second"
        ]
    return []

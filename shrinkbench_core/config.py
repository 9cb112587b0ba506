"""Pydantic experiment configuration, its sources (flags, files) and its digest.

An experiment is fully described by :class:`ExperimentConfig`. It can come
from a TOML/YAML/JSON file and/or command-line flags (flags win). Component
names are checked against the registry and their parameters against each
component's own parameter model; every problem is reported at once as
``field: problem`` lines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shrinkbench_core.errors import ConfigError, UserError
from shrinkbench_core.experiment.schedule_config import ScheduleConfig

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
    workers: int = Field(0, ge=0)


class ModelConfig(ComponentConfig):
    """The model architecture and its parameters."""

    name: str = "mlp"


class StrategyConfig(ComponentConfig):
    """The pruning strategy and its parameters."""

    name: str = "GlobalMagWeight"


class OptimizerConfig(_Strict):
    """A torch optimizer and its usual settings."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


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


class SeedConfig(_Strict):
    """Separate seeds; each defaults to ``seed`` + a fixed offset."""

    init: int | None = None
    data_order: int | None = None
    augmentation: int | None = None
    pruning: int | None = None

    def resolve(self, seed: int) -> SeedConfig:
        """Fill unset seeds from the experiment's ``seed``."""
        return SeedConfig(
            init=seed if self.init is None else self.init,
            data_order=seed + 1 if self.data_order is None else self.data_order,
            augmentation=seed + 2 if self.augmentation is None else self.augmentation,
            pruning=seed + 3 if self.pruning is None else self.pruning,
        )


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
    metrics: list[str] = Field(default_factory=lambda: ["size", "flops", "accuracy", "latency"])
    seed: int = 0
    seeds: SeedConfig = Field(default_factory=SeedConfig)
    device: str = Field(
        "auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'..."
    )
    output: str = Field("results", description="Root folder of run directories.")

    @field_validator("compression")
    @classmethod
    def _at_least_one(cls, value: float) -> float:
        if not value >= 1:
            raise ValueError(
                "must be >= 1 (compression = all parameters / nonzero parameters; 4 keeps 25%)"
            )
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto" and not (value == "cpu" or value.startswith(("cuda", "mps"))):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value

    def digest(self) -> str:
        """Stable hash of everything that determines the results (not the output path).

        The default (one-shot) schedule is left out, so one-shot runs keep the
        digests (and run directories) they had before schedules existed.
        """
        exclude = {"output"} | ({"schedule"} if self.schedule == ScheduleConfig() else set())
        return config_digest(self.model_dump(mode="json", exclude=exclude))

    def dense_digest(self) -> str:
        """Hash of what determines the dense model: data, model, dense training, init seeds."""
        data = self.model_dump(mode="json")
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


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (``section.field`` or ``field``) in nested ``data``.

    For ``strategy``, ``dataset`` and ``model``, a key that is not one of the
    section's own fields is a parameter of the component (``dataset.root`` ->
    ``dataset.params.root``).
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError([f"{key}: malformed key"], title="invalid -p option")
    if (
        parts[0] in _SECTION_FIELDS
        and len(parts) == 2
        and parts[1] not in _SECTION_FIELDS[parts[0]]
    ):
        parts = [parts[0], "params", parts[1]]
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_assignments(assignments: list[str]) -> list[tuple[str, Any]]:
    """Split ``key=value`` strings; malformed ones are reported together."""
    pairs, problems = [], []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"-p {item}: expected key=value (e.g. -p finetune.epochs=3)")
            continue
        pairs.append((key.strip(), parse_value(value)))
    if problems:
        raise ConfigError(problems, title="invalid -p option")
    return pairs


def format_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """``field: problem`` lines for a pydantic error."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        field = f"{prefix}{location}" if location else prefix.rstrip(".") or "(config)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{field}: {message}")
    return lines


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a config dict's structure (components are checked by ``resolve_config``)."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None

"""Check an experiment config against the registry, all problems at once.

Besides names and parameters, validation imports every factory the run will
use (a plugin whose module cannot be imported is reported before anything
runs) and, with ``check_environment``, checks what this machine must provide:
the device, files named by the config, and the dataset's own cheap checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shrinkbench_core.config import (
    ExperimentConfig,
    apply_config_defaults,
    calibration_window_problems,
    config_digest,
    format_validation_error,
    link_calibration,
    salvage_config,
)
from shrinkbench_core.errors import ConfigError, UserError
from shrinkbench_core.factories import factory_problem
from shrinkbench_core.registry import Registry
from shrinkbench_core.specs import (
    ComponentSpec,
    ConfiguringSpec,
    DatasetSpec,
    MetricSpec,
    ModelSpec,
    ScheduleSpec,
    StrategySpec,
)
from shrinkbench_core.trackers.selection import tracker_problems


@dataclass
class ResolvedExperiment:
    """A validated config (parameters filled with defaults) and the specs it uses."""

    config: ExperimentConfig
    strategy: StrategySpec
    dataset: DatasetSpec
    model: ModelSpec
    metrics: list[MetricSpec]
    schedule: ScheduleSpec | None = None
    #: Settings taken from the dataset's and model's ``config_defaults``, by dotted key.
    defaults: dict[str, Any] = field(default_factory=dict)

    def plugin_versions(self) -> dict[str, str | None]:
        """Distribution -> version of every plugin this experiment uses."""
        specs = [self.strategy, self.dataset, self.model, *self.metrics]
        specs += [self.schedule] if self.schedule is not None else []
        return {spec.distribution or spec.plugin or "?": spec.version for spec in specs}


def _lookup(registry: Registry, kind: str, name: str, field: str, problems: list[str]) -> Any:
    """The spec called ``name`` whose factory imports; else ``None`` and a problem line."""
    try:
        spec = registry.get(kind, name)
    except UserError as error:
        problems.append(f"{field}: {error}")  # every line: suggestions, broken plugins, hints
        return None
    problem = factory_problem(spec)
    if problem:
        problems.append(f"{field}: {problem}")
        return None
    return spec


def _params(spec: Any, params: dict[str, Any], field: str, problems: list[str]) -> dict[str, Any]:
    try:
        return spec.parameters(**params).model_dump(mode="json")
    except ValidationError as error:
        lines = format_validation_error(error, prefix=f"{field}.")
        allowed = ", ".join(spec.parameters.model_fields) or "(none)"
        problems.extend(
            line + (f" (allowed: {allowed})" if line.endswith("unknown field") else "")
            for line in lines
        )
        return params


def schedule_problems(config: ExperimentConfig) -> list[str]:
    """``field: problem`` lines for a schedule that does not fit the rest of the config.

    Rewinding to a dense epoch or iteration needs the dense training to happen
    here (it is recorded while training); an epoch point must be within it.
    Iteration points and gradual steps are checked against the dataset's size
    when the run starts.
    """
    schedule, dense = config.schedule, config.dense
    if schedule.rewind not in ("epoch", "iteration"):
        return []
    if dense.source != "train":
        return [
            f"schedule.rewind: rewinding to a dense {schedule.rewind} needs dense.source = "
            f"'train' (the weights are recorded while training), not '{dense.source}'; "
            "use rewind = 'init' or 'none'"
        ]
    if schedule.rewind == "epoch" and schedule.rewind_point > dense.epochs:
        return [
            f"schedule.rewind_point: epoch {schedule.rewind_point} is after the last dense "
            f"epoch (dense.epochs = {dense.epochs}); use 0..{dense.epochs}"
        ]
    return []


def resolve_config(
    config: ExperimentConfig,
    registry: Registry,
    check_environment: bool = False,
    provided: dict[str, ComponentSpec] | None = None,
    check_compression: bool | None = None,
) -> ResolvedExperiment:
    """Validate names, factories and parameters of every component; one :class:`ConfigError`.

    ``check_environment`` also checks this machine (see :func:`environment_problems`);
    leave it off where the run happens elsewhere (a Ray cluster). ``provided`` holds specs
    of objects the caller passed (``"dataset"``, ``"model"``), used instead of a lookup.
    ``check_compression`` (default: ``check_environment``) checks that the model can reach
    the requested compression (:func:`compression_problem`).
    """
    problems: list[str] = []
    provided = provided or {}
    strategy = _lookup(registry, "strategies", config.strategy.name, "strategy.name", problems)
    dataset = provided.get("dataset") or _lookup(
        registry, "datasets", config.dataset.name, "dataset.name", problems
    )
    model = provided.get("model") or _lookup(
        registry, "models", config.model.name, "model.name", problems
    )
    config, defaults = apply_config_defaults(  # dataset's, then model's; the user's win
        config, [s.config_defaults for s in (dataset, model) if isinstance(s, ConfiguringSpec)]
    )
    schedule = _lookup(registry, "schedules", config.schedule.kind, "schedule.kind", problems)
    metrics = [
        _lookup(registry, "metrics", metric.name, f"metrics[{index}]", problems)
        for index, metric in enumerate(config.metrics)
    ]
    data = config.model_dump(context={"all_fields": True})
    for index, (metric, spec) in enumerate(zip(config.metrics, metrics, strict=True)):
        first = [m.name for m in config.metrics].index(metric.name)
        if first < index:
            problems.append(
                f"metrics[{index}]: '{metric.name}' is already metrics[{first}]; list each "
                "metric once"
            )
        elif spec:  # checked, not filled in: a metric's defaults stay out of the digest
            _params(spec, metric.params, f"metrics[{index}].params", problems)
    if strategy:
        data["strategy"]["name"] = (
            strategy.qualified_name if ":" in config.strategy.name else strategy.name
        )
        data["strategy"]["params"] = _params(
            strategy, config.strategy.params, "strategy.params", problems
        )
        problems.extend(link_calibration(data, strategy.parameters.model_fields, strategy.name))
    if dataset:
        data["dataset"]["params"] = _params(
            dataset, config.dataset.params, "dataset.params", problems
        )
        problems.extend(calibration_window_problems(data))
    if model:
        data["model"]["params"] = _params(model, config.model.params, "model.params", problems)
    if dataset and model and not model.accepts(dataset.input_shape):
        shapes = ", ".join(str(s) for s in model.input_shapes)
        problems.append(
            f"model.name: {model.name} accepts inputs {shapes}, dataset {dataset.name} gives "
            f"{dataset.input_shape}"
        )
    dense = config.dense
    if dense.source == "checkpoint" and not dense.checkpoint:
        problems.append("dense.checkpoint: required when dense.source = 'checkpoint'")
    if dense.source == "pretrained":
        if not dense.weights:
            problems.append("dense.weights: required when dense.source = 'pretrained'")
        elif model and "weights" not in model.parameters.model_fields:
            problems.append(f"dense.weights: model {model.name} has no named pretrained weights")
    problems.extend(schedule_problems(config))
    if schedule and not config.schedule.builtin:  # a plugin's schedule: its own params
        data["schedule"]["params"] = _params(
            schedule, config.schedule.params or {}, "schedule.params", problems
        )
    problems.extend(tracker_problems(config, registry))  # names, params, missing libraries
    samples = (data.get("calibration") or {}).get("samples")
    if strategy and strategy.needs_data and samples is None and config.calibration_batches < 1:
        problems.append(f"calibration_batches: strategy {strategy.name} needs at least 1")
    if check_environment:
        problems.extend(environment_problems(config, dataset))
    if check_compression is None:
        check_compression = check_environment
    if check_compression and dataset and model and not problems:
        reach = compression_problem(ExperimentConfig.model_validate(data), dataset, model)
        problems.extend([reach] if reach else [])
    if problems:
        raise ConfigError(problems)
    return ResolvedExperiment(
        ExperimentConfig.model_validate(data),
        strategy,
        dataset,
        model,
        [m for m in metrics if m],
        schedule,
        defaults,
    )


def validate_experiment(
    data: dict[str, Any],
    registry: Registry,
    problems: list[str] | tuple[str, ...] = (),
    check_environment: bool = True,
    title: str = "invalid configuration",
) -> ResolvedExperiment:
    """Build and resolve a config dict, reporting every problem in one :class:`ConfigError`.

    Invalid fields do not hide the other problems: the config is also checked
    without them (they take their defaults), so component names, factories,
    parameters and the environment are reported in the same round.
    ``problems`` are earlier ones (e.g. from parsing ``-p``) to report with them.
    """
    found = list(problems)
    config: ExperimentConfig | None
    invalid: set[Any] = set()
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as error:
        found.extend(format_validation_error(error))
        invalid = {item["loc"][0] for item in error.errors() if item["loc"]}
        config = salvage_config(data, error)
    resolved = None
    if config is not None:
        try:
            resolved = resolve_config(
                config,
                registry,
                check_environment=check_environment,
                # not for a default standing in for an invalid compression or prunable rule
                check_compression=not invalid & {"compression", "prunable"},
            )
        except ConfigError as error:
            found.extend(line for line in error.problems if line not in found)
    if found or resolved is None:
        raise ConfigError(found or ["(config): invalid"], title=title)
    return resolved


def environment_problems(config: ExperimentConfig, dataset: DatasetSpec | None) -> list[str]:
    """What this machine lacks for the run: the device, the dense checkpoint, the data."""
    problems = []
    device = device_problem(config.device)
    if device:
        problems.append(f"device: {device}")
    if config.precision == "fp16" and not device and _device_type(config.device) != "cuda":
        problems.append(
            "precision: fp16 needs a CUDA device (a gradient scaler); this run uses the CPU. "
            "Use -p precision=bf16 (works on CPU) or fp32"
        )
    dense = config.dense
    if dense.source == "checkpoint" and dense.checkpoint:
        path = Path(dense.checkpoint).expanduser()
        if path.is_dir():
            problems.append(f"dense.checkpoint: {path} is a directory; give a state_dict file")
        elif not path.exists():
            problems.append(f"dense.checkpoint: {path} not found")
    if dataset is not None:
        problems.extend(dataset_problems(dataset, config.dataset.params))
    return problems


def _device_type(device: str) -> str:
    """``cuda`` or ``cpu`` (or ``mps``): what ``auto`` resolves to on this machine."""
    if device != "auto":
        return device.split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine (``None`` when it can, or for auto/cpu)."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
            return (
                f"'{device}' asked for, but CUDA is not available here (torch "
                f"{torch.__version__} built with {built}); use 'cpu' or 'auto'"
            )
        index = int(device.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            return f"'{device}' does not exist: this machine has {count} CUDA device(s)"
    if device.startswith("mps"):
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return f"'{device}' asked for, but MPS is not available here; use 'cpu' or 'auto'"
    return None


def dataset_problems(spec: DatasetSpec, params: dict[str, Any]) -> list[str]:
    """The dataset plugin's own cheap checks (files present, split sizes), as problem lines."""
    try:
        check = spec.load_check()
        if check is None:
            return []
        found = check(spec.parameters(**params)) or []
    except UserError as error:
        return [f"dataset.params: {error}"]
    except Exception as error:  # a broken check must not hide the config's other problems
        return [
            f"dataset.name: the data check of plugin {spec.distribution or spec.plugin} failed: "
            f"{type(error).__name__}: {error}"
        ]
    return [f"dataset.params.{line}" if ": " in line else f"dataset: {line}" for line in found]


_LARGEST: dict[str, float | None] = {}


def compression_problem(
    config: ExperimentConfig, dataset: DatasetSpec, model: ModelSpec
) -> str | None:
    """``compression: ...`` when the model cannot reach the requested compression.

    The model is built on torch's ``meta`` device (shapes only: no memory, no
    weights), so the check costs a fraction of a second and is cached per
    model configuration. Models configured by strings (paths, hub names) are
    skipped, as are models that cannot be built that way: the runner checks
    again before training.
    """
    params = config.model.params
    if any(isinstance(value, str) for value in params.values()):
        return None
    key = config_digest([model.qualified_name, params, dataset.input_shape, dataset.num_classes,
                         config.prunable.model_dump(mode="json")])
    if key not in _LARGEST:
        _LARGEST[key] = _largest_compression(config, dataset, model)
    largest = _LARGEST[key]
    if largest is None or config.compression <= largest:
        return None
    return (
        f"compression: {config.compression:g} cannot be reached by {model.name}: its "
        f"non-prunable parameters stay. The largest reachable compression is {largest:.4g}"
    )


def _largest_compression(
    config: ExperimentConfig, dataset: DatasetSpec, model: ModelSpec
) -> float | None:
    """All parameters / (non-prunable parameters + 1), or ``None`` when it cannot be known."""
    import torch

    from shrinkbench_core.pruning.prunable import find_classifier, prunable_parameters

    try:
        with torch.device("meta"):
            network = model.load()(
                model.parameters(**config.model.params),
                num_classes=dataset.num_classes,
                input_shape=tuple(dataset.input_shape),
            )
            example = torch.zeros(1, *dataset.input_shape)
            classifier = model.classifier or find_classifier(network, example)
        prunable = set(prunable_parameters(network, config.prunable, classifier))
    except Exception:  # not buildable on meta (files, hub downloads, integer inputs...)
        return None
    sizes = {name: p.numel() for name, p in network.named_parameters()}
    if not prunable:
        return None
    fixed = sum(size for name, size in sizes.items() if name not in prunable)
    return sum(sizes.values()) / (fixed + 1)

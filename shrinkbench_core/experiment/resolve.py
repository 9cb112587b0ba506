"""Check an experiment config against the registry, all problems at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shrinkbench_core.config import ExperimentConfig, format_validation_error
from shrinkbench_core.errors import ConfigError, UserError
from shrinkbench_core.registry import Registry
from shrinkbench_core.specs import DatasetSpec, MetricSpec, ModelSpec, StrategySpec


@dataclass
class ResolvedExperiment:
    """A validated config (parameters filled with defaults) and the specs it uses."""

    config: ExperimentConfig
    strategy: StrategySpec
    dataset: DatasetSpec
    model: ModelSpec
    metrics: list[MetricSpec]

    def plugin_versions(self) -> dict[str, str | None]:
        """Distribution -> version of every plugin this experiment uses."""
        specs = [self.strategy, self.dataset, self.model, *self.metrics]
        return {spec.distribution or spec.plugin or "?": spec.version for spec in specs}


def _lookup(registry: Registry, kind: str, name: str, field: str, problems: list[str]) -> Any:
    try:
        return registry.get(kind, name)
    except UserError as error:
        problems.append(f"{field}: {str(error).splitlines()[0]}")
        return None


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


def resolve_config(config: ExperimentConfig, registry: Registry) -> ResolvedExperiment:
    """Validate names and parameters of every component; raise one :class:`ConfigError`."""
    problems: list[str] = []
    strategy = _lookup(registry, "strategies", config.strategy.name, "strategy.name", problems)
    dataset = _lookup(registry, "datasets", config.dataset.name, "dataset.name", problems)
    model = _lookup(registry, "models", config.model.name, "model.name", problems)
    metrics = [
        _lookup(registry, "metrics", name, f"metrics[{index}]", problems)
        for index, name in enumerate(config.metrics)
    ]
    data = config.model_dump()
    if strategy:
        data["strategy"]["name"] = (
            strategy.qualified_name if ":" in config.strategy.name else strategy.name
        )
        data["strategy"]["params"] = _params(
            strategy, config.strategy.params, "strategy.params", problems
        )
    if dataset:
        data["dataset"]["params"] = _params(
            dataset, config.dataset.params, "dataset.params", problems
        )
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
    if strategy and strategy.needs_data and config.calibration_batches < 1:
        problems.append(f"calibration_batches: strategy {strategy.name} needs at least 1")
    if problems:
        raise ConfigError(problems)
    return ResolvedExperiment(
        ExperimentConfig.model_validate(data), strategy, dataset, model, [m for m in metrics if m]
    )

"""What to export: the final model of a completed run directory, or a model in memory.

A run directory holds the config, the fine-tuned weights (``model.pt``) and the
masks (``masks.pt``); the architecture is rebuilt from the registry (or from a
``model`` the caller passes, for runs of a user-built model) and the masks are
applied again, so the exported weights hold exactly the run's zeros.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.exporting.example import (
    ExampleInput,
    RunData,
    build_run_data,
    from_data,
    seeded_random,
)


@dataclass
class ExportSource:
    """A model ready to export, in eval mode on the CPU, with where it came from.

    ``example`` says where ``example_input`` came from (the run's data, seeded random
    input, or the caller).
    """

    model: nn.Module
    example_input: torch.Tensor
    example: ExampleInput | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    structure: str | None = None  # the strategy's: "unstructured", "channel", "n:m"
    run_dir: Path | None = None


def _model_of(model: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    built = model() if callable(model) and not isinstance(model, nn.Module) else model
    if not isinstance(built, nn.Module):
        raise UserError(
            f"model must be an nn.Module or a function returning one, not {type(built).__name__}"
        )
    return copy.deepcopy(built)


def from_model(
    model: nn.Module,
    example_input: torch.Tensor | None,
    masks: dict[str, torch.Tensor] | None = None,
) -> ExportSource:
    """Export ``model`` as it is (``masks`` applied to a copy first, when given)."""
    from shrinkbench_core.pruning.masks import apply_masks

    if example_input is None:
        raise UserError("exporting a model needs example_input= (one input batch)")
    model = _model_of(model).cpu().eval()
    if masks:
        apply_masks(model, masks)
    example = ExampleInput(example_input.detach().cpu(), "given")
    return ExportSource(
        model=model,
        example_input=example.tensor,
        example=example,
        masks=dict(masks or {}),
        architecture={"class": f"{type(model).__module__}.{type(model).__qualname__}"},
    )


def from_run(
    path: str | Path,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    example_input: torch.Tensor | None = None,
) -> ExportSource:
    """The final model of the completed run in ``path``; errors say what is missing."""
    from shrinkbench_core.experiment.atomic import read_json
    from shrinkbench_core.experiment.rundir import RunDirectory
    from shrinkbench_core.pruning.masks import apply_masks, load_masks

    run = RunDirectory(path)
    if not run.path.is_dir():
        raise UserError(f"no run directory at {run.path}")
    if not run.config.is_file():
        raise UserError(f"{run.path} is not a run directory (it has no config.json)")
    # the status says whether the run finished; damaged weight files are named below
    # (``is_complete`` would also fail on them, with a less helpful message)
    finished = run.status().get("status") == "complete"
    if finished and not run.model.is_file():
        raise UserError(
            f"{run.model} is missing or not a file, in a complete run; rerun the run's command "
            "with --force to redo it"
        )
    if not finished:
        status = run.status().get("status", "not started")
        raise UserError(
            f"run {run.path} is not complete (status: {status}), so it has no final model to "
            "export. Rerun the same command to finish it (an interrupted run resumes), "
            "then export it."
        )
    record = read_json(run.config) or {}
    config = record.get("config") or {}
    # the run's own data give the model's real input shape and classes, and the example
    data = (
        build_run_data(record)
        if example_input is None or model is None
        else RunData(reason="not needed")
    )
    built, architecture = _build(config, model, run.path, data)
    redo = "rerun the run's command with --force to redo it"
    try:
        state = torch.load(run.model, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or corrupted after the run completed
        reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"
        raise UserError(f"{run.model} is damaged ({reason}); {redo}") from None
    try:
        built.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(
            f"the weights in {run.model} do not fit the model {architecture.get('name', '')}: "
            f"{str(error).splitlines()[0]}. Pass model= the architecture the run trained."
        ) from None
    try:
        masks = load_masks(run.masks, built) if run.masks.exists() else {}
    except UserError as error:
        raise UserError(f"{str(error).splitlines()[0][:300]}; {redo}") from None
    apply_masks(built, masks)
    built = built.cpu().eval()
    shape = architecture.get("input_shape")
    if example_input is not None:
        example = ExampleInput(example_input.detach().cpu(), "given")
    elif data.splits is not None:
        example = from_data(data)
    elif shape:
        example = seeded_random(built, tuple(shape), data.reason)
    else:
        raise UserError(
            f"cannot tell the input shape of run {run.path} (its data could not be built: "
            f"{data.reason}); pass example_input= (one input batch)"
        )
    architecture["input_dtype"] = str(example.tensor.dtype).removeprefix("torch.")
    return ExportSource(
        model=built,
        example_input=example.tensor,
        example=example,
        masks=masks,
        architecture=architecture,
        structure=_structure(config),
        run_dir=run.path,
    )


def _build(
    config: dict[str, Any], model: Any, run_path: Path, data: RunData
) -> tuple[nn.Module, dict[str, Any]]:
    """The run's architecture, freshly built (weights are loaded afterwards).

    Input shape and classes are those of the run's data (as the runner built the
    model), else the dataset's nominal ones.
    """
    from shrinkbench_core.registry import get_registry

    registry = get_registry()
    model_section = config.get("model") or {}
    dataset_section = config.get("dataset") or {}
    architecture: dict[str, Any] = {
        "name": model_section.get("name"),
        "params": model_section.get("params") or {},
        "dataset": dataset_section.get("name"),
    }
    try:
        dataset = registry.get("datasets", dataset_section.get("name") or "")
        architecture["input_shape"] = list(dataset.input_shape)
        architecture["num_classes"] = dataset.num_classes
    except UserError:
        pass  # a user's own data: example_input must then be given
    if data.splits is not None:
        architecture["input_shape"] = list(
            data.splits.input_shape or architecture.get("input_shape") or []
        )
        architecture["num_classes"] = data.splits.num_classes or architecture.get("num_classes")
    if model is not None:
        built = _model_of(model)
    else:
        try:
            spec = registry.get("models", model_section.get("name") or "")
        except UserError as error:
            raise UserError(
                f"run {run_path} used the model {model_section.get('name')!r}, which is not a "
                f"registered model ({str(error).splitlines()[0]}). Pass model= the same "
                "architecture, e.g. sb.export(run, out, model=MyNet())"
            ) from None
        if "num_classes" not in architecture:
            raise UserError(
                f"cannot tell the classes of run {run_path}'s dataset; pass model= the built "
                "architecture and example_input="
            )
        try:
            built = spec.load()(
                spec.parameters(**architecture["params"]),
                num_classes=architecture["num_classes"],
                input_shape=tuple(architecture["input_shape"]),
            )
        except UserError as error:
            if data.splits is not None:
                raise
            raise UserError(
                f"cannot rebuild the model of run {run_path}: its data could not be built "
                f"({data.reason}), and with the dataset's nominal input shape "
                f"{tuple(architecture['input_shape'])} the model fails: "
                f"{' '.join(str(error).split())[:300]}. Make the run's data available again, "
                "or pass model= the built architecture and example_input="
            ) from None
    architecture["class"] = f"{type(built).__module__}.{type(built).__qualname__}"
    return built, architecture


def _structure(config: dict[str, Any]) -> str | None:
    from shrinkbench_core.registry import get_registry

    name = (config.get("strategy") or {}).get("name")
    try:
        return get_registry().get("strategies", name or "").structure
    except UserError:
        return None

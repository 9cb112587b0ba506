"""Models and data the caller built, in place of registered names, and their fingerprints.

A user model (an ``nn.Module``, or a zero-argument factory returning one) or user data
(:class:`~shrinkbench_core.data.DataSplits`) enters the config as the component
``user-model`` / ``user-data`` whose parameters are a fingerprint of the object: the
SHA-256 of the model's structure (its ``repr``) and initial ``state_dict`` tensors; of the
data's split sizes, classes, input shape and examples (all of them for splits of at most
``FULL_HASH_LIMIT`` examples, else an evenly spaced sample). The fingerprint is therefore
in the run digest and in the dense cache's digest: two different models never share a run
directory or dense weights, and the same object resumes its own run.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from shrinkbench_core.config import ExperimentConfig
from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import ConfigError
from shrinkbench_core.specs import DatasetSpec, ModelSpec

USER_MODEL = "user-model"
USER_DATA = "user-data"
FULL_HASH_LIMIT = 4096  # splits up to this size are hashed whole
SAMPLE = 512  # examples hashed from a larger split


class UserModelParameters(BaseModel):
    """The fingerprint of a model passed by the caller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    architecture: str


class UserDataParameters(BaseModel):
    """The fingerprint of data passed by the caller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    sizes: dict[str, int]


def not_loadable(*args: Any, **kwargs: Any) -> Any:
    """Factory of the user components: they are passed as objects, never built by name."""
    raise RuntimeError("a user-provided model or dataset is passed as an object, not built")


def _hash_tensor(digest: Any, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _hash_value(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        _hash_tensor(digest, value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _hash_value(digest, item)
    elif hasattr(value, "__array__"):
        _hash_tensor(digest, torch.as_tensor(value))
    else:
        digest.update(repr(value).encode())


def model_fingerprint(model: nn.Module) -> dict[str, str]:
    """``sha256`` of the structure and every ``state_dict`` tensor; ``architecture``: the class."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _hash_tensor(digest, tensor)
    cls = type(model)
    return {"sha256": digest.hexdigest(), "architecture": f"{cls.__module__}.{cls.__qualname__}"}


def _split_indices(size: int) -> list[int]:
    if size <= FULL_HASH_LIMIT:
        return list(range(size))
    return sorted({round(i * (size - 1) / (SAMPLE - 1)) for i in range(SAMPLE)})


def data_fingerprint(splits: DataSplits) -> dict[str, Any]:
    """``sha256`` of the split sizes, classes, input shape and (sampled) examples; ``sizes``.

    The training split is read through ``train_eval`` (the same examples, un-augmented),
    so random augmentation never changes the fingerprint.
    """
    named = {"train": splits.train_eval, "validation": splits.validation, "test": splits.test}
    sizes = {name: len(split) for name, split in named.items() if split is not None}
    digest = hashlib.sha256(
        repr((sorted(sizes.items()), splits.num_classes, tuple(splits.input_shape))).encode()
    )
    for name, split in named.items():
        if split is None:
            continue
        digest.update(name.encode())
        for index in _split_indices(len(split)):
            _hash_value(digest, split[index])
    return {"sha256": digest.hexdigest(), "sizes": sizes}


def materialize_model(model: nn.Module | Any, init_seed: int) -> nn.Module:
    """A private copy of the caller's model (a factory is called once, seeded with ``init``)."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if not callable(model):
        raise ConfigError(
            [f"model: expected an nn.Module or a zero-argument factory, got {type(model).__name__}"]
        )
    torch.manual_seed(init_seed)
    built = model()
    if not isinstance(built, nn.Module):
        raise ConfigError(
            [f"model: the factory returned {type(built).__name__}, not a torch.nn.Module"]
        )
    return built


def _explicit(config: ExperimentConfig, section: str) -> bool:
    """Whether the config names a component for ``section`` (not just the default)."""
    part = getattr(config, section)
    return section in config.model_fields_set and bool({"name", "params"} & part.model_fields_set)


def with_user_objects(
    config: ExperimentConfig, model: nn.Module | None, data: DataSplits | None
) -> tuple[ExperimentConfig, dict[str, Any], dict[str, Any]]:
    """The config naming the user objects by fingerprint, their specs, and provenance.

    Returns ``(config, provided specs for resolve_config, provenance for config.json)``.
    Raises :class:`ConfigError` when a registered name is also set for the same field, or
    when data are not :class:`DataSplits`.
    """
    problems = []
    if model is not None and _explicit(config, "model"):
        problems.append(
            f"model.name: a model object was passed and the config also names model "
            f"'{config.model.name}'; pass one or the other"
        )
    if data is not None and _explicit(config, "dataset"):
        problems.append(
            f"dataset.name: data were passed and the config also names dataset "
            f"'{config.dataset.name}'; pass one or the other"
        )
    if data is not None and not isinstance(data, DataSplits):
        problems.append(
            f"data: expected shrinkbench_core.data.DataSplits, got {type(data).__name__}"
        )
    if problems:
        raise ConfigError(problems)
    update: dict[str, Any] = {}
    provided: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    if data is not None:
        fingerprint = data_fingerprint(data)
        example = data.test[0][0] if len(data.test) else data.train_eval[0][0]
        input_shape = tuple(data.input_shape) or tuple(example.shape)
        dataset = config.dataset.model_copy(update={"name": USER_DATA, "params": fingerprint})
        update["dataset"] = dataset
        provided["dataset"] = DatasetSpec(
            name=USER_DATA,
            summary="Data passed to the run as DataSplits",
            factory="shrinkbench_core.experiment.user_objects:not_loadable",
            parameters=UserDataParameters,
            input_shape=input_shape,
            num_classes=max(data.num_classes, 2),  # 0 (unknown) only matters to a model spec
            plugin="user",
        )
        provenance["dataset"] = {"user_provided": True, **fingerprint}
    if model is not None:
        fingerprint = model_fingerprint(model)
        update["model"] = config.model.model_copy(
            update={"name": USER_MODEL, "params": fingerprint}
        )
        provided["model"] = ModelSpec(
            name=USER_MODEL,
            summary="A model passed to the run as an object",
            factory="shrinkbench_core.experiment.user_objects:not_loadable",
            parameters=UserModelParameters,
            plugin="user",
        )
        provenance["model"] = {"user_provided": True, **fingerprint}
    if data is not None and model is None and not data.num_classes:
        raise ConfigError(
            ["data: DataSplits.num_classes is 0; set it so the registered model can be built"]
        )
    return config.model_copy(update=update), provided, provenance

"""The example input an export is traced and checked with, and where it came from.

For a run, the example is the first sample of the run's own test split, built through
the dataset's registered factory with the parameters and data seed the run recorded:
exact dtype and shape (image tensors, feature vectors, token ids of the run's sequence
length). Only when the data cannot be built (files no longer there, a user's own data)
is a seeded random input of the dataset's nominal shape used instead: standard normal
values, or, when the model rejects those and holds embeddings, integer ids valid for
every embedding. :class:`ExampleInput` says which, for the export's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import UserError

#: Seed of the random fallback input (fixed, so that an export is reproducible).
FALLBACK_SEED = 0


@dataclass
class ExampleInput:
    """One input batch and its provenance (``source``: ``data``, ``random`` or ``given``)."""

    tensor: torch.Tensor
    source: str
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance: source, dtype, shape and how it was made."""
        return {
            "source": self.source,
            "dtype": str(self.tensor.dtype).removeprefix("torch."),
            "shape": list(self.tensor.shape),
            **self.details,
        }

    def summary(self) -> str:
        """One line for people."""
        shape = "x".join(str(size) for size in self.tensor.shape)
        kind = f"{str(self.tensor.dtype).removeprefix('torch.')} {shape}"
        if self.source == "data":
            return (
                f"{self.details['split']} sample {self.details['index']} of "
                f"{self.details['dataset']} ({kind})"
            )
        if self.source == "random":
            return (
                f"seeded random {self.details['values']} (seed {self.details['seed']}, {kind}); "
                f"the run's data could not be built: {self.details['reason']}"
            )
        return f"given by the caller ({kind})"


@dataclass
class RunData:
    """The run's data splits, or why they could not be built."""

    splits: Any = None  # DataSplits
    reason: str = ""
    dataset: str = ""


def build_run_data(record: dict[str, Any]) -> RunData:
    """Rebuild a run's splits from its ``config.json`` record, as the runner built them.

    Uses the dataset's registered factory, the recorded dataset parameters and the
    recorded data-order seed. Never raises: a failure is returned as ``reason``.
    """
    from shrinkbench_core.config import SeedConfig
    from shrinkbench_core.registry import get_registry

    config = record.get("config") or {}
    section = config.get("dataset") or {}
    name = section.get("name") or ""
    try:
        spec = get_registry().get("datasets", name)
    except UserError as error:
        return RunData(reason=f"dataset {name!r} is not registered "
                       f"({_first_line(error)})", dataset=name)
    try:
        seeds = record.get("seeds") or SeedConfig.model_validate(
            config.get("seeds") or {}
        ).resolve(int(config.get("seed") or 0)).model_dump()
        splits = spec.load()(
            spec.parameters(**(section.get("params") or {})), seed=int(seeds["data_order"])
        )
        if len(splits.test) == 0:
            return RunData(reason="its test split is empty", dataset=name)
    except Exception as error:  # any failure of a plugin's factory: fall back, say why
        return RunData(reason=f"{type(error).__name__}: {_first_line(error)}", dataset=name)
    return RunData(splits=splits, dataset=name)


def from_data(data: RunData) -> ExampleInput:
    """The first test sample of the run's data, with a batch dimension."""
    sample = data.splits.test[0]
    tensor = sample[0] if isinstance(sample, (tuple, list)) else sample
    return ExampleInput(
        torch.as_tensor(tensor).unsqueeze(0).detach().cpu(),
        "data",
        {"dataset": data.dataset, "split": "test", "index": 0},
    )


def seeded_random(model: nn.Module, shape: tuple[int, ...], reason: str) -> ExampleInput:
    """A seeded random batch of one that ``model`` accepts (normal values, else token ids).

    The float input is tried first; if the model rejects it and holds embeddings,
    integer ids below the smallest embedding's size are used (valid for all of them).
    """
    details = {"seed": FALLBACK_SEED, "reason": reason}
    generator = torch.Generator().manual_seed(FALLBACK_SEED)
    values = torch.randn(1, *shape, generator=generator)
    try:
        with torch.no_grad():
            model(values)
        return ExampleInput(values, "random", {"values": "normal", **details})
    except Exception as error:
        rejected = error
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    if sizes:
        generator = torch.Generator().manual_seed(FALLBACK_SEED)
        ids = torch.randint(0, min(sizes), (1, *shape), generator=generator)
        try:
            with torch.no_grad():
                model(ids)
            return ExampleInput(ids, "random", {"values": f"ids in [0, {min(sizes)})", **details})
        except Exception as error:
            rejected = error
    raise UserError(
        f"cannot make an example input: the run's data could not be built ({reason}), and "
        f"the model rejects a seeded random input of shape {(1, *shape)} "
        f"({type(rejected).__name__}: {_first_line(rejected)}). Make the data available "
        "again, or pass example_input= (one input batch) to sb.export"
    )


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:200]

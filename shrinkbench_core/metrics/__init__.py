"""Metrics: size, FLOPs, accuracy, memory and latency.

A metric is a function ``compute(context, params) -> dict`` registered through
``shrinkbench_register_metrics``. The context gives it everything it may need;
a metric uses only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader


@dataclass
class MetricContext:
    """What a metric is computed on.

    ``model`` is evaluated as it is (masks already applied). ``masks`` maps
    parameter names to boolean keep-masks (empty for a dense model).
    ``example_input`` is one batch of size 1 on ``device``. ``loaders`` maps split
    names (``"test"``, ``"validation"``) to data loaders. ``stage`` is
    ``"dense"``, ``"pruned"`` or ``"finetuned"``. ``dense_model``, when given for
    a pruned stage, is the dense model it came from: the latency metric then times
    both and reports the measured speedup.
    """

    model: torch.nn.Module
    example_input: torch.Tensor
    device: torch.device
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    prunable: list[str] = field(default_factory=list)
    loaders: dict[str, DataLoader] = field(default_factory=dict)
    stage: str = "dense"
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    dense_model: torch.nn.Module | None = None

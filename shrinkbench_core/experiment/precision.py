"""Mixed precision and memory layout for training and evaluation.

``precision`` is one of ``fp32`` (no autocast), ``bf16`` (autocast to bfloat16, on CPU
and CUDA) or ``fp16`` (autocast to float16 with a gradient scaler, CUDA only). Weights,
gradients and optimizer state stay float32 in every mode (autocast only lowers the
precision of the operations), so masks held after each optimizer step keep pruned weights
exactly zero whatever the precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from shrinkbench_core.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "backward_and_step",
    "check_precision",
    "grad_scaler",
    "to_channels_last",
]


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise :class:`ConfigError` for an unknown precision or fp16 off CUDA."""
    device_type = torch.device(device).type
    if precision not in PRECISIONS:
        raise ConfigError([f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}"])
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError(
            [
                f"precision: fp16 needs a CUDA device (a gradient scaler), the run uses "
                f"{device_type}; use -p precision=bf16 (works on CPU) or fp32"
            ]
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """The autocast context of ``precision`` on ``device`` (nothing for fp32)."""
    check_precision(precision, device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (CUDA); ``None`` for fp32 and bf16, which need none."""
    check_precision(precision, device)
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """``loss.backward(); optimizer.step()``, through ``scaler`` when there is one.

    A scaled step that finds inf/NaN gradients is skipped by the scaler: the optimizer's
    step hooks (mask holding) then do not run, and the weights are unchanged.
    """
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def to_channels_last(module_or_input: nn.Module | torch.Tensor) -> nn.Module | torch.Tensor:
    """A model (in place) or a 4-d batch in channels-last (NHWC) memory layout.

    Tensors that are not 4-d are returned unchanged (channels-last is defined for NCHW).
    """
    if isinstance(module_or_input, nn.Module):
        return module_or_input.to(memory_format=torch.channels_last)
    if module_or_input.dim() == 4:
        return module_or_input.contiguous(memory_format=torch.channels_last)
    return module_or_input

"""Accuracy over a whole split: exact top-k and mean cross-entropy.

Top-k accuracy = examples whose label is among the k highest scores / number of
examples, counted over the whole split (never a mean of per-batch accuracies,
which is wrong when the last batch is short). Mean loss = summed cross-entropy /
number of examples. A ``k`` larger than the number of classes is left out of
the result (top-k would be trivially 1).

Sequence models: scores ``(N, T, C)`` with targets ``(N, T)`` (a language model's
next-token predictions, targets already shifted) are flattened to ``N x T``
positions, each counted as one example; positions whose target is ``-100``
(padding, PyTorch's ``ignore_index``) are left out of every count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkbench_core.builtin.metrics import AccuracyParameters
from shrinkbench_core.errors import UserError
from shrinkbench_core.metrics import MetricContext


@dataclass(frozen=True)
class AccuracyReport:
    """Correct counts per ``k``, summed loss and number of examples of one split."""

    examples: int
    num_classes: int
    correct: dict[int, int]
    loss_sum: float

    def top(self, k: int) -> float:
        """Top-``k`` accuracy as a fraction in [0, 1]."""
        return self.correct[k] / self.examples

    @property
    def mean_loss(self) -> float:
        """Mean cross-entropy per example (nats)."""
        return self.loss_sum / self.examples

    def as_dict(self) -> dict[str, Any]:
        """``top{k}`` for each evaluated k, ``loss``, ``examples``, ``num_classes``."""
        result: dict[str, Any] = {f"top{k}": self.top(k) for k in sorted(self.correct)}
        result.update(loss=self.mean_loss, examples=self.examples, num_classes=self.num_classes)
        return result


def logits_of(output: Any) -> torch.Tensor:
    """The class scores of a model output (a tensor, a tuple's first item, or ``.logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find class scores in a model output of type {type(output).__name__}")


IGNORE_INDEX = -100


def flatten_positions(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``(P, C)`` and targets ``(P,)`` of every scored position of a batch.

    ``(N, C)`` with ``(N,)`` is returned as is; ``(N, T, ..., C)`` with ``(N, T, ...)``
    is flattened; positions whose target is ``-100`` are dropped. Raises
    :class:`UserError` when the shapes do not pair up.
    """
    if logits.dim() < 2 or tuple(logits.shape[:-1]) != tuple(labels.shape):
        raise UserError(
            f"accuracy: model scores of shape {tuple(logits.shape)} do not match targets of "
            f"shape {tuple(labels.shape)}; expected scores (N, C) with targets (N,) or "
            "scores (N, T, C) with targets (N, T)"
        )
    if logits.dim() == 2:
        return logits, labels
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep]


def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable[Sequence[Any]],
    device: torch.device | str | None = None,
    topk: Sequence[int] = (1, 5),
) -> AccuracyReport:
    """Evaluate ``model`` on every batch ``(inputs, labels)`` of ``loader``.

    Runs in eval mode under ``torch.no_grad`` on ``device`` (default: the device
    of the model's first parameter) and restores the model's training flag.
    Sequence outputs ``(N, T, C)`` with targets ``(N, T)`` count every position
    (see :func:`flatten_positions`). Raises :class:`UserError` for an empty loader.
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    ks = sorted(set(topk))
    correct: torch.Tensor | None = None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    examples = 0
    num_classes = 0
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                inputs, labels = batch[0], batch[1]
                inputs = inputs.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = logits_of(model(inputs)).float()
                logits, labels = flatten_positions(logits, labels)
                num_classes = logits.shape[-1]
                if correct is None:
                    ks = _usable_ks(ks, num_classes)
                    correct = torch.zeros(len(ks), dtype=torch.int64, device=device)
                hits = logits.topk(max(ks), dim=-1).indices == labels.unsqueeze(-1)
                correct += torch.stack([hits[:, :k].any(dim=-1).sum() for k in ks])
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
                examples += labels.shape[0]
    finally:
        model.train(was_training)
    if examples == 0 or correct is None:
        raise UserError("cannot evaluate accuracy: the data loader yielded no examples")
    return AccuracyReport(
        examples=examples,
        num_classes=num_classes,
        correct={k: int(c) for k, c in zip(ks, correct.tolist(), strict=True)},
        loss_sum=float(loss_sum),
    )


def _usable_ks(ks: list[int], num_classes: int) -> list[int]:
    usable = [k for k in ks if k <= num_classes]
    if not usable:
        raise UserError(
            f"top-k accuracy needs k <= number of classes ({num_classes}); got topk={ks}"
        )
    return usable


def compute(context: MetricContext, params: AccuracyParameters) -> dict[str, Any]:
    """The ``accuracy`` metric on ``context.loaders[params.split]``.

    Keys: ``top1``, ``top5`` (each a fraction; a k above the number of classes
    is omitted), ``loss`` (mean cross-entropy), ``examples``, ``num_classes``.
    """
    if params.split not in context.loaders:
        available = ", ".join(sorted(context.loaders)) or "none"
        raise UserError(
            f"accuracy: no '{params.split}' split to evaluate; available splits: {available}"
        )
    report = evaluate_accuracy(
        context.model, context.loaders[params.split], context.device, params.topk
    )
    return report.as_dict()

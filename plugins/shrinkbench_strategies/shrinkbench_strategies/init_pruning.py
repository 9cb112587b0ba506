"""Pruning at initialization: SNIP, GraSP and SynFlow.

All three score the model they are given. To prune *at initialization* run
them on untrained weights (``dense.epochs = 0``) and train the sparse model
in the fine-tuning stage; on trained weights they are ordinary post-training
criteria.

* SNIP (Lee et al. 2019): connection sensitivity ``|g * w|`` from the gradient
  of the loss on one batch.
* GraSP (Wang et al. 2020): ``S = -w * (H g)``, with ``H g`` a Hessian-vector
  product of the loss at temperature ``T``; the weights with the *highest*
  ``S`` are removed (those whose removal reduces gradient flow the least).
* SynFlow (Tanaka et al. 2020): data-free. Weights are replaced by their
  absolute values, an all-ones input is fed, ``R`` = sum of the output and the
  score is ``|w * dR/dw|``. Scoring and pruning alternate over ``rounds``
  rounds with an exponentially shrinking kept fraction.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.pruning import Masks, Strategy, top_count_masks
from shrinkbench_core.pruning.strategy import Batch, compute_gradients, preserved_state
from shrinkbench_strategies.params import GraspParameters, SnipParameters, SynFlowParameters


class SNIP(Strategy):
    """Keep the weights with the largest connection sensitivity ``|g * w|`` (one batch)."""

    Parameters = SnipParameters

    def scores(self) -> dict[str, torch.Tensor]:
        """``|dL/dw * w|`` with the gradient averaged over the first ``batches`` batches."""
        batches = self._require_data()[: self.options.batches]
        grads = compute_gradients(self.model, self.prunable, batches)
        return {name: (p * grads[name]).abs() for name, p in self.params().items()}

    def model_masks(self) -> Masks:
        return self.keep_top(self.scores())


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def hessian_gradient_product(
    model: nn.Module, names: list[str], batches: list[Batch], temperature: float
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(g, H g)`` of the mean cross-entropy of ``logits / temperature`` over ``batches``.

    ``g`` and ``H`` are taken with respect to the named parameters only; the
    model (weights, buffers, ``.grad``, training flag) is left as it was.
    """
    named = dict(model.named_parameters())
    params = [named[name] for name in names]
    device = _device(model)

    def loss_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = model(inputs.to(device)) / temperature
        return nn.functional.cross_entropy(logits, targets.to(device))

    def zeros_for(grads) -> list[torch.Tensor]:
        pairs = zip(grads, params, strict=True)
        return [g if g is not None else torch.zeros_like(p) for g, p in pairs]

    with preserved_state(model):
        gradient = [torch.zeros_like(p) for p in params]
        for inputs, targets in batches:
            grads = torch.autograd.grad(loss_of(inputs, targets), params, allow_unused=True)
            for total, g in zip(gradient, zeros_for(grads), strict=True):
                total += g.detach() / len(batches)
        product = [torch.zeros_like(p) for p in params]
        for inputs, targets in batches:
            grads = torch.autograd.grad(
                loss_of(inputs, targets), params, create_graph=True, allow_unused=True
            )
            inner = sum(
                (g * fixed).sum() for g, fixed in zip(grads, gradient, strict=True) if g is not None
            )
            if not isinstance(inner, torch.Tensor) or not inner.requires_grad:
                continue  # no parameter reaches the loss twice: H g = 0
            hvp = torch.autograd.grad(inner, params, allow_unused=True)
            for total, h in zip(product, zeros_for(hvp), strict=True):
                total += h.detach() / len(batches)
    return dict(zip(names, gradient, strict=True)), dict(zip(names, product, strict=True))


class GraSP(Strategy):
    """Remove the weights with the highest ``-w * (H g)`` (preserve gradient flow)."""

    Parameters = GraspParameters

    def scores(self) -> dict[str, torch.Tensor]:
        """The paper's score ``S = -w * (H g)``; *high* means prune first."""
        batches = self._require_data()
        if self.options.batches is not None:
            batches = batches[: self.options.batches]
        _, product = hessian_gradient_product(
            self.model, self.prunable, batches, self.options.temperature
        )
        return {name: -p * product[name] for name, p in self.params().items()}

    def model_masks(self) -> Masks:
        return self.keep_top({name: -score for name, score in self.scores().items()})


# -- SynFlow -------------------------------------------------------------------
def synflow_keep_counts(start: int, keep: int, rounds: int, schedule: str) -> list[int]:
    """Weights kept after each round: from ``start`` down to exactly ``keep`` at the last.

    ``exponential``: ``start * (keep / start) ** (k / rounds)`` (the paper);
    ``linear``: evenly spaced counts.
    """
    counts = []
    for k in range(1, rounds + 1):
        if schedule == "exponential":
            value = start * (keep / start) ** (k / rounds) if start else 0
        else:
            value = start - (start - keep) * k / rounds
        counts.append(min(start, max(keep, round(value))))
    counts[-1] = keep
    return counts


def _ranking(scores: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Order-preserving float32 ranks (log of the score); pruned entries rank last."""
    info = torch.finfo(torch.float32)
    # a zero score still beats a pruned entry; an overflowing one stays on top
    ranks = torch.nan_to_num(torch.log(scores), nan=info.min, posinf=info.max, neginf=info.min)
    ranks = ranks.clamp(info.min, info.max).to(torch.float32)
    return torch.where(alive, ranks, torch.tensor(float("-inf"), device=ranks.device))


class SynFlow(Strategy):
    """Iterative synaptic-flow scores ``|w * dR/dw|`` on an all-ones input; uses no data.

    The input shape comes from ``params.input_shape`` or from the ``input_shape``
    keyword the runner passes. Calibration batches are never read.
    """

    Parameters = SynFlowParameters

    def __init__(
        self, model: nn.Module, compression: float, *, input_shape=None, **kwargs: Any
    ) -> None:
        super().__init__(model, compression, **kwargs)
        if input_shape is not None:
            self.input_shape = tuple(input_shape)
        elif not hasattr(self, "input_shape"):  # the base class may already set it
            self.input_shape = None

    def _input_shape(self) -> tuple[int, ...]:
        shape = self.options.input_shape or getattr(self, "input_shape", None)
        if not shape:
            raise UserError(
                "SynFlow needs the input shape (it feeds an all-ones input, no data): "
                "set `-p strategy.input_shape=[C,H,W]` or let the runner pass input_shape"
            )
        return tuple(int(d) for d in shape)

    def linearized_copy(self) -> nn.Module:
        """A copy of the model in eval mode whose parameters and buffers are ``|value|``."""
        dtype = torch.float64 if self.options.precision == "float64" else torch.float32
        linear = copy.deepcopy(self.model).to(dtype).eval()
        with torch.no_grad():
            for tensor in [*linear.parameters(), *linear.buffers()]:
                if tensor.is_floating_point():
                    tensor.abs_()
        for param in linear.parameters():
            param.grad = None
        return linear

    @staticmethod
    def flow_scores(linear: nn.Module, names: list[str], input_shape: tuple[int, ...]):
        """``|w * dR/dw|`` for the named parameters of a linearized model, ``R = sum(f(1))``."""
        named = dict(linear.named_parameters())
        params = [named[name] for name in names]
        first = next(linear.parameters())
        ones = torch.ones((1, *input_shape), dtype=first.dtype, device=first.device)
        grads = torch.autograd.grad(linear(ones).sum(), params, allow_unused=True)
        return {
            name: (p.detach() * (g if g is not None else torch.zeros_like(p))).abs()
            for name, p, g in zip(names, params, grads, strict=True)
        }

    def model_masks(self) -> Masks:
        shape = self._input_shape()
        linear = self.linearized_copy()
        named = dict(linear.named_parameters())
        start = self.budget.prunable_nonzero
        counts = synflow_keep_counts(start, self.keep, self.options.rounds, self.options.schedule)
        masks: Masks = {}
        for count in counts:
            scores = self.flow_scores(linear, self.prunable, shape)
            ranks = {name: _ranking(s, named[name].detach() != 0) for name, s in scores.items()}
            masks = top_count_masks(ranks, count)
            with torch.no_grad():
                for name, mask in masks.items():
                    named[name].masked_fill_(~mask, 0)
        device = {name: p.device for name, p in self.params().items()}
        return {name: mask.to(device[name]) for name, mask in masks.items()}

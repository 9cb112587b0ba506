"""Loss-change estimates from calibration data: first-order Taylor and Fisher / OBD.

* Taylor (Molchanov et al. 2019): the first-order estimate of the loss change
  when weight ``w`` is removed is ``g * w``. It is computed *per batch* and
  accumulated as ``(g_b * w)^2`` (the paper's choice, default) or ``|g_b * w|``,
  then averaged over the calibration batches. Unlike ``GlobalMagGrad`` (which
  averages the gradient first), per-batch squaring keeps the contribution of
  gradients that cancel on average.
* Fisher / OBD (LeCun et al. 1990): the second-order saliency
  ``0.5 * H_ii * w^2`` with the Hessian diagonal replaced by the empirical
  Fisher diagonal ``mean((dl/dw)^2)``: per-example gradients by default (the
  empirical Fisher), or per-batch ones (a cheaper approximation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shrinkbench_core.pruning import Masks, Strategy
from shrinkbench_core.pruning.strategy import Batch, compute_gradients, preserved_state
from shrinkbench_strategies.params import FisherParameters, TaylorParameters


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def per_batch_gradients(
    model: nn.Module, names: Sequence[str], batches: Sequence[Batch]
) -> list[dict[str, torch.Tensor]]:
    """The gradient of the mean cross-entropy of each batch, separately."""
    return [compute_gradients(model, names, [batch]) for batch in batches]


def _example_gradients_vmap(model, names, inputs, targets):
    from torch.func import functional_call, grad, vmap

    scored = {name: p.detach() for name, p in model.named_parameters() if name in set(names)}
    others = {name: p.detach() for name, p in model.named_parameters() if name not in scored}
    others.update(dict(model.named_buffers()))

    def loss(weights, x, y):
        logits = functional_call(model, {**others, **weights}, (x.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, y.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(scored, inputs, targets)


def _example_gradients_loop(model, names, inputs, targets):
    named = dict(model.named_parameters())
    params = [named[name] for name in names]
    out = {name: [] for name in names}
    for x, y in zip(inputs, targets, strict=True):
        loss = nn.functional.cross_entropy(model(x.unsqueeze(0)), y.unsqueeze(0))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for name, p, g in zip(names, params, grads, strict=True):
            out[name].append(g if g is not None else torch.zeros_like(p))
    return {name: torch.stack(values) for name, values in out.items()}


def squared_example_gradients(
    model: nn.Module, names: Sequence[str], batches: Sequence[Batch], chunk_size: int = 16
) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal: mean over all examples of ``(dl_n/dw)^2``.

    Per-example gradients come from ``torch.func.vmap`` in chunks of
    ``chunk_size`` examples (a plain per-example loop where vmap does not support
    a layer). The model is run in eval mode and left exactly as it was.
    """
    names = list(names)
    named = dict(model.named_parameters())
    totals = {name: torch.zeros_like(named[name]) for name in names}
    device, count = _device(model), 0
    use_vmap = True
    with preserved_state(model):
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            for start in range(0, len(targets), chunk_size):
                x, y = inputs[start : start + chunk_size], targets[start : start + chunk_size]
                grads = None
                if use_vmap:
                    try:
                        grads = _example_gradients_vmap(model, names, x, y)
                    except RuntimeError:
                        use_vmap = False
                if grads is None:
                    grads = _example_gradients_loop(model, names, x, y)
                for name in names:
                    totals[name] += grads[name].detach().pow(2).sum(0)
                count += len(y)
    return {name: total / max(count, 1) for name, total in totals.items()}


def squared_batch_gradients(
    model: nn.Module, names: Sequence[str], batches: Sequence[Batch]
) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared batch gradient ``(dL_b/dw)^2``."""
    grads = per_batch_gradients(model, names, batches)
    return {name: sum(g[name].pow(2) for g in grads) / len(grads) for name in names}


class GlobalTaylor(Strategy):
    """Keep the weights with the largest first-order Taylor importance across all layers."""

    Parameters = TaylorParameters

    def scores(self) -> dict[str, torch.Tensor]:
        """Mean over batches of ``(w * g_b)^2`` (or ``|w * g_b|``)."""
        params = self.params()
        grads = per_batch_gradients(self.model, self.prunable, self._require_data())
        squared = self.options.accumulate == "squared"
        out = {}
        for name, p in params.items():
            terms = [(p * g[name]).pow(2) if squared else (p * g[name]).abs() for g in grads]
            out[name] = sum(terms) / len(terms)
        return out

    def model_masks(self) -> Masks:
        return self.keep_top(self.scores())


class GlobalFisher(Strategy):
    """Keep the weights with the largest OBD saliency ``0.5 * w^2 * F_ii`` across all layers."""

    Parameters = FisherParameters

    def fisher_diagonal(self) -> dict[str, torch.Tensor]:
        """The empirical Fisher diagonal on the calibration batches."""
        batches = self._require_data()
        if self.options.gradients == "example":
            return squared_example_gradients(
                self.model, self.prunable, batches, self.options.chunk_size
            )
        return squared_batch_gradients(self.model, self.prunable, batches)

    def scores(self) -> dict[str, torch.Tensor]:
        """``0.5 * w^2 * F_ii`` per prunable weight."""
        fisher = self.fisher_diagonal()
        return {name: 0.5 * p.pow(2) * fisher[name] for name, p in self.params().items()}

    def model_masks(self) -> Masks:
        return self.keep_top(self.scores())

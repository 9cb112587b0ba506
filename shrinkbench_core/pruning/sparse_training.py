"""Dynamic sparse training: masks that move during training at a constant sparsity.

* Layer densities: uniform, or Erdos-Renyi-Kernel (ERK, Evci et al. 2020): a layer's
  density is proportional to ``sum(shape) / prod(shape)``, scaled so the model keeps
  exactly the requested number of weights; a layer whose density would exceed 1 is
  made dense and the others are rescaled (repeated until none exceeds 1).
* Initial masks at an exact global count: random (seeded) or by magnitude, per layer.
* Updates every ``update_interval`` training steps until ``stop_fraction`` of training:
  ``set`` (Mocanu et al. 2018) drops the active weights of smallest magnitude and
  regrows as many at random; ``rigl`` (Evci et al. 2020) regrows where the dense
  gradient is largest. The dropped fraction decays with a cosine from ``drop_fraction``
  to zero at the last update step. ``static`` never updates.

Invariants after every update: every layer keeps exactly as many weights as before,
regrown weights are exactly zero, and the optimizer state of regrown entries (SGD
momentum, Adam ``exp_avg``/``exp_avg_sq``, ...) is zero. Masks are ``{name: BoolTensor}``
(``True`` = keep), as everywhere in :mod:`shrinkbench_core.pruning`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from shrinkbench_core.pruning.masks import MaskHolder, Masks, hold_masks

Distribution = Literal["erk", "uniform"]
InitMethod = Literal["random", "magnitude"]
UpdateMethod = Literal["static", "set", "rigl"]

_REGROW_STREAM, _MIX = 0x5E7_5E7, 0x9E37_79B1

__all__ = [
    "DynamicSparsity",
    "SparseUpdate",
    "cosine_drop_fraction",
    "erk_densities",
    "initial_masks",
    "keep_counts",
    "layer_densities",
    "reset_optimizer_state",
    "uniform_densities",
]


def erk_densities(
    params: Mapping[str, torch.Tensor], density: float, power_scale: float = 1.0
) -> dict[str, float]:
    """Per-layer densities of the Erdos-Renyi-Kernel distribution at overall ``density``.

    ``density`` is the fraction of the weights of ``params`` (all layers together)
    to keep. Layer ``l`` gets ``eps * (sum(shape_l) / prod(shape_l)) ** power_scale``;
    ``eps`` is solved so the kept weights total ``density * N``. While some layer's
    density exceeds 1, the layer with the largest raw score is made dense and ``eps``
    solved again for the rest (the redistribution of Evci et al.'s reference code).
    """
    _check_density(density)
    sizes = {name: p.numel() for name, p in params.items()}
    raw = {
        name: (sum(p.shape) / p.numel()) ** power_scale if p.dim() else 1.0
        for name, p in params.items()
    }
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        sparse = [name for name in sizes if name not in dense]
        if not sparse:
            return {name: 1.0 for name in sizes}
        budget = density * total - sum(sizes[name] for name in dense)
        eps = budget / sum(raw[name] * sizes[name] for name in sparse)
        largest = max(raw[name] for name in sparse)
        if eps * largest <= 1.0:
            return {name: 1.0 if name in dense else eps * raw[name] for name in sizes}
        dense.update(name for name in sparse if raw[name] == largest)


def uniform_densities(params: Mapping[str, torch.Tensor], density: float) -> dict[str, float]:
    """Every layer at the same ``density``."""
    _check_density(density)
    return {name: float(density) for name in params}


def layer_densities(
    params: Mapping[str, torch.Tensor], density: float, distribution: Distribution = "erk"
) -> dict[str, float]:
    """Densities by ``distribution`` (``erk`` or ``uniform``)."""
    if distribution == "erk":
        return erk_densities(params, density)
    if distribution == "uniform":
        return uniform_densities(params, density)
    raise ValueError(f"unknown distribution {distribution!r}; choose erk or uniform")


def keep_counts(
    params: Mapping[str, torch.Tensor], densities: Mapping[str, float], keep: int
) -> dict[str, int]:
    """Integer weights to keep per layer, ``~density * size``, summing exactly to ``keep``.

    Largest-remainder rounding, capped at each layer's size.
    """
    sizes = {name: p.numel() for name, p in params.items()}
    if not 0 <= keep <= sum(sizes.values()):
        raise ValueError(f"cannot keep {keep} of {sum(sizes.values())} weights")
    targets = {name: densities[name] * sizes[name] for name in sizes}
    scale = keep / sum(targets.values()) if sum(targets.values()) else 0.0
    targets = {name: min(value * scale, sizes[name]) for name, value in targets.items()}
    counts = {name: min(int(value), sizes[name]) for name, value in targets.items()}
    while sum(counts.values()) != keep:
        short = keep - sum(counts.values())
        step = 1 if short > 0 else -1
        order = sorted(
            (name for name in sizes if 0 <= counts[name] + step <= sizes[name]),
            key=lambda n: (-step * (targets[n] - counts[n]), n),
        )
        for name in order[: abs(short)]:
            counts[name] += step
    return counts


def initial_masks(
    params: Mapping[str, torch.Tensor],
    keep: int,
    distribution: Distribution = "erk",
    init: InitMethod = "random",
    seed: int = 0,
) -> Masks:
    """Masks keeping exactly ``keep`` weights of ``params`` in total.

    Layer counts follow ``distribution``; within a layer the kept weights are a seeded
    random choice (``init="random"``) or the largest ``|w|`` (``init="magnitude"``).
    """
    total = sum(p.numel() for p in params.values())
    densities = layer_densities(params, keep / total if total else 1.0, distribution)
    counts = keep_counts(params, densities, keep)
    generator = torch.Generator().manual_seed(seed)
    masks: Masks = {}
    for name, param in params.items():
        if init == "random":
            score = torch.rand(param.shape, generator=generator).to(param.device)
        elif init == "magnitude":
            score = param.detach().abs()
        else:
            raise ValueError(f"unknown init {init!r}; choose random or magnitude")
        masks[name] = _top_mask(score, counts[name])
    return masks


def cosine_drop_fraction(step: int, end_step: int, initial: float) -> float:
    """``initial / 2 * (1 + cos(pi * step / end_step))``; zero from ``end_step`` on."""
    if step >= end_step or end_step <= 0:
        return 0.0
    return initial / 2 * (1 + math.cos(math.pi * step / end_step))


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, entries: torch.Tensor
) -> int:
    """Zero every per-entry state tensor of ``param`` (momentum, exp_avg, ...) at ``entries``.

    ``entries`` is a bool tensor of the parameter's shape. Returns how many state
    tensors were reset (0 before the optimizer's first step: nothing to reset).
    """
    reset = 0
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(entries.to(value.device), 0)
            reset += 1
    return reset


@dataclass
class SparseUpdate:
    """What one mask update did."""

    step: int
    drop_fraction: float
    changed: int  # mask entries that changed: dropped ones plus newly grown ones
    per_layer: dict[str, int] = field(default_factory=dict)  # weights regrown per layer


class DynamicSparsity:
    """Holds sparse masks on a model during training and moves them (SET / RigL).

    Call :meth:`step` after every ``optimizer.step()`` (gradients of that step still in
    ``.grad``); it updates the masks when the step is due and returns the
    :class:`SparseUpdate` (else ``None``). The masks are held between steps with
    :func:`~shrinkbench_core.pruning.masks.hold_masks`.
    """

    def __init__(
        self,
        model: nn.Module,
        masks: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        method: UpdateMethod = "rigl",
        total_steps: int = 1,
        drop_fraction: float = 0.3,
        update_interval: int = 100,
        stop_fraction: float = 0.75,
        seed: int = 0,
    ) -> None:
        if method not in ("static", "set", "rigl"):
            raise ValueError(f"unknown method {method!r}; choose static, set or rigl")
        if not 0 <= drop_fraction <= 1:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction}")
        if update_interval < 1:
            raise ValueError(f"update_interval must be >= 1, got {update_interval}")
        self.model = model
        self.optimizer = optimizer
        self.method = method
        self.drop_fraction = drop_fraction
        self.update_interval = update_interval
        self.end_step = int(stop_fraction * total_steps)
        self.params = dict(model.named_parameters())
        self.masks: Masks = {
            name: mask.to(self.params[name].device).clone(memory_format=torch.contiguous_format)
            for name, mask in masks.items()
        }
        # a stream of its own: with the same seed as random initial masks, SET would
        # regrow exactly the weights the initial masks chose
        # (CPU generators use the low 32 bits of a seed, so the seed is mixed, not offset)
        self.generator = torch.Generator().manual_seed((seed * _MIX + _REGROW_STREAM) % 2**32)
        self.steps = 0
        self.holder: MaskHolder = hold_masks(model, self.masks, optimizer)

    def due(self, step: int) -> bool:
        """Whether the masks are updated after training step ``step`` (1-based)."""
        return (
            self.method != "static"
            and 0 < step < self.end_step
            and step % self.update_interval == 0
        )

    def step(self) -> SparseUpdate | None:
        """Count one training step; update the masks when due."""
        self.steps += 1
        return self.update(self.steps) if self.due(self.steps) else None

    @torch.no_grad()
    def update(self, step: int) -> SparseUpdate:
        """Drop and regrow now, with the drop fraction of ``step``."""
        fraction = cosine_drop_fraction(step, self.end_step, self.drop_fraction)
        changed, per_layer = 0, {}
        for name, mask in self.masks.items():
            param = self.params[name]
            active = int(mask.sum())
            count = round(fraction * active)
            if count == 0 or active == mask.numel():
                per_layer[name] = 0
                continue
            remaining = mask.clone()
            active_index = mask.view(-1).nonzero().squeeze(1)
            magnitude = param.detach().reshape(-1)[active_index].abs()
            smallest = torch.topk(magnitude, count, largest=False, sorted=False).indices
            remaining.view(-1)[active_index[smallest]] = False  # drop the smallest |w|
            grow = _top_mask(self._grow_score(name, param).masked_fill(remaining, -math.inf),
                             count)
            new = remaining | grow
            regrown = new & ~mask
            param.detach().masked_fill_(regrown | ~new, 0)
            reset_optimizer_state(self.optimizer, param, regrown)
            grown = int(regrown.sum())
            per_layer[name] = grown
            changed += 2 * grown
            mask.copy_(new)
        self.holder.remove()
        self.holder = hold_masks(self.model, self.masks, self.optimizer)
        return SparseUpdate(step, fraction, changed, per_layer)

    def _grow_score(self, name: str, param: torch.Tensor) -> torch.Tensor:
        if self.method == "rigl":
            if param.grad is None:
                raise RuntimeError(
                    f"RigL needs the dense gradient of '{name}', but .grad is None: call "
                    "step() after optimizer.step() and before the next zero_grad()"
                )
            return param.grad.detach().abs().float()
        return torch.rand(param.shape, generator=self.generator).to(param.device)

    def remove(self) -> None:
        """Stop holding the masks."""
        self.holder.remove()


def _top_mask(score: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the ``count`` largest entries of ``score`` (exactly ``count``)."""
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if count > 0:
        mask[torch.topk(score.reshape(-1), count, sorted=False).indices] = True
    return mask.view(score.shape)


def _check_density(density: float) -> None:
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")

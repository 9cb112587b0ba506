"""Strategy base classes: the contract a pruning method implements.

A global strategy implements :meth:`Strategy.model_masks` and a layerwise one
:meth:`LayerStrategy.layer_masks`. Both get the exact budget (``self.keep``
weights across the prunable parameters), the parameters, and, when they need
them, gradients and input activations measured on calibration batches
without changing the model.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from shrinkbench_core.errors import MaskError, UserError
from shrinkbench_core.pruning.compression import Budget, compression_budget
from shrinkbench_core.pruning.dead_zeros import dead_zeros, probe_batch, zero_entries_outside
from shrinkbench_core.pruning.importance import (
    RankedImportances,
    allocate_counts,
    top_count_masks,
)
from shrinkbench_core.pruning.masks import Masks, apply_masks, validate_masks
from shrinkbench_core.pruning.prunable import (
    PrunableRule,
    example_from,
    locate_classifier,
    prunable_parameters,
)
from shrinkbench_core.specs import NoParameters

Batch = tuple[torch.Tensor, torch.Tensor]


class Strategy:
    """A global pruning strategy: override :meth:`model_masks`.

    Args:
        model: the model to prune (weights are only changed by :meth:`apply`).
        compression: target ratio, all parameters / nonzero parameters.
        params: the strategy's own options (an instance of ``Parameters``).
        calibration: ``(inputs, targets)`` batches for data-driven scores.
        prunable: names of the parameters that may be pruned (default: ``rule``).
        rule: which parameters are prunable when ``prunable`` is not given.
        classifier: module name of the classifier (excluded by the default rule).
            When neither ``prunable`` nor ``classifier`` is given, the classifier
            is located (:func:`~shrinkbench_core.pruning.prunable.locate_classifier`:
            the model's fx graph, else a forward pass of the first calibration
            input or of zeros of ``input_shape``) and left dense; a warning says
            when it cannot be found. ``rule=PrunableRule(exclude_classifier=False)``
            prunes it too.
        seed: seed of any randomness in the strategy.
        input_shape: shape of one input without the batch dimension (the runner
            passes the dataset's), for strategies that build their own inputs.
    """

    Parameters: ClassVar[type[BaseModel]] = NoParameters

    def __init__(
        self,
        model: nn.Module,
        compression: float,
        *,
        params: BaseModel | Mapping[str, Any] | None = None,
        calibration: Sequence[Batch] | None = None,
        prunable: Sequence[str] | None = None,
        rule: PrunableRule | None = None,
        classifier: str | None = None,
        seed: int = 0,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.model = model
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.compression = compression
        if params is None or isinstance(params, Mapping):
            params = self.Parameters(**dict(params or {}))
        self.options = params
        self.calibration = list(calibration or [])
        if prunable is None and classifier is None and (rule or PrunableRule()).exclude_classifier:
            classifier = self._locate_classifier(model, input_shape)
        self.classifier = classifier
        self.prunable = (
            list(prunable) if prunable is not None else prunable_parameters(model, rule, classifier)
        )
        self.budget: Budget = compression_budget(model, self.prunable, compression)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._gradients: dict[str, torch.Tensor] | None = None
        self._activations: dict[str, torch.Tensor] | None = None
        self.dead_zero_count = 0  # zeros outside the masks the selection holds (compute_masks)

    def _locate_classifier(
        self, model: nn.Module, input_shape: Sequence[int] | None
    ) -> str | None:
        problems: list[str] = []
        example = example_from(model, self.calibration, input_shape)
        name = locate_classifier(model, example, problems)
        if name is None:
            warnings.warn(
                f"{type(self).__name__}: could not find the classifier of "
                f"{type(model).__name__} ({'; '.join(problems)}), so it may be pruned. Pass "
                "classifier='module.name' to leave it dense, or "
                "rule=PrunableRule(exclude_classifier=False) to prune it knowingly.",
                stacklevel=3,
            )
        return name

    # -- the budget -------------------------------------------------------
    @property
    def keep(self) -> int:
        """Exact number of prunable weights to keep nonzero."""
        return self.budget.keep

    @property
    def fraction(self) -> float:
        """Fraction of the prunable weights to keep."""
        return self.budget.fraction

    # -- what strategies score --------------------------------------------
    def params(self) -> dict[str, torch.Tensor]:
        """The prunable parameters (detached), by name."""
        named = dict(self.model.named_parameters())
        return {name: named[name].detach() for name in self.prunable}

    def module_params(self, module_name: str) -> dict[str, torch.Tensor]:
        """The prunable parameters of one module, by full name."""
        prefix = f"{module_name}." if module_name else ""
        return {
            name: p
            for name, p in self.params().items()
            if name.startswith(prefix) and "." not in name[len(prefix) :]
        }

    def prunable_modules(self) -> dict[str, nn.Module]:
        """Modules owning at least one prunable parameter, by name."""
        owners = {name.rpartition(".")[0] for name in self.prunable}
        return {name: module for name, module in self.model.named_modules() if name in owners}

    def gradients(self) -> dict[str, torch.Tensor]:
        """Gradient of the mean cross-entropy on the calibration batches, per prunable parameter.

        Averaged over batches; the model (weights, buffers, existing ``.grad``)
        is left exactly as it was.
        """
        if self._gradients is None:
            self._gradients = compute_gradients(self.model, self.prunable, self._require_data())
        return self._gradients

    def activations(self) -> dict[str, torch.Tensor]:
        """Mean absolute input activation per input channel, broadcast to each prunable weight."""
        if self._activations is None:
            self._activations = input_activation_importance(
                self.model, self.prunable, self._require_data(), norm="l1"
            )
        return self._activations

    def _require_data(self) -> list[Batch]:
        if not self.calibration:
            raise UserError(
                f"strategy {type(self).__name__} needs calibration data; "
                "set `calibration_batches` >= 1 in the experiment config"
            )
        return self.calibration

    # -- selecting ----------------------------------------------------------
    def alive(self, name: str) -> torch.Tensor:
        """Bool tensor of the currently nonzero entries of a prunable parameter."""
        return dict(self.model.named_parameters())[name].detach() != 0

    def keep_top(self, importances: Mapping[str, torch.Tensor]) -> Masks:
        """Keep exactly ``self.keep`` of the highest importances across all layers.

        Weights that are already zero are ranked below everything else, so the
        result has exactly ``self.keep`` nonzero weights.
        """
        ranked = RankedImportances(importances, self.params(), self.budget.with_zeros)
        return top_count_masks(ranked, self.keep)

    # -- the contract -------------------------------------------------------
    def model_masks(self) -> Masks:
        """Return ``{parameter name: bool keep-mask}`` for the prunable parameters."""
        raise NotImplementedError(f"{type(self).__name__} must implement model_masks()")

    def compute_masks(self, count_dead: bool = False) -> Masks:
        """The strategy's masks, validated, without touching the model.

        They keep exactly ``self.keep`` weights. With ``count_dead`` (what a run that
        fine-tunes asks for), zeros outside the masks that the selection leaves unable to
        move (see :mod:`~shrinkbench_core.pruning.dead_zeros`) count as pruned too: the
        strategy selects again, keeping as many more weights, so the fine-tuned model
        reaches the requested compression (:meth:`count_dead_zeros`).
        """
        masks = self._checked(self.model_masks())
        return self.count_dead_zeros(masks) if count_dead else masks

    def _checked(self, masks: Masks) -> Masks:
        validate_masks(self.model, masks)
        outside = sorted(set(masks) - set(self.prunable))
        if outside:
            raise MaskError(
                f"{type(self).__name__} masked non-prunable parameters: {', '.join(outside[:5])}"
            )
        return masks

    def count_dead_zeros(self, masks: Masks) -> Masks:
        """Masks keeping the fewest weights with which ``self.keep`` entries stay nonzero:
        ``kept - dead zeros >= self.keep`` (equal unless one more weight revives a channel).

        Applies to selections that keep exactly ``self.keep`` weights (a pattern or a
        channel strategy fixes its own count) when a probe input is known (calibration
        data or ``input_shape``) and a parameter outside the masks holds zeros. Found by
        search over the number kept (a step by the zeros that died, else bisection),
        reselecting with the strategy reseeded; how many more weights it keeps is
        :attr:`dead_zero_count` (0 when nothing was dead).
        """
        self.dead_zero_count = 0
        base, target = self.budget, self.budget.keep
        if target >= base.prunable_nonzero or _kept(masks) != target:
            return masks
        if not zero_entries_outside(self.model, self.prunable):
            return masks
        inputs = probe_batch(self.calibration, self.input_shape, self.seed)
        if inputs is None:
            return masks

        def alive(selection: Masks) -> int | None:
            dead = dead_zeros(self.model, selection, inputs)
            return None if dead is None else _kept(selection) - dead

        reached = alive(masks)
        if reached is None or reached >= target:
            return masks
        low, high = target, target
        best: Masks | None = None
        while reached < target and high < base.prunable_nonzero:  # grow until it is reached
            low, high = high, min(base.prunable_nonzero, high + target - reached)
            best = self._reselect(high)
            reached = alive(best)  # type: ignore[assignment]
            if reached is None:
                self.budget = base
                return masks
        while high - low > 1 and reached > target:  # fewer kept, still reaching the target
            guess = high - (reached - target)  # as if no more zeros died: exact when none do
            middle = guess if low < guess < high else (low + high) // 2
            selection = self._reselect(middle)
            value = alive(selection) or 0
            if value >= target:
                high, best, reached = middle, selection, value
            else:
                low = middle
        self.budget = dataclasses.replace(base, keep=high)
        final = best if best is not None and _kept(best) == high else self._reselect(high)
        self.dead_zero_count = high - target
        return final

    def _reselect(self, keep: int) -> Masks:
        """The strategy's masks for another number kept, reseeded as at the start."""
        self.budget = dataclasses.replace(self.budget, keep=keep)
        self.generator.manual_seed(self.seed)
        self.__dict__.pop("_layer_keep", None)
        return self._checked(self.model_masks())

    def apply(self, count_dead: bool = False) -> Masks:
        """Compute the masks (``count_dead`` as in :meth:`compute_masks`) and zero the
        pruned weights of the model; return the masks."""
        masks = self.compute_masks(count_dead)
        apply_masks(self.model, masks)
        return masks


class LayerStrategy(Strategy):
    """A layerwise strategy: override :meth:`layer_masks`, called once per prunable module.

    Every prunable parameter keeps the same fraction of its weights; the counts
    are allocated so that the whole model keeps exactly ``self.keep``.
    """

    def layer_keep(self) -> dict[str, int]:
        """How many weights each prunable parameter keeps (sums to ``self.keep``)."""
        params = self.params()
        sizes = {name: p.numel() for name, p in params.items()}
        alive = {name: int(torch.count_nonzero(p)) for name, p in params.items()}
        return allocate_counts(sizes, self.keep, capacity=alive)

    def layer_mask(self, name: str, importance: torch.Tensor) -> torch.Tensor:
        """Keep this parameter's allotted number of highest ``importance`` entries."""
        if not hasattr(self, "_layer_keep"):
            self._layer_keep = self.layer_keep()
        param = self.params()[name]
        scores = torch.where(param != 0, importance.detach().float(), torch.tensor(float("-inf")))
        return top_count_masks({name: scores}, self._layer_keep[name])[name]

    def layer_masks(self, module_name: str, module: nn.Module) -> Masks:
        """Return keep-masks for the prunable parameters of one module, by full name."""
        raise NotImplementedError(f"{type(self).__name__} must implement layer_masks()")

    def model_masks(self) -> Masks:
        """Union of :meth:`layer_masks` over every prunable module."""
        masks: Masks = {}
        for module_name, module in self.prunable_modules().items():
            masks.update(self.layer_masks(module_name, module))
        return masks


# -- measurements on calibration data, leaving the model untouched ---------
@contextmanager
def preserved_state(model: nn.Module, train: bool = False) -> Iterator[None]:
    """Run a block in eval mode (``train``: train mode, BatchNorm on batch statistics) and
    restore training flag, buffers and ``.grad`` afterwards."""
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    grads = {name: p.grad for name, p in model.named_parameters()}
    model.train(train)
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
        for name, param in model.named_parameters():
            param.grad = grads[name]


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def compute_gradients(
    model: nn.Module, names: Sequence[str], batches: Sequence[Batch], train: bool = False
) -> dict[str, torch.Tensor]:
    """Mean gradient of the cross-entropy over ``batches`` for the named parameters
    (in eval mode, or in train mode with ``train``)."""
    from shrinkbench_core.experiment.training import IGNORE_INDEX, scores_and_labels

    params = dict(model.named_parameters())
    device = _device(model)
    totals = {name: torch.zeros_like(params[name]) for name in names}
    with preserved_state(model, train):
        for inputs, targets in batches:
            model.zero_grad(set_to_none=True)
            # (N, C) scores with (N,) labels, or language models' (N, T, V) with (N, T)
            scores, labels = scores_and_labels(model(inputs.to(device)), targets.to(device))
            loss = nn.functional.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX)
            loss.backward()
            for name in names:
                if params[name].grad is not None:
                    totals[name] += params[name].grad
    return {name: total / len(batches) for name, total in totals.items()}


def input_channel_statistic(
    model: nn.Module,
    module_names: Sequence[str],
    batches: Sequence[Batch],
    norm: str = "l1",
    train: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-input-channel statistic of each named module's input over ``batches``.

    ``norm="l1"``: mean absolute value; ``norm="abs_mean"``: absolute value of the
    mean over the examples at each position, averaged over positions (the original
    ShrinkBench's ``*MagAct``); ``norm="l2"``: Euclidean norm over all positions and
    examples (as Wanda uses). Channels are dim 1 for convolutions
    and the last dim for linear layers. Measured in eval mode, or train mode with
    ``train`` (BatchNorm on batch statistics).
    """
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for name in module_names:
        module = modules[name]

        def hook(mod, inputs, _output, name=name):
            x = inputs[0].detach()
            if norm == "abs_mean":  # per position: summed over examples, averaged at the end
                sums[name] = sums.get(name, 0) + x.sum(0).double()
                counts[name] = counts.get(name, 0) + x.shape[0]
                return
            if isinstance(mod, nn.modules.conv._ConvNd):
                x = x.transpose(0, 1).reshape(x.shape[1], -1)
            else:
                x = x.reshape(-1, x.shape[-1]).t()
            value = x.abs().sum(1) if norm == "l1" else x.pow(2).sum(1)
            sums[name] = sums.get(name, 0) + value.double()
            counts[name] = counts.get(name, 0) + x.shape[1]

        handles.append(module.register_forward_hook(hook))
    device = _device(model)
    try:
        with preserved_state(model, train), torch.no_grad():
            for inputs, _ in batches:
                model(inputs.to(device))
    finally:
        for handle in handles:
            handle.remove()
    if norm == "abs_mean":
        means = {name: (sums[name] / counts[name]).abs() for name in sums}
        channel_first = {
            name: m.reshape(m.shape[0], -1)
            if isinstance(modules[name], nn.modules.conv._ConvNd)
            else m.reshape(-1, m.shape[-1]).t()
            for name, m in means.items()
        }
        return {name: m.mean(1).float() for name, m in channel_first.items()}
    if norm == "l1":
        return {name: (sums[name] / counts[name]).float() for name in sums}
    return {name: sums[name].sqrt().float() for name in sums}


def broadcast_input_statistic(module: nn.Module, statistic: torch.Tensor) -> torch.Tensor:
    """Expand a per-input-channel statistic to the shape of ``module.weight``."""
    weight = module.weight
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = module.groups
        if module.transposed:  # weight: (in, out/groups, *k)
            view = statistic.reshape(-1, *([1] * (weight.dim() - 1)))
            return view.expand_as(weight).to(weight.device)
        out_channels, in_per_group = weight.shape[0], weight.shape[1]
        per_group = statistic.reshape(groups, 1, in_per_group)
        expanded = per_group.expand(groups, out_channels // groups, in_per_group)
        expanded = expanded.reshape(out_channels, in_per_group, *([1] * (weight.dim() - 2)))
        return expanded.expand_as(weight).to(weight.device)
    if weight.dim() == 2 and weight.shape[1] == statistic.numel():
        return statistic.reshape(1, -1).expand_as(weight).to(weight.device)
    raise UserError(f"cannot relate input activations of {type(module).__name__} to its weight")


def input_activation_importance(
    model: nn.Module,
    names: Sequence[str],
    batches: Sequence[Batch],
    norm: str = "l1",
    train: bool = False,
) -> dict[str, torch.Tensor]:
    """Input statistic broadcast to every named weight (``module.weight`` names only);
    ``norm`` and ``train`` as in :func:`input_channel_statistic`."""
    modules = dict(model.named_modules())
    owners = {name: name.rpartition(".")[0] for name in names}
    supported = [
        owner
        for name, owner in owners.items()
        if name.endswith(".weight")
        and isinstance(modules[owner], (nn.Linear, nn.modules.conv._ConvNd))
    ]
    stats = input_channel_statistic(model, sorted(set(supported)), batches, norm, train)
    out = {}
    for name, owner in owners.items():
        if owner in stats:
            out[name] = broadcast_input_statistic(modules[owner], stats[owner])
        else:
            out[name] = torch.ones_like(dict(model.named_parameters())[name])
    return out


def _kept(masks: Masks) -> int:
    return sum(int(mask.sum()) for mask in masks.values())


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (weights and buffers)."""
    return copy.deepcopy(model)

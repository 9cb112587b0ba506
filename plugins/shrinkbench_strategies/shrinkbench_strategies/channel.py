"""Structured baselines: remove whole output channels (filters) by their norm.

A channel's score is the L1 or L2 norm of its weights (Li et al. 2017),
divided by the number of its weights (L1) or its square root (L2) so that
channels of differently sized layers compare fairly in the global variant.

When the model can be traced (the runner passes the input shape), channels are
*tied* channels (:mod:`shrinkbench_core.pruning.structured`): the output
channels that must go together, such as one channel of a residual stage.
Removing one also removes the matching input channels of every consumer and
its bias and batch-norm entries; the strategies count all of those, so the
achieved compression of the completed masks (what the runner applies and
reports) is at least the requested one and exceeds it by less than one tied
channel. Otherwise each layer's output channels are scored on their own and
only their rows are counted. Every layer (or tied group) keeps a channel.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from shrinkbench_core.errors import CompressionError, UserError
from shrinkbench_core.pruning import LayerStrategy, Masks, Strategy
from shrinkbench_core.pruning.channels.selection import Unit, removal_plan
from shrinkbench_core.pruning.structured import (
    ChannelAnalysis,
    ChannelGroup,
    TiedChannel,
    analyze_channels,
    channel_norms,
    mask_channels,
)
from shrinkbench_strategies.params import ChannelParameters, ChannelTaylorParameters


def channel_scores(weight: torch.Tensor, norm: str) -> torch.Tensor:
    """Size-normalized L1 or L2 norm of each output channel (dim 0) of ``weight``."""
    flat = weight.detach().reshape(weight.shape[0], -1).float()
    if norm == "l1":
        return flat.abs().mean(1)
    return flat.pow(2).mean(1).sqrt()


def channel_masks(weight: torch.Tensor, kept_channels: torch.Tensor) -> torch.Tensor:
    """Keep-mask of ``weight`` keeping the output channels flagged in ``kept_channels``."""
    shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
    return kept_channels.reshape(shape).expand_as(weight).clone()


Scorer = Callable[[ChannelGroup], Sequence[float]]
"""Score of every tied channel of a group (higher = more important)."""


class TiedChannels:
    """The prunable tied channels of a strategy's model, as scored removal units, with
    exact accounting.

    ``groups[g]`` lists the removal units (:func:`removal_plan`: single tied
    channels, bundles keeping a grouped convolution balanced, or with the strategy's
    ``grouped="groups"`` whole convolution groups) of one decision whose producers are
    all prunable, lowest score first; a decision with nothing else left keeps its best
    unit.
    """

    _STEPS = 1000  # resolution of the shared fraction of the uniform selection

    def __init__(self, strategy: Strategy, analysis: ChannelAnalysis, scorer: Scorer) -> None:
        self.strategy = strategy
        self.analysis = analysis
        params = dict(strategy.model.named_parameters())
        self.total = sum(p.numel() for p in params.values())
        self.alive = {name: p.detach() != 0 for name, p in params.items()}
        self.nonzero = sum(int(mask.sum()) for mask in self.alive.values())
        prunable = set(strategy.prunable)

        def candidates(group: ChannelGroup) -> list[int]:
            return [i for i in group.removable if set(group.channels[i].producers) <= prunable]

        grouped = getattr(strategy.options, "grouped", "channels")
        self.groups: list[list[Unit]] = removal_plan(
            analysis.groups(), scorer, grouped, candidates
        )

    def compression_without(self, channels: Sequence[TiedChannel]) -> float:
        """All parameters / nonzero ones once ``channels`` and all they feed are removed."""
        completed = self.analysis.complete(
            self.strategy.model, mask_channels(self.strategy.model, channels)
        )
        removed = sum(
            int((self.alive[name] & ~mask.to(self.alive[name].device)).sum())
            for name, mask in completed.items()
        )
        remaining = self.nonzero - removed
        return self.total / remaining if remaining else float("inf")

    def masks(self, channels: Sequence[TiedChannel]) -> Masks:
        """Keep-masks of the prunable parameters with ``channels`` removed."""
        prunable = set(self.strategy.prunable)
        masks = mask_channels(self.strategy.model, channels)
        return {n: m for n, m in masks.items() if n in prunable}

    def fewest_reaching(
        self, count: int, channels_for: Callable[[int], list[TiedChannel]]
    ) -> list[TiedChannel]:
        """The channels of the smallest ``k`` in ``0..count`` whose removal reaches the
        strategy's compression (``channels_for(k)`` must remove more as ``k`` grows)."""
        target = self.strategy.compression
        best = self.compression_without(channels_for(count))
        if best < target * (1 - 1e-12):
            raise CompressionError(
                f"{type(self.strategy).__name__} cannot reach compression {target:g} by "
                f"removing channels: removing every removable channel reaches {best:.4g}. "
                "Ask for at most that, or use an unstructured strategy."
            )
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            if self.compression_without(channels_for(middle)) >= target * (1 - 1e-12):
                high = middle
            else:
                low = middle + 1
        return channels_for(high)

    def global_order(self) -> list[TiedChannel]:
        """Channels of the fewest lowest-scored units across all groups reaching the target."""
        order = sorted(
            (unit.score, g, rank, unit)
            for g, units in enumerate(self.groups)
            for rank, unit in enumerate(units)
        )
        units = [entry[3] for entry in order]
        return self.fewest_reaching(
            len(units), lambda k: [c for unit in units[:k] for c in unit.channels]
        )

    def uniform(self) -> list[TiedChannel]:
        """The same share of every group's units (lowest first), the smallest share reaching
        the target (Torch-Pruning's ``pruning_ratio`` at equal compression)."""
        sizes = [len(units) for units in self.groups]

        def channels_for(step: int) -> list[TiedChannel]:
            share = step / self._STEPS
            return [
                channel
                for units, size in zip(self.groups, sizes, strict=True)
                for unit in units[: round(share * size)]
                for channel in unit.channels
            ]

        return self.fewest_reaching(self._STEPS, channels_for)


def norm_scorer(model: torch.nn.Module, norm: str) -> Scorer:
    """Size-normalized L1 or L2 norm of each tied channel over its producer rows."""
    power = 1.0 if norm == "l1" else 2.0
    params = dict(model.named_parameters())

    def score(group: ChannelGroup) -> list[float]:
        norms = channel_norms(model, group, power)
        sizes = [
            sum(len(rows) * params[name][0].numel() for name, rows in channel.producers.items())
            for channel in group.channels
        ]
        return [
            float(value) / max(size, 1) ** (1.0 / power)
            for value, size in zip(norms.tolist(), sizes, strict=True)
        ]

    return score


def analysis_input(strategy: Strategy) -> torch.Tensor:
    """One input to trace ``strategy``'s model with: the first calibration example (its
    dtype and shape are the data's), else zeros of ``input_shape``; zeros are token ids
    (index 0 of every embedding) when the model reads its input through an embedding."""
    first = next(strategy.model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    batches = strategy.calibration or []
    if batches and isinstance(batches[0][0], torch.Tensor):
        return batches[0][0][:1].to(device)
    assert strategy.input_shape is not None
    example = torch.zeros(1, *strategy.input_shape, device=device)
    if not _reads_through_embedding(strategy.model):
        return example
    return example.long()


def _reads_through_embedding(model: torch.nn.Module) -> bool:
    """Whether the first module ``model`` calls on its input is an ``nn.Embedding``
    (module order as registered: token embeddings come first in language models)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            return True
        if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            return False
    return False


def tied_channels(
    strategy: Strategy, scorer: str | Callable[[ChannelAnalysis], Scorer]
) -> TiedChannels | None:
    """The tied channels of ``strategy``'s model scored by ``scorer(analysis)`` (or by the
    ``"l1"``/``"l2"`` norm), or None when it cannot be traced (or has nothing prunable)."""
    if isinstance(scorer, str):
        norm = scorer
        scorer = lambda _: norm_scorer(strategy.model, norm)  # noqa: E731
    if strategy.input_shape is None:
        return None
    example = analysis_input(strategy)
    try:
        gqa = getattr(strategy.options, "gqa", "kv_groups")
        analysis = analyze_channels(strategy.model, example, gqa=gqa)
    except (UserError, RuntimeError, TypeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(
            f"{type(strategy).__name__}: channels of {type(strategy.model).__name__} cannot be "
            f"followed ({reason}); falling back to each layer's own output channels, which "
            "the shrinking step may not be able to remove",
            stacklevel=3,
        )
        return None
    plan = TiedChannels(strategy, analysis, scorer(analysis))
    return plan if plan.groups else None


class GlobalChannelNorm(Strategy):
    """Remove the lowest-norm output channels across all prunable layers."""

    Parameters = ChannelParameters

    def model_masks(self) -> Masks:
        plan = tied_channels(self, lambda _: norm_scorer(self.model, self.options.norm))
        if plan is None:
            return self._layer_channel_masks()
        return plan.masks(plan.uniform() if self.options.uniform else plan.global_order())

    def _layer_channel_masks(self) -> Masks:
        """Untraceable models: each layer's own output channels, counting only their rows."""
        scores = {n: channel_scores(p, self.options.norm) for n, p in self.params().items()}
        return per_layer_channel_masks(self, scores)


def per_layer_channel_masks(strategy: Strategy, scores: dict[str, torch.Tensor]) -> Masks:
    """Keep the highest-scored output channels of each prunable parameter, across layers,
    within the strategy's budget (only their rows counted); every layer keeps its best."""
    params = strategy.params()
    entries = []  # (score, channel size, layer, channel index)
    for name, p in params.items():
        size = p[0].numel()
        best = int(torch.argmax(scores[name]))
        for index, score in enumerate(scores[name].tolist()):
            forced = index == best  # every layer keeps at least one channel
            entries.append((float("inf") if forced else score, size, name, index))
    entries.sort(key=lambda e: (-e[0], list(params).index(e[2]), e[3]))
    kept = {name: torch.zeros(p.shape[0], dtype=torch.bool) for name, p in params.items()}
    budget = strategy.keep - sum(size for score, size, _, _ in entries if score == float("inf"))
    for score, size, name, index in entries:
        if score == float("inf"):
            kept[name][index] = True
        elif size <= budget:
            kept[name][index] = True
            budget -= size
        else:
            break
    return {name: channel_masks(p, kept[name].to(p.device)) for name, p in params.items()}


class LayerChannelNorm(LayerStrategy):
    """Remove the same fraction of lowest-norm output channels in every layer (tied group)."""

    Parameters = ChannelParameters

    def model_masks(self) -> Masks:
        plan = tied_channels(self, lambda _: norm_scorer(self.model, self.options.norm))
        if plan is None:
            return super().model_masks()
        return plan.masks(plan.uniform())

    def layer_masks(self, module_name, module) -> Masks:
        masks: Masks = {}
        for name, p in self.module_params(module_name).items():
            channels = p.shape[0]
            keep = max(1, int(self.fraction * channels))
            scores = channel_scores(p, self.options.norm)
            order = torch.sort(scores, descending=True, stable=True).indices[:keep]
            kept = torch.zeros(channels, dtype=torch.bool, device=p.device)
            kept[order] = True
            masks[name] = channel_masks(p, kept)
        return masks


class ChannelTaylor(Strategy):
    """Remove the tied channels with the lowest first-order Taylor importance (Molchanov
    et al. 2019): per calibration batch ``b``, ``(sum of g_b * w over the channel's producer
    rows and attached entries)^2``, averaged over batches; ranked across all groups (or the
    same share of every group with ``uniform``). Untraceable models: per-layer output
    channels, scored the same way over their rows."""

    Parameters = ChannelTaylorParameters

    def model_masks(self) -> Masks:
        batches = self._require_data()
        plan = tied_channels(self, lambda analysis: self._scorer(analysis, batches))
        if plan is None:
            return self._layer_masks(batches)
        return plan.masks(plan.uniform() if self.options.uniform else plan.global_order())

    def _scorer(self, analysis: ChannelAnalysis, batches) -> Scorer:
        names = sorted(
            {
                name
                for group in analysis.groups()
                for channel in group.channels
                for name in (*channel.producers, *channel.attached)
            }
        )
        row_sums = _row_products(self.model, names, batches)

        def score(group: ChannelGroup) -> list[float]:
            scores = []
            for channel in group.channels:
                total = 0.0
                for sums in row_sums:
                    value = sum(
                        float(sums[name][list(rows)].sum())
                        for name, rows in (*channel.producers.items(), *channel.attached.items())
                        if name in sums
                    )
                    total += value * value
                scores.append(total / max(len(row_sums), 1))
            return scores

        return score

    def _layer_masks(self, batches) -> Masks:
        """Untraceable models: per-layer output channels, Taylor-scored over their rows."""
        params = self.params()
        row_sums = _row_products(self.model, list(params), batches)
        scores = {
            name: sum(sums[name].pow(2) for sums in row_sums) / len(row_sums) for name in params
        }
        return per_layer_channel_masks(self, scores)


def _row_products(model: torch.nn.Module, names: Sequence[str], batches) -> list[dict]:
    """Per batch, for each named parameter, the sum of ``g * w`` over each dim-0 row."""
    from shrinkbench_strategies.taylor import per_batch_gradients

    params = dict(model.named_parameters())
    out = []
    for grads in per_batch_gradients(model, list(names), batches):
        out.append(
            {
                name: (grads[name] * params[name].detach()).reshape(params[name].shape[0], -1)
                .sum(1).double().cpu()
                for name in names
            }
        )  # fmt: skip
    return out

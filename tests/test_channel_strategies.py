"""Channel strategies on modern patterns: heads and MLP units scored, grouped convolutions
kept balanced, ``uniform=true`` (the same share of every group) and ``ChannelTaylor``."""

from __future__ import annotations

import pytest
import torch
from shrinkbench_strategies.channel import ChannelTaylor, GlobalChannelNorm, LayerChannelNorm
from test_structured_patterns import Encoder, Grouped
from test_structured_shrink import randomize
from torch import nn

from shrinkbench_core.config import PrunableRule
from shrinkbench_core.pruning.shrink import shrink_model
from shrinkbench_core.pruning.structured import analyze_channels


def removed_share(model, masks, example) -> dict[tuple[str, ...], float]:
    """Share of each tied group's channels whose producer rows are all masked."""
    shares = {}
    for group in analyze_channels(model, example).groups():
        gone = sum(
            all(not masks[n][list(rows)].any() for n, rows in c.producers.items() if n in masks)
            and all(n in masks for n in c.producers)
            for c in group.channels
        )
        shares[group.producers] = gone / group.size
    return shares


def test_heads_and_mlp_units_are_scored_and_removed_whole():
    model = randomize(Encoder())
    example = torch.randn(1, 5, 6)
    rule = PrunableRule(include=("*.in_proj_weight",))
    strategy = GlobalChannelNorm(model, 2, params={"uniform": True}, rule=rule,
                                 classifier="head", input_shape=(5, 6))  # fmt: skip
    masks = strategy.compute_masks()
    shares = removed_share(model, masks, example)
    assert shares[("attn.in_proj_weight",)] > 0 and shares[("mlp.0.weight",)] > 0
    heads = masks["attn.in_proj_weight"].reshape(3, 4, 4, 16)  # q/k/v, head, row, column
    alive = heads.any(dim=(2, 3))
    assert shares[("embed.weight", "attn.out_proj.weight", "mlp.2.weight")] > 0  # the stream
    assert (alive == alive[0]).all()  # a head keeps or loses its q, k and v rows together
    result = shrink_model(model, masks, example)
    assert result.model.attn.num_heads == int(alive[0].sum()) < 4


def test_grouped_convolution_stays_balanced_under_global_ranking():
    model = randomize(Grouped())
    example = torch.randn(1, 3, 8, 8)
    masks = GlobalChannelNorm(model, 2, classifier="head", input_shape=(3, 8, 8)).compute_masks()
    result = shrink_model(model, masks, example)
    assert result.unsupported == [] and result.model.grouped.in_channels < 16


@pytest.mark.parametrize("strategy", [GlobalChannelNorm, ChannelTaylor])
def test_uniform_removes_the_same_share_of_every_group(strategy):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    )  # fmt: skip
    example = torch.randn(1, 3, 8, 8)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,)))]
    pruner = strategy(model, 2, params={"uniform": True}, calibration=data,
                      classifier="8", input_shape=(3, 8, 8))  # fmt: skip
    shares = removed_share(model, pruner.compute_masks(), example)
    values = [shares[("0.weight",)], shares[("2.weight",)], shares[("4.weight",)]]
    assert max(values) - min(values) <= 1 / 8 + 1e-9 and min(values) > 0


def test_layer_channel_norm_is_uniform_too():
    model = randomize(Grouped())
    masks = LayerChannelNorm(model, 2, classifier="head", input_shape=(3, 8, 8)).compute_masks()
    shares = removed_share(model, masks, torch.randn(1, 3, 8, 8))
    assert abs(shares[("reduce.weight",)] - shares[("grouped.weight",)]) <= 0.25


def test_channel_taylor_ranks_by_loss_change_not_by_norm():
    """A channel with the largest weights that nothing downstream reads has zero Taylor
    importance: ChannelTaylor removes it first, the norm criterion keeps it."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip
    with torch.no_grad():
        model[0].weight[5] *= 50  # loud channel ...
        model[2].weight[:, 5] = 0  # ... that nothing reads
    data = [(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))) for _ in range(2)]
    kwargs = {"classifier": "6", "input_shape": (3, 8, 8), "calibration": data}
    taylor = ChannelTaylor(model, 1.1, **kwargs).compute_masks()
    norm = GlobalChannelNorm(model, 1.1, **kwargs).compute_masks()
    assert not taylor["0.weight"][5].any()
    assert "0.weight" not in norm or norm["0.weight"][5].all()


def test_channel_taylor_needs_calibration_data():
    from shrinkbench_core.errors import UserError

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(128, 2))
    with pytest.raises(UserError, match="calibration"):
        ChannelTaylor(model, 1.2, classifier="3", input_shape=(3, 4, 4)).compute_masks()


def test_channel_taylor_is_registered():
    from shrinkbench_strategies.plugin import strategy_specs

    spec = {s.name: s for s in strategy_specs()}["ChannelTaylor"]
    assert spec.needs_data and spec.structure == "channel"
    assert spec.parameters(uniform=True).uniform


def test_untraceable_model_falls_back_to_layer_channels_with_a_warning():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.b(self.a(x)) if x.sum() > 0 else self.b(self.a(-x))
            return self.fc(x.mean((2, 3)))

    model = DataDependent()
    strategy = GlobalChannelNorm(model, 1.5, classifier="fc", input_shape=(3, 4, 4))
    with pytest.warns(UserWarning, match="cannot trace DataDependent.*falling back"):
        masks = strategy.compute_masks()
    for mask in masks.values():  # whole output channels, kept or removed
        rows = mask.reshape(mask.shape[0], -1)
        assert (rows.all(1) | ~rows.any(1)).all()
    assert not all(mask.all() for mask in masks.values())


def test_channel_taylor_uniform_runs_end_to_end_and_reports_the_shrunk_model(tmp_path):
    """`-p strategy.uniform=true` and ChannelTaylor through the runner; the `structured`
    metric in metrics.json holds the shrunk sizes and the (empty) unsupported list."""
    import json

    from shrinkbench_core.cli import run_main

    args = [
        "--strategy", "ChannelTaylor", "--compression", "2", "--output", str(tmp_path),
        "-p", "strategy.uniform=true", "-p", "calibration_batches=2",
        "-p", "model.hidden_sizes=[64,64]", "-p", "dense.epochs=1", "-p", "finetune.epochs=0",
        "-p", "metrics=[size,structured]", "--quiet",
    ]  # fmt: skip
    assert run_main(args) == 0
    (run,) = (tmp_path / "runs").iterdir()
    pruned = json.loads((run / "metrics.json").read_text())["pruned"]
    structured = pruned.get("metrics", pruned)["structured"]
    assert structured["params_after"] < structured["params_before"] / 1.9
    assert structured["unsupported"] == [] and structured["unsupported_count"] == 0

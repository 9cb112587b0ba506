"""Whole groups of grouped convolutions (``grouped="groups"``, ResNeXt, RegNet): convolution
group ``g`` goes with its input and output channels, the convolution's ``groups`` shrinks,
and the shrunk model gives the masked model's outputs.

Parameter counts of the hand-built modules are worked out by hand in the comments.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_structured_shrink import assert_close, masked_copy, randomize, run
from torch import nn

from shrinkbench_core.pruning.channels.selection import (
    lowest_norm_channels,
    norm_scores,
    removal_plan,
)
from shrinkbench_core.pruning.shrink import shrink_model
from shrinkbench_core.pruning.structured import (
    analyze_channels,
    complete_channel_masks,
    mask_channels,
)

pytestmark = pytest.mark.usefixtures("single_thread")


class Chain(nn.Module):
    """conv (3 -> 8) -> BN -> grouped conv (8 -> 8, 4 groups of 2 in / 2 out) -> BN -> head,
    averaged over the image (class scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(3, 8, 1, bias=False)  # 24
        self.bn1 = nn.BatchNorm2d(8)  # 16
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)  # 8*2*9 = 144
        self.bn2 = nn.BatchNorm2d(8)  # 16
        self.head = nn.Conv2d(8, 5, 1)  # 40 + 5 = 45; total 245

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.grouped(F.relu(self.bn1(self.reduce(x))))))
        return self.head(x).mean((2, 3))


class Residual(nn.Module):
    """stem (3 -> 8) -> y; y + grouped(y) (4 groups): the grouped convolution's input block
    ``g`` and output block ``g`` are the same tied channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)  # 24 + 8 = 32
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)  # 144 + 8 = 152
        self.head = nn.Conv2d(8, 5, 1)  # 45; total 229

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        return self.head(F.relu(y + self.grouped(y)))


class TwoGrouped(nn.Module):
    """Two grouped convolutions in a row: the channels between them pass through both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.first = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.second = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.second(F.relu(self.first(F.relu(self.stem(x)))))))


def shrink_share(model: nn.Module, example, fresh, grouped: str, share: float = 0.5):
    """Remove ``share`` of every decision's units; check shrunk == masked on ``fresh``."""
    analysis = analyze_channels(model, example)
    masks = mask_channels(model, lowest_norm_channels(model, analysis.groups(), share, grouped))
    result = shrink_model(model, masks, example, analysis=analysis)
    completed = complete_channel_masks(model, masks, example, analysis=analysis)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))
    return result


def test_chain_loses_whole_groups_with_their_input_and_output_channels():
    model = randomize(Chain())
    with torch.no_grad():  # lowest scores: group 0 by its input block, group 3 by its outputs
        model.reduce.weight[0:2] *= 0.01
        model.grouped.weight[6:8] *= 0.01
    example = torch.randn(1, 3, 8, 8)
    analysis = analyze_channels(model, example)
    (units,) = removal_plan(analysis.groups(), norm_scores(model), "groups")
    assert len(units) == 3  # 4 convolution groups, the best one always kept
    assert all(len(unit.channels) == 4 for unit in units)  # 2 input + 2 output channels
    result = shrink_share(model, example, torch.randn(2, 3, 8, 8), "groups")
    shrunk = result.model
    assert result.unsupported == []
    # round(0.5 * 4) = 2 groups go: reduce 4*3 = 12, bn1 8, grouped 4*2*9 = 72, bn2 8,
    # head 5*4 + 5 = 25.
    assert result.params_before == 245 and result.params_after == 125
    assert (shrunk.grouped.groups, shrunk.grouped.in_channels, shrunk.grouped.out_channels) == (
        2, 4, 4,
    )  # fmt: skip
    kept = torch.cat([model.grouped.weight[2:4], model.grouped.weight[4:6]])  # groups 1, 2
    torch.testing.assert_close(shrunk.grouped.weight, kept)
    torch.testing.assert_close(shrunk.reduce.weight, model.reduce.weight[2:6])


def test_channels_mode_is_unchanged_and_keeps_every_group():
    model = randomize(Chain())
    result = shrink_share(model, torch.randn(1, 3, 8, 8), torch.randn(2, 3, 8, 8), "channels")
    # One channel of every group goes on each side: grouped 4*1*9 = 36, reduce 12, bn 8 + 8,
    # head 25.
    assert result.model.grouped.groups == 4 and result.params_after == 89


def test_residual_around_a_grouped_convolution_ties_its_input_and_output_groups():
    model = randomize(Residual())
    result = shrink_share(model, torch.randn(1, 3, 8, 8), torch.randn(2, 3, 8, 8), "groups")
    shrunk = result.model
    assert result.unsupported == []
    # stem 4*3 + 4 = 16, grouped 4*2*9 + 4 = 76, head 5*4 + 5 = 25
    assert result.params_before == 229 and result.params_after == 117
    assert (shrunk.stem.out_channels, shrunk.grouped.groups, shrunk.head.in_channels) == (4, 2, 4)


def test_channels_through_two_grouped_convolutions_keep_balanced_bundles():
    model = randomize(TwoGrouped())
    example, fresh = torch.randn(1, 3, 8, 8), torch.randn(2, 3, 8, 8)
    groups = analyze_channels(model, example).groups()
    scores = norm_scores(model)
    assert removal_plan(groups, scores, "groups") == removal_plan(groups, scores, "channels")
    result = shrink_share(model, example, fresh, "groups")
    assert result.unsupported == [] and result.model.first.groups == 4


def test_unknown_mode_is_an_error_naming_the_allowed_ones():
    model = Chain()
    groups = analyze_channels(model, torch.randn(1, 3, 8, 8)).groups()
    with pytest.raises(ValueError, match="channels, groups.*'whole'"):
        removal_plan(groups, norm_scores(model), "whole")


def grouped_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels
    }


@pytest.mark.parametrize(
    "build", [torchvision.models.resnext50_32x4d, torchvision.models.regnet_x_400mf],
    ids=["resnext50_32x4d", "regnet_x_400mf"],
)  # fmt: skip
def test_torchvision_grouped_models_lose_whole_groups(build):
    model = randomize(build(num_classes=10))
    before = grouped_convs(model)
    result = shrink_share(model, torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32), "groups")
    assert result.unsupported == [] and result.compression > 2.5
    after = dict(result.model.named_modules())
    for name, conv in before.items():
        shrunk = after[name]
        # Whole groups went: the width of each group is unchanged, half the groups remain.
        assert shrunk.in_channels // shrunk.groups == conv.in_channels // conv.groups
        assert shrunk.out_channels // shrunk.groups == conv.out_channels // conv.groups
        assert shrunk.groups == conv.groups - round(conv.groups / 2)


# -- through the strategies, the API and the CLI -------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "options"),
    [("GlobalChannelNorm", {}), ("GlobalChannelNorm", {"uniform": True}),
     ("LayerChannelNorm", {}), ("ChannelTaylor", {"uniform": True})],
)  # fmt: skip
def test_strategies_remove_whole_groups(strategy, options):
    import shrinkbench_core as sb

    model = randomize(Chain())
    example = torch.randn(1, 3, 8, 8)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,)))]
    pruned = sb.prune(model, strategy, 1.6, example_input=example, calibration=data,
                      classifier="head", grouped="groups", inplace=False, **options)  # fmt: skip
    result = shrink_model(model, pruned.masks, example)
    grouped = result.model.grouped
    assert result.unsupported == [] and grouped.groups < 4
    assert (grouped.in_channels // grouped.groups, grouped.out_channels // grouped.groups) == (2, 2)


def test_api_rejects_an_unknown_mode_with_the_allowed_ones():
    import shrinkbench_core as sb
    from shrinkbench_core.errors import UserError

    with pytest.raises(UserError, match="grouped.*'channels' or 'groups'"):
        sb.prune(Chain(), "GlobalChannelNorm", 2, example_input=torch.randn(1, 3, 8, 8),
                 classifier="head", grouped="whole")  # fmt: skip


def test_default_mode_stays_out_of_resolved_params():
    """Existing configs resolve (and hash) as before: the default is not written."""
    from shrinkbench_strategies.plugin import strategy_specs

    specs = {spec.name: spec for spec in strategy_specs()}
    channel, taylor = specs["GlobalChannelNorm"], specs["ChannelTaylor"]
    assert channel.parameters().model_dump(mode="json") == {"norm": "l1", "uniform": False}
    assert taylor.parameters().model_dump(mode="json") == {"uniform": False}
    assert channel.parameters(grouped="groups").model_dump(mode="json")["grouped"] == "groups"
    assert channel.parameters(**channel.parameters().model_dump()).grouped == "channels"


def test_cli_rejects_an_unknown_mode_and_runs_with_groups(tmp_path, capsys):
    import json

    from shrinkbench_core.cli import run_main

    base = [
        "--strategy", "GlobalChannelNorm", "--compression", "2", "--output", str(tmp_path),
        "-p", "model.hidden_sizes=[32]", "-p", "dense.epochs=0", "-p", "finetune.epochs=0",
        "-p", "metrics=[size]", "--quiet",
    ]  # fmt: skip
    assert run_main([*base, "-p", "strategy.grouped=whole"]) == 2
    error = capsys.readouterr().err
    assert "strategy.params.grouped" in error and "'channels' or 'groups'" in error
    assert "Traceback" not in error and not (tmp_path / "runs").exists()
    assert run_main([*base, "-p", "strategy.grouped=groups"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["strategy"]["params"]["grouped"] == "groups"

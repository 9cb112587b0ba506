"""Structured pruning that really shrinks: channel analysis, mask completion, physical removal.

Every architecture of the issue is pruned at several channel sparsities by
lowest-L1 tied channels, then shrunk; the shrunk model must give the masked
model's outputs on fresh inputs, and hold exactly as many parameters as the
masked model has nonzero ones. Weights and batch-norm statistics are random and
nonzero so that neither check can pass by accident.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from shrinkbench_core.errors import MaskError
from shrinkbench_core.pruning.masks import apply_masks
from shrinkbench_core.pruning.shrink import resize_like, shrink_model, structured_speedups
from shrinkbench_core.pruning.structured import (
    ChannelGroup,
    TraceError,
    analyze_channels,
    channel_groups,
    channel_norms,
    complete_channel_masks,
    mask_channels,
    pad_nodes,
)

cifar_models = pytest.importorskip("shrinkbench_cifar.models")


# -- helpers ---------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("single_thread")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Nonzero random weights and non-trivial batch-norm statistics, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            magnitude = torch.rand(param.shape, generator=generator) * 0.9 + 0.1
            sign = torch.randint(0, 2, param.shape, generator=generator) * 2 - 1
            scale = 1.0 / max(param[0].numel(), 1) ** 0.5 if param.dim() > 1 else 1.0
            param.copy_(magnitude * sign * scale)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def prune_lowest(
    model: nn.Module, groups: list[ChannelGroup], fraction: float, rows_only: bool = False
) -> dict:
    """Channel masks removing ``fraction`` of the removable tied channels of each group.

    With ``rows_only`` only the producers' weight rows are masked, as a plain
    filter-pruning strategy would; :func:`complete_channel_masks` does the rest.
    """
    chosen = []
    for group in groups:
        removable = group.removable
        count = min(round(fraction * len(removable)), len(removable) - 1)
        if count <= 0:
            continue
        norms = channel_norms(model, group)[removable]
        order = torch.argsort(norms, stable=True)[:count].tolist()
        chosen += [group.channels[removable[i]] for i in order]
    if not rows_only:
        return mask_channels(model, chosen)
    params = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    for channel in chosen:
        for name, rows in channel.producers.items():
            masks.setdefault(name, torch.ones_like(params[name], dtype=torch.bool))[list(rows)] = (
                False
            )
    return masks


def masked_copy(model: nn.Module, masks: dict) -> nn.Module:
    masked = copy.deepcopy(model)
    apply_masks(masked, masks)
    return masked


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def assert_close(expected: torch.Tensor, actual: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


class TinyVGG(nn.Module):
    """Conv-BN-ReLU stages, flatten of a 4x4 map into Linear, BatchNorm1d, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(32 * 4 * 4, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


ARCHITECTURES = {
    "cifar_resnet20": (lambda: cifar_models.resnet20(num_classes=10), 32),
    "cifar_vgg16_bn": (lambda: cifar_models.vgg16_bn(num_classes=10), 32),
    "tiny_vgg": (TinyVGG, 16),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), 32),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None, num_classes=10), 32),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10), 32),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None, num_classes=10), 32),
}
SPARSITIES = (0.25, 0.5, 0.75)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def architecture(request):
    build, size = ARCHITECTURES[request.param]
    torch.manual_seed(0)
    model = randomize(build())
    example = torch.randn(1, 3, size, size)
    analysis = analyze_channels(model, example)
    return request.param, model, example, analysis, analysis.groups()


# -- equivalence and size across architectures ---------------------------------------------


def structured_count(module: nn.Module, layers: list[str], nonzero: bool) -> int:
    """Parameters (or nonzero ones) of the convolution, linear and batch-norm ``layers``."""
    prefixes = tuple(f"{layer}." for layer in layers)
    return sum(
        int(torch.count_nonzero(p)) if nonzero else p.numel()
        for name, p in module.named_parameters()
        if name.startswith(prefixes)
    )


def test_shrunk_model_equals_masked_model_and_keeps_only_nonzero_parameters(architecture):
    name, model, example, analysis, groups = architecture
    fresh = torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = []
    for fraction in SPARSITIES:
        # Weight rows only: completion must find every bias, batch norm and consumer.
        masks = prune_lowest(model, groups, fraction, rows_only=True)
        saved_masks = {k: v.clone() for k, v in masks.items()}
        completed = complete_channel_masks(model, masks, example, analysis=analysis)
        masked = masked_copy(model, completed)
        # verify=False: the check below is stronger (fresh inputs, a batch of 3).
        result = shrink_model(model, masks, example, analysis=analysis, verify=False)

        assert_close(run(masked, fresh), run(result.model, fresh))
        assert type(result.model) is type(model)
        assert result.unsupported == []
        shrunk_count = structured_count(result.model, list(analysis.layers), nonzero=False)
        assert shrunk_count == structured_count(masked, list(analysis.layers), nonzero=True)
        assert shrunk_count < structured_count(model, list(analysis.layers), nonzero=False)
        assert all(torch.equal(saved_masks[k], v) for k, v in masks.items()), "masks modified"
        sizes.append(result.params_after)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "model modified"
    assert sizes == sorted(sizes, reverse=True), "more sparsity must give a smaller model"


def test_shrink_verifies_its_output_on_the_example_input(architecture):
    _, model, example, analysis, groups = architecture
    result = shrink_model(model, prune_lowest(model, groups, 0.5), example, analysis=analysis)
    assert result.max_abs_diff is not None
    assert result.max_abs_diff <= 1e-4 * max(1.0, float(run(result.model, example).abs().max()))


# -- graph analysis -------------------------------------------------------------------------


def test_residual_channels_are_tied_across_a_stage():
    model = torchvision.models.resnet18(weights=None)
    groups = channel_groups(model, torch.randn(1, 3, 32, 32))
    stage1 = next(g for g in groups if "layer1.0.conv2.weight" in g.producers)
    assert set(stage1.producers) == {
        "conv1.weight",
        "layer1.0.conv2.weight",
        "layer1.1.conv2.weight",
    }
    assert stage1.size == 64 and len(stage1.removable) == 64
    channel = stage1.channels[5]
    assert channel.producers == {name: (5,) for name in stage1.producers}
    assert set(channel.consumers) == {
        "layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight",
        "layer2.0.downsample.0.weight",
    }  # fmt: skip
    assert channel.attached["bn1.weight"] == (5,) and channel.attached["layer1.1.bn2.bias"] == (5,)
    inner = next(g for g in groups if g.producers == ("layer1.0.conv1.weight",))
    assert inner.channels[3].consumers == {"layer1.0.conv2.weight": (3,)}


def test_depthwise_convolution_ties_its_input_and_output_channels():
    model = torchvision.models.mobilenet_v2(weights=None)
    groups = channel_groups(model, torch.randn(1, 3, 32, 32))
    expanded = next(g for g in groups if "features.2.conv.0.0.weight" in g.producers)
    assert set(expanded.producers) == {"features.2.conv.0.0.weight", "features.2.conv.1.0.weight"}
    assert expanded.channels[7].consumers == {"features.2.conv.2.weight": (7,)}
    assert expanded.channels[7].attached["features.2.conv.1.1.weight"] == (7,)


def test_concatenation_and_flatten_map_channels_to_their_consumer_columns():
    model = torchvision.models.densenet121(weights=None)
    groups = channel_groups(model, torch.randn(1, 3, 32, 32))
    stem = next(g for g in groups if g.producers == ("features.conv0.weight",))
    # The stem's channel 3 is read by every dense layer of block 1 at position 3.
    consumers = stem.channels[3].consumers
    assert consumers["features.denseblock1.denselayer1.conv1.weight"] == (3,)
    assert consumers["features.denseblock1.denselayer6.conv1.weight"] == (3,)
    assert stem.channels[3].attached["features.denseblock1.denselayer6.norm1.weight"] == (3,)
    layer = next(
        g for g in groups if g.producers == ("features.denseblock1.denselayer1.conv2.weight",)
    )
    assert layer.channels[0].consumers["features.denseblock1.denselayer2.conv1.weight"] == (64,)
    # TinyVGG flattens a 4x4 map: channel c feeds linear columns 16c .. 16c+15.
    tiny = channel_groups(TinyVGG(), torch.randn(1, 3, 16, 16))
    second = next(g for g in tiny if g.producers == ("features.4.weight",))
    assert second.channels[2].consumers == {"classifier.0.weight": tuple(range(32, 48))}


def test_option_a_shortcut_pad_shifts_channels_and_its_zero_channels_can_go():
    model = randomize(cifar_models.resnet20())
    example = torch.randn(1, 3, 32, 32)
    analysis = analyze_channels(model, example)
    groups = analysis.groups()
    assert analysis.unsupported() == []
    stage1 = next(g for g in groups if "layer1.0.conv2.weight" in g.producers)
    # Stage-1 channel c continues as channel c+8 of stage 2 and c+8+16 of stage 3.
    channel = stage1.channels[2]
    assert channel.producers["layer2.1.conv2.weight"] == (10,)
    assert channel.producers["layer3.2.conv2.weight"] == (26,)
    # Channels 0-15 and 48-63 of stage 3 are the shortcut's zero padding plus conv rows.
    padded = next(g for g in groups if g.producers[0] == "layer3.0.conv2.weight")
    assert padded.size == 32 and len(padded.removable) == 32
    assert padded.channels[16].producers["layer3.1.conv2.weight"] == (48,)

    masks = mask_channels(model, padded.channels[:4] + padded.channels[16:18])
    result = shrink_model(model, masks, example, analysis=analysis)
    assert result.rewritten == ["layer3.0.shortcut"]
    shortcut = result.model.layer3[0].shortcut
    assert isinstance(shortcut, torch.fx.GraphModule)
    assert [node.args[1] for node in pad_nodes(shortcut)] == [(0, 0, 0, 0, 12, 14)]
    assert result.model.layer3[1].conv1.in_channels == 58
    fresh = torch.randn(2, 3, 32, 32)
    completed = complete_channel_masks(model, masks, example, analysis=analysis)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))


def test_channel_pad_in_the_models_own_forward_is_reported_and_kept():
    class PadsItself(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.residual = nn.Conv2d(4, 6, 3, padding=1)
            self.head = nn.Conv2d(6, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.head(self.residual(y) + F.pad(y, (0, 0, 0, 0, 1, 1)))

    model = randomize(PadsItself())
    example = torch.randn(1, 3, 8, 8)
    analysis = analyze_channels(model, example)
    [report] = analysis.unsupported()
    assert report.operation == "pad" and report.layers == ("residual",)
    groups = {g.producers: g for g in analysis.groups()}
    conv = groups[("conv.weight", "residual.weight")]
    assert len(conv.removable) == 4  # shifted through the pad, still removable
    assert groups[("residual.weight",)].removable == []  # tied to the padding: kept
    masks = mask_channels(model, conv.channels[1:3])
    result = shrink_model(model, masks, example, analysis=analysis)
    assert (result.model.conv.out_channels, result.model.residual.out_channels) == (2, 4)
    assert result.model.head.in_channels == 4 and result.rewritten == []


# -- tied channels pruned in only some producers ------------------------------------------


def test_residual_channel_masked_in_one_producer_only_is_kept():
    model = randomize(torchvision.models.resnet18(weights=None, num_classes=10))
    example = torch.randn(1, 3, 32, 32)
    masks = {"layer1.0.conv2.weight": torch.ones(64, 64, 3, 3, dtype=torch.bool)}
    masks["layer1.0.conv2.weight"][:10] = False
    result = shrink_model(model, masks, example)
    assert result.params_after == result.params_before
    completed = complete_channel_masks(model, masks, example)
    # Its private batch norm is zeroed, so the masked model is a real channel mask.
    assert not completed["layer1.0.bn2.weight"][:10].any()
    assert completed["layer1.0.bn2.weight"][10:].all()
    assert "layer1.1.conv1.weight" not in completed  # consumers keep reading the stage
    fresh = torch.randn(2, 3, 32, 32)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))


def test_completion_masks_bias_and_following_batch_norm():
    model = TinyVGG()
    masks = {"features.0.weight": torch.ones(16, 3, 3, 3, dtype=torch.bool)}
    masks["features.0.weight"][[1, 4]] = False
    completed = complete_channel_masks(model, masks, torch.randn(1, 3, 16, 16))
    for name in ("features.0.bias", "features.1.weight", "features.1.bias"):
        assert completed[name].tolist() == [i not in (1, 4) for i in range(16)]
    assert not completed["features.4.weight"][:, [1, 4]].any()
    assert completed["features.4.weight"][:, [0, 2, 3]].all()


# -- grouped convolutions ---------------------------------------------------------------------


class GroupedNet(nn.Module):
    """A 1x1 conv feeding a grouped 3x3 conv (4 groups), like a ResNeXt bottleneck."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(3, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 8, 3, padding=1, groups=4)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.grouped(F.relu(self.bn(self.reduce(x))))))


def test_grouped_conv_shrinks_when_every_group_loses_the_same_channels():
    model = randomize(GroupedNet())
    example = torch.randn(1, 3, 8, 8)
    groups = {g.producers: g for g in channel_groups(model, example)}
    reduce, grouped = groups[("reduce.weight",)], groups[("grouped.weight",)]
    # One input channel of each group of 4, one output channel of each group of 2.
    chosen = [reduce.channels[i] for i in (0, 5, 10, 15)] + [
        grouped.channels[i] for i in (0, 2, 4, 6)
    ]
    result = shrink_model(model, mask_channels(model, chosen), example)
    assert (result.model.grouped.in_channels, result.model.grouped.out_channels) == (12, 4)
    assert result.model.grouped.groups == 4 and result.unsupported == []
    fresh = torch.randn(2, 3, 8, 8)
    completed = complete_channel_masks(model, mask_channels(model, chosen), example)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))


def test_grouped_conv_with_uneven_groups_is_reported_and_kept():
    model = randomize(GroupedNet())
    example = torch.randn(1, 3, 8, 8)
    reduce = next(g for g in channel_groups(model, example) if g.producers == ("reduce.weight",))
    masks = mask_channels(model, [reduce.channels[0], reduce.channels[1]])  # both in group 0
    result = shrink_model(model, masks, example)
    assert result.model.grouped.in_channels == 16 and result.model.reduce.out_channels == 16
    assert [u.node for u in result.unsupported] == ["grouped"]
    fresh = torch.randn(2, 3, 8, 8)
    completed = complete_channel_masks(model, masks, example)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))


# -- unsupported patterns ---------------------------------------------------------------------


class Unusual(nn.Module):
    """One producer per unsupported pattern, each feeding something the analysis cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.sliced = nn.Conv2d(8, 8, 3, padding=1)
        self.grouped_norm = nn.Conv2d(8, 8, 1)
        self.norm = nn.GroupNorm(2, 8)
        self.free = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gated(x)
        x = x * torch.softmax(self.gate(x), 1)  # attention over channels mixes them
        y = self.sliced(x)
        x = torch.cat([y[:, :4], y[:, 4:]], 1)  # channel slicing by constants
        x = self.free(self.norm(self.grouped_norm(x)))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(x.view(-1, 8 * 4 * 4))  # hard-coded flattened size


def test_unsupported_patterns_are_reported_and_left_intact():
    model = randomize(Unusual())
    example = torch.randn(1, 3, 8, 8)
    analysis = analyze_channels(model, example)
    reasons = {u.operation: u for u in analysis.unsupported()}
    assert "gated" in reasons["softmax"].layers and "gate" in reasons["softmax"].layers
    assert "sliced" in reasons["getitem"].layers
    assert reasons["GroupNorm"].layers == ("grouped_norm",)
    assert "hard-coded size 128" in reasons["view"].reason and reasons["view"].layers == ("free",)
    assert all(not channel.removable for g in analysis.groups() for channel in g.channels)
    # Ask to remove half of every layer's channels: nothing can go, nothing breaks.
    masks = {
        f"{name}.weight": torch.arange(m.weight.shape[0]).reshape(-1, *[1] * (m.weight.dim() - 1))
        .expand_as(m.weight) % 2 == 0
        for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
    }  # fmt: skip
    result = shrink_model(model, masks, example)
    assert result.params_after == result.params_before
    assert {u.node for u in result.unsupported} >= {"softmax", "getitem", "norm", "view"}
    fresh = torch.randn(2, 3, 8, 8)
    completed = complete_channel_masks(model, masks, example)
    assert_close(run(masked_copy(model, completed), fresh), run(result.model, fresh))


def test_activation_that_turns_zero_into_nonzero_is_reported():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Hardtanh(0.1, 2.0), nn.Conv2d(4, 2, 1))
    [report] = analyze_channels(model, torch.randn(1, 3, 4, 4)).unsupported()
    assert report.operation == "Hardtanh" and report.layers == ("0",)
    relu6 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU6(), nn.Conv2d(4, 2, 1))
    assert analyze_channels(relu6, torch.randn(1, 3, 4, 4)).unsupported() == []


def test_untraceable_model_raises_trace_error():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(TraceError, match="cannot trace DataDependent"):
        channel_groups(DataDependent(), torch.randn(1, 3, 4, 4))


def test_masks_that_do_not_fit_are_rejected():
    with pytest.raises(MaskError):
        shrink_model(TinyVGG(), {"nope.weight": torch.ones(3, dtype=torch.bool)},
                     torch.randn(1, 3, 16, 16))  # fmt: skip


# -- saving, loading, metrics ---------------------------------------------------------------


def test_shrunk_model_saves_and_loads_like_a_normal_model():
    model = randomize(cifar_models.resnet20())
    example = torch.randn(1, 3, 32, 32)
    analysis = analyze_channels(model, example)
    masks = prune_lowest(model, analysis.groups(), 0.5)
    result = shrink_model(model, masks, example, analysis=analysis)
    assert result.rewritten == ["layer2.0.shortcut", "layer3.0.shortcut"]
    fresh = torch.randn(2, 3, 32, 32)
    expected = run(result.model, fresh)

    buffer = io.BytesIO()
    torch.save(result.model, buffer)
    buffer.seek(0)
    assert torch.equal(run(torch.load(buffer, weights_only=False), fresh), expected)

    rebuilt = resize_like(cifar_models.resnet20(), result.channel_config)
    buffer = io.BytesIO()
    torch.save(result.model.state_dict(), buffer)
    buffer.seek(0)
    rebuilt.load_state_dict(torch.load(buffer))
    assert torch.equal(run(rebuilt, fresh), expected)

    # The remaining masks fit the shrunk model, so fine-tuning can keep applying them.
    apply_masks(result.model, result.masks)
    assert torch.equal(run(result.model, fresh), expected)


def test_structured_speedups_report_theory_and_measurements_side_by_side():
    model = randomize(TinyVGG())
    batch = torch.randn(4, 3, 16, 16)
    masks = prune_lowest(model, channel_groups(model, batch[:1]), 0.5)
    report = structured_speedups(model, masks, batch, repeats=2, warmup=1)
    for key in ("theoretical_speedup", "masked_speedup", "shrunk_speedup"):
        assert report[key] > 0
    assert report["theoretical_speedup"] == pytest.approx(report["shrunk_theoretical_speedup"])
    assert report["theoretical_speedup"] > 2.0
    assert report["shrunk_macs"] == report["masked_macs"] < report["dense_macs"]
    assert report["params_after"] < report["params_before"] and report["batch_size"] == 4

"""Size and FLOPs metrics against hand-computed expectations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torchvision.models import resnet18, vit_b_16

from shrinkbench_core.builtin.metrics import FlopsParameters, SizeParameters, metric_specs
from shrinkbench_core.errors import MaskError
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.metrics import flops as flops_metric
from shrinkbench_core.metrics import size as size_metric
from shrinkbench_core.metrics.flops import count_flops
from shrinkbench_core.metrics.size import count_parameters, sparse_storage_bytes


def prune_half(model: nn.Module, names: list[str], seed: int = 0) -> None:
    """Zero exactly half of the entries of each named parameter (random positions).

    Zeros already there (zero-initialized heads, rare exact zeros of a random
    init) are replaced first, so exactly half of each tensor is zero after.
    """
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            flat = params[name].view(-1)
            assert flat.numel() % 2 == 0, name
            flat[flat == 0] = 0.01
            flat[torch.randperm(flat.numel(), generator=generator)[: flat.numel() // 2]] = 0


def conv_weight_names(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in exclude
    ]


# -- single layers, by hand ------------------------------------------------

# (layer, input shape, MACs for the whole input by hand)
CONVOLUTIONS = {
    # depthwise: every output position does 3x3 MACs per channel; 14x14 kept by padding 1
    "depthwise": (nn.Conv2d(32, 32, 3, padding=1, groups=32), (1, 32, 14, 14), 14 * 14 * 32 * 9),
    # grouped: each of 64 outputs sees 32/4 = 8 input channels; 16 -> 14 without padding
    "grouped": (nn.Conv2d(32, 64, 3, groups=4), (1, 32, 16, 16), 14 * 14 * 64 * 8 * 9),
    # strided: (15 + 2*1 - 3) // 2 + 1 = 8 outputs per side
    "strided": (nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 15, 15), 8 * 8 * 8 * 3 * 9),
    # dilated: effective kernel 5, 16 -> 12
    "dilated": (nn.Conv2d(4, 6, 3, dilation=2), (1, 4, 16, 16), 12 * 12 * 6 * 4 * 9),
    # padded: 10 + 2*3 - 3 + 1 = 14 outputs per side (padding positions are multiplied too)
    "padded": (nn.Conv2d(2, 5, 3, padding=3), (1, 2, 10, 10), 14 * 14 * 5 * 2 * 9),
    # asymmetric padding/stride in 1d: (50 + 2*2 - 5) // 3 + 1 = 17
    "conv1d": (nn.Conv1d(4, 8, 5, stride=3, padding=2), (2, 4, 50), 2 * 17 * 8 * 4 * 5),
    # transposed: every input position scatters Cin x Cout/groups x kernel MACs
    "transposed": (
        nn.ConvTranspose2d(8, 4, 3, stride=2, groups=2), (1, 8, 7, 7), 7 * 7 * 8 * 2 * 9
    ),
}


@pytest.mark.parametrize("case", sorted(CONVOLUTIONS))
def test_convolution_macs_match_hand_count(case):
    layer, shape, expected = CONVOLUTIONS[case]
    report = count_flops(layer, torch.randn(shape))
    assert report.macs == expected
    assert report.nonzero_macs == expected
    assert report.macs_per_example == expected / shape[0]
    (row,) = report.layers
    assert (row.parameter, row.op, row.calls) == ("weight", "convolution", 1)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_tokens_counts_every_token(bias):
    # (batch 2, tokens 5, features 10) -> 7: 2 * 5 * 10 * 7 MACs; bias additions are not MACs
    report = count_flops(nn.Linear(10, 7, bias=bias), torch.randn(2, 5, 10))
    assert report.macs == 700
    assert report.macs_per_example == 350
    assert report.batch_size == 2


def test_linear_on_non_contiguous_tokens():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 3)

        def forward(self, x):
            return self.proj(x.transpose(1, 2))  # (B, 6, T) -> (B, T, 6)

    report = count_flops(Transposed(), torch.randn(4, 6, 9))
    assert report.macs == 4 * 9 * 6 * 3
    assert [row.parameter for row in report.layers] == ["proj.weight"]


def test_multihead_attention_counts_projections_and_both_products():
    embed, heads, tokens = 16, 4, 10
    attention = nn.MultiheadAttention(embed, heads, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    fastpath = torch.backends.mha.get_fastpath_enabled()
    report = count_flops(SelfAttention(), torch.randn(1, tokens, embed))
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    by_parameter = {row.parameter: row.macs for row in report.layers}
    assert by_parameter["attention.in_proj_weight"] == tokens * embed * 3 * embed
    assert by_parameter["attention.out_proj.weight"] == tokens * embed * embed
    # Q K^T and A V: 2 x heads x tokens x tokens x head_dim, attributed to no weight
    assert by_parameter[None] == 2 * heads * tokens * tokens * (embed // heads)
    assert report.uncounted_ops == ()


def test_scaled_dot_product_attention_counted():
    class Attention(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q)

    report = count_flops(Attention(), torch.randn(3, 2, 5, 4))  # B, H, L, D
    assert report.macs == 2 * 3 * 2 * 5 * 5 * 4
    assert report.layers[0].op == "attention"


def test_matmul_and_einsum_without_weights():
    class Products(nn.Module):
        def forward(self, x):
            return torch.einsum("bij,bjk->bik", x, x.transpose(1, 2)) + x @ x.transpose(1, 2)

    report = count_flops(Products(), torch.randn(2, 3, 4))
    assert report.macs == 2 * (2 * 3 * 4 * 3)
    assert report.theoretical_speedup == 1.0


def test_product_without_a_formula_is_reported_not_dropped():
    attention = nn.MultiheadAttention(8, 2, batch_first=True)

    class FusedAttention(nn.Module):
        def forward(self, x):  # the fused kernel, called directly: no formula for it
            return torch._native_multi_head_attention(
                x, x, x, 8, 2, attention.in_proj_weight, attention.in_proj_bias,
                attention.out_proj.weight, attention.out_proj.bias, need_weights=False,
            )[0]

    report = count_flops(FusedAttention(), torch.randn(1, 3, 8))
    assert report.uncounted_ops == ("aten._native_multi_head_attention x1",)
    assert report.macs == 0


def test_weight_used_twice_counts_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(8, 8)

        def forward(self, x):
            return self.layer(self.layer(x))

    report = count_flops(Twice(), torch.randn(1, 8))
    (row,) = report.layers
    assert (row.layer, row.calls, row.macs) == ("layer", 2, 2 * 64)


def test_per_layer_rows_name_layers_in_order():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    report = count_flops(model, torch.randn(1, 3, 4, 4))
    rows = [(row.layer, row.parameter, row.op, row.macs) for row in report.layers]
    assert rows == [
        ("0", "0.weight", "convolution", 16 * 4 * 27),
        ("3", "3.weight", "matmul", 64 * 5),
    ]
    assert report.macs == 16 * 4 * 27 + 64 * 5


def test_meta_device_counts_dense_without_weights():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
        report = count_flops(model, torch.empty(1, 3, 8, 8))
    assert report.macs == 36 * 8 * 27 + 288 * 10
    assert report.nonzero_macs == report.macs


def test_training_flag_restored():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.train()
    count_flops(model, torch.randn(1, 3))
    assert model.training
    model.eval()
    count_flops(model, torch.randn(1, 3))
    assert not model.training


# -- sparsity ----------------------------------------------------------------


def test_half_sparse_weights_give_speedup_two():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2),
        nn.Flatten(), nn.Linear(8 * 6 * 6, 10),
    )
    prune_half(model, ["0.weight", "2.weight", "4.weight"])
    report = count_flops(model, torch.randn(1, 3, 8, 8))
    assert report.nonzero_macs * 2 == report.macs
    assert report.theoretical_speedup == 2.0
    assert all(row.weight_density == 0.5 for row in report.layers)


def test_resnet18_half_sparse_except_classifier_is_accounted_exactly():
    torch.manual_seed(0)
    model = resnet18()
    example = torch.randn(1, 3, 112, 112)
    dense = count_flops(model, example)
    prune_half(model, conv_weight_names(model, exclude=("fc",)))
    report = count_flops(model, example)
    classifier_macs = 512 * 1000  # fc stays dense
    assert report.macs == dense.macs
    assert report.nonzero_macs == (dense.macs - classifier_macs) // 2 + classifier_macs
    assert report.theoretical_speedup == pytest.approx(
        dense.macs / ((dense.macs - classifier_macs) / 2 + classifier_macs), rel=1e-12
    )
    assert 1.99 < report.theoretical_speedup < 2.0


def test_vit_half_sparse_keeps_attention_products_dense():
    torch.manual_seed(0)
    model = vit_b_16()
    linear_weights = [
        name for name, p in model.named_parameters()
        if p.dim() >= 2 and not name.startswith(("class_token", "encoder.pos_embedding"))
    ]
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in linear_weights
    prune_half(model, linear_weights)
    report = count_flops(model, torch.randn(1, 3, 224, 224))
    tokens, width, layers = 197, 768, 12
    attention = layers * 2 * tokens * tokens * width  # Q K^T and A V over all heads
    assert sum(row.macs for row in report.layers if row.parameter is None) == attention
    assert report.nonzero_macs == (report.macs - attention) // 2 + attention
    assert report.uncounted_ops == ()


def test_nonzero_macs_use_the_slice_that_is_multiplied():
    class SliceUser(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4, 6))

        def forward(self, x):
            return F.linear(x, self.weight[:2])  # only the first two rows are used

    model = SliceUser()
    with torch.no_grad():
        model.weight[2:] = 0  # the unused rows are zero: the used slice is dense
    report = count_flops(model, torch.randn(1, 6))
    assert report.macs == report.nonzero_macs == 12


# -- size ----------------------------------------------------------------------


def test_size_counts_by_hand():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))  # 12 + 3 + 6 + 2 = 23 parameters
    with torch.no_grad():
        model[0].weight[0] = 0  # 4 zeros in a prunable weight
        model[1].bias.zero_()  # 2 zeros outside the prunable set
    report = count_parameters(model, prunable=["0.weight"])
    assert report.total_parameters == 23
    assert report.nonzero_parameters == 17
    assert report.prunable_parameters == 12
    assert report.pruned_parameters == 4
    assert report.compression_ratio == 23 / 17
    assert report.dense_bytes == 23 * 4
    # bitmap + values, or dense if smaller: w0 2+8*4, b0 dense 12, w1 dense 24, b1 1+0
    assert report.sparse_bytes == (2 + 32) + 12 + 24 + 1


def test_sparse_storage_never_exceeds_dense():
    assert sparse_storage_bytes(torch.ones(10)) == 40
    assert sparse_storage_bytes(torch.zeros(100, dtype=torch.float16)) == 13


def test_size_default_prunable_rule_and_shared_parameters():
    layer = nn.Linear(5, 5)
    model = nn.Sequential(layer, nn.ReLU(), layer)  # shared: counted once
    report = count_parameters(model)
    assert report.total_parameters == 30
    assert report.prunable_parameters == 25


def test_size_unknown_prunable_name_raises():
    with pytest.raises(MaskError, match="not in the model: fc.weight"):
        count_parameters(nn.Linear(2, 2), prunable=["fc.weight"])


def test_size_of_half_pruned_resnet18():
    model = resnet18()
    names = conv_weight_names(model, exclude=("fc",))
    prune_half(model, names)
    report = count_parameters(model, names)
    assert report.total_parameters == 11_689_512
    assert report.pruned_parameters * 2 == report.prunable_parameters
    # batch-norm biases start at zero: they are not prunable but they are not nonzero either
    zero_biases = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert zero_biases == 4800
    assert report.nonzero_parameters == (
        report.total_parameters - report.pruned_parameters - zero_biases
    )
    assert report.sparse_bytes < report.dense_bytes


# -- metric wrappers -----------------------------------------------------------


def test_compute_wrappers_return_flat_json():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    prune_half(model, ["1.weight"])
    context = MetricContext(
        model=model, example_input=torch.randn(1, 3, 2, 2), device=torch.device("cpu"),
        prunable=["1.weight"],
    )
    size = size_metric.compute(context, SizeParameters())
    assert size["compression_ratio"] == 52 / 28
    assert size["pruned_fraction"] == 0.5
    flops = flops_metric.compute(context, FlopsParameters())
    assert flops["macs"] == 48 and flops["nonzero_macs"] == 24
    assert flops["theoretical_speedup"] == 2.0
    assert flops["layers"][0]["parameter"] == "1.weight"
    assert "layers" not in flops_metric.compute(context, FlopsParameters(per_layer=False))


def test_metric_specs_declare_units_and_forbid_unknown_options():
    specs = {spec.name: spec for spec in metric_specs()}
    assert set(specs) == {"size", "flops", "accuracy", "latency", "memory", "structured"}
    assert specs["latency"].higher_is_better is False
    assert specs["accuracy"].higher_is_better is True
    for spec in specs.values():
        assert spec.unit
        assert callable(spec.load())
        with pytest.raises(ValidationError):
            spec.parameters(no_such_option=1)

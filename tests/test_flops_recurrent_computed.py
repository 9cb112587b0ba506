"""FLOPs of recurrent layers and of weights computed inside ``forward`` (issue 19, item 7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize, prune

from shrinkbench_core.metrics.flops import _flat_rnn_products, count_flops


def unfused_rnn_macs(module: nn.RNNBase, steps: int, batch: int) -> int:
    """Every weight matrix (input-hidden, hidden-hidden, projection) of every layer and direction
    multiplies once per step and example."""
    return steps * batch * sum(p.numel() for n, p in module.named_parameters() if p.dim() == 2)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize(
    "options",
    [{}, {"num_layers": 2, "bidirectional": True}, {"batch_first": True}],
    ids=["plain", "2-layer-bidirectional", "batch-first"],
)
def test_recurrent_layers_count_every_weight_matrix(cls, options):
    torch.manual_seed(0)
    module = cls(6, 10, **options)
    steps, batch = 5, 3
    shape = (batch, steps, 6) if options.get("batch_first") else (steps, batch, 6)
    report = count_flops(module, torch.randn(*shape))
    assert report.uncounted_ops == ()
    assert report.macs == unfused_rnn_macs(module, steps, batch)
    weights = {n for n, p in module.named_parameters() if p.dim() == 2}
    assert {row.parameter for row in report.layers} == weights


def test_lstm_with_projection_and_packed_sequences():
    torch.manual_seed(0)
    module = nn.LSTM(4, 8, proj_size=3)
    report = count_flops(module, torch.randn(5, 2, 4))
    assert report.macs == unfused_rnn_macs(module, 5, 2)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 4), [5, 3])
    module = nn.LSTM(4, 8)
    report = count_flops(module, (packed,))
    assert report.macs == (5 + 3) * sum(p.numel() for p in module.parameters() if p.dim() == 2)


def test_pruned_lstm_speedup_follows_its_zeros():
    torch.manual_seed(0)
    module = nn.LSTM(8, 16)
    with torch.no_grad():
        module.weight_ih_l0[:, ::2] = 0  # half of input-hidden
        module.weight_hh_l0.zero_()  # all of hidden-hidden
    report = count_flops(module, torch.randn(4, 2, 8))
    tokens = 4 * 2
    assert report.macs == tokens * (64 * 8 + 64 * 16)
    assert report.nonzero_macs == tokens * 64 * 4
    assert report.theoretical_speedup > 1.0


def test_cudnn_formula_counts_flat_weights_of_every_layer():
    # _cudnn_rnn(input, weights, stride, ...): LSTM, 2 layers, biases, one direction
    weights = [torch.empty(32, 4), torch.empty(32, 8), torch.empty(32), torch.empty(32)]
    weights += [torch.empty(32, 8), torch.empty(32, 8), torch.empty(32), torch.empty(32)]
    products = _flat_rnn_products([torch.empty(5, 3, 4), weights, 4])
    assert [macs for _, macs in products] == [15 * 32 * 4, 15 * 32 * 8, 15 * 32 * 8, 15 * 32 * 8]


def test_torch_prune_weight_orig_times_mask_counts_the_mask():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    dense = count_flops(model, torch.randn(2, 3, 8, 8))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.l1_unstructured(model[2], "weight", amount=0.75)
    report = count_flops(model, torch.randn(2, 3, 8, 8))
    assert report.macs == dense.macs
    assert report.uncounted_ops == ()
    rows = {row.layer: row for row in report.layers}
    assert rows["0"].parameter == "0.weight_orig"
    assert rows["0"].nonzero_macs == rows["0"].macs // 2
    assert rows["2"].weight_density == 0.25
    assert rows["2"].nonzero_macs == rows["2"].macs // 4


def test_parametrized_weight_is_attributed_to_its_layer():
    class HalfMask(nn.Module):
        def forward(self, weight):
            mask = torch.ones_like(weight)
            mask.view(-1)[::2] = 0
            return weight * mask

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    parametrize.register_parametrization(model[0], "weight", HalfMask())
    parametrizations.weight_norm(model[1])
    report = count_flops(model, torch.randn(3, 8))
    assert report.uncounted_ops == ()
    rows = {row.layer: row for row in report.layers}
    assert set(rows) == {"0", "1"}
    assert rows["0"].parameter == "0.parametrizations.weight.original"
    assert rows["0"].nonzero_macs == 3 * 32
    assert rows["1"].nonzero_macs == rows["1"].macs == 3 * 32


def test_convolution_weight_from_the_input_is_listed_not_silent():
    class Dynamic(nn.Module):
        def forward(self, x):
            kernel = x[:1, :1].expand(4, 1, 3, 3).contiguous() * 0  # computed from the input
            return F.conv2d(x, kernel)

    report = count_flops(Dynamic(), torch.randn(1, 1, 3, 3))
    assert report.macs == 4 * 9
    assert report.nonzero_macs == 0  # the operand's own zeros count
    assert report.uncounted_ops == (
        "aten.convolution (weight not traced to a parameter) x1",
    )

"""Wanda and OWL scores, mask selection groups and sequential calibration, by hand."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("shrinkbench_llm")

from shrinkbench_llm.owl import outlier_ratio, owl_sparsities, wanda_scores  # noqa: E402
from shrinkbench_llm.selection import layer_mask, nm_mask, row_mask  # noqa: E402
from shrinkbench_llm.strategies import OWL, MagnitudeLM, SparseGPT, WandaLM  # noqa: E402
from shrinkbench_llm.tiny_gpt import TinyGPT  # noqa: E402

from shrinkbench_core.errors import ConfigError, UserError  # noqa: E402


def test_wanda_scores_by_hand():
    weight = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 0.5, 1.0]])
    sq_norms = torch.tensor([4.0, 1.0, 0.25])  # ||X_j|| = 2, 1, 0.5
    expected = torch.tensor([[2.0, 2.0, 1.5], [8.0, 0.5, 0.5]])
    assert torch.equal(wanda_scores(weight, sq_norms), expected)


def test_row_groups_differ_from_layer_groups():
    scores = torch.tensor([[2.0, 2.0, 1.5], [8.0, 0.5, 0.5]])
    # per row: one weight from each row; ties go by position
    assert row_mask(scores, 2).tolist() == [[True, True, False], [True, False, True]]
    # whole layer: the two lowest anywhere (both in row 1)
    assert layer_mask(scores, 2).tolist() == [[True, True, True], [True, False, False]]
    # an odd count: the first rows lose one more
    assert (~row_mask(scores, 3)).sum(1).tolist() == [2, 1]


def test_nm_groups_by_hand():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[True, False, True, False, False, True, True, False]]
    assert nm_mask(scores, 4, 8).tolist() == [[True, False, False, False, False, True, True, True]]


def test_outlier_ratio_by_hand():
    # mean of all 10 scores = 2.0; with M = 2 the outliers are those > 4: 5 and 9
    scores = [torch.tensor([[1.0, 1.0, 5.0]]), torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 9.0])]
    assert outlier_ratio(scores, 2.0) == pytest.approx(2 / 10)
    assert outlier_ratio(scores, 5.0) == 0.0


def test_owl_sparsities_by_hand():
    # ratios 0.1, 0.2, 0.4 -> rescaled to [0, 2*0.1]: 0, 0.0667, 0.2; mean 0.0889
    sparsities = owl_sparsities([0.1, 0.2, 0.4], sparsity=0.7, lamda=0.1)
    density = [0 - 0.0888889 + 0.3, 0.0666667 - 0.0888889 + 0.3, 0.2 - 0.0888889 + 0.3]
    assert sparsities == pytest.approx([1 - d for d in density], abs=1e-6)
    assert sum(sparsities) / 3 == pytest.approx(0.7)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.2)
    assert owl_sparsities([0.3, 0.3], 0.5, 0.08) == [0.5, 0.5]


def _tiny(seed=0, layers=2, width=16):
    torch.manual_seed(seed)
    model = TinyGPT(vocab_size=11, layers=layers, width=width, heads=2, max_positions=32)
    with torch.no_grad():  # make activations uneven across channels, so Wanda != magnitude
        for block in model.blocks:
            block.ln1.weight.copy_(torch.linspace(0.1, 3.0, width))
            block.ln2.weight.copy_(torch.linspace(3.0, 0.1, width))
    ids = torch.randint(0, 11, (6, 12), generator=torch.Generator().manual_seed(seed))
    return model, [(ids, ids)]


def _inputs_of(model, names, ids):
    modules = dict(model.named_modules())
    stats, handles = {}, []
    for name in names:
        owner = modules[name.rpartition(".")[0]]

        def hook(_m, inputs, _o, name=name):
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            stats[name] = (x * x).sum(0)

        handles.append(owner.register_forward_hook(hook))
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return stats


def test_wanda_lm_calibrates_block_k_on_pruned_earlier_blocks():
    model, calibration = _tiny()
    dense = copy.deepcopy(model)
    strategy = WandaLM(
        model, 2.0, params={"sparsity": 0.5}, calibration=calibration, classifier="lm_head"
    )
    masks = strategy.apply()
    block1 = [n for n in masks if n.startswith("blocks.1.")]
    # expected: block 0 pruned with its masks, block 1 still dense, statistics by hand
    partly = copy.deepcopy(dense)
    params = dict(partly.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name.startswith("blocks.0."):
                params[name].mul_(mask)
    stats = _inputs_of(partly, block1, calibration[0][0])
    dense_stats = _inputs_of(dense, block1, calibration[0][0])
    for name in block1:
        weight = dict(dense.named_parameters())[name]
        expected = row_mask(wanda_scores(weight, stats[name]), weight.numel() // 2)
        assert torch.equal(masks[name], expected), name
    assert any(not torch.allclose(stats[n], dense_stats[n]) for n in block1)
    # and the pruned model holds exactly these masks
    for name, mask in masks.items():
        assert torch.all(dict(model.named_parameters())[name][~mask] == 0)


def test_budget_from_compression_is_exact_and_nm_is_exact():
    model, calibration = _tiny(seed=1)
    strategy = SparseGPT(
        copy.deepcopy(model),
        2.0,
        calibration=calibration,
        classifier="lm_head",
        params={"blocksize": 8},
    )
    masks = strategy.apply()
    assert sum(int(m.sum()) for m in masks.values()) == strategy.keep
    masks = WandaLM(
        copy.deepcopy(model),
        2.0,
        params={"nm": "2:4"},
        calibration=calibration,
        classifier="lm_head",
    ).apply()
    for mask in masks.values():
        assert torch.all(mask.view(-1, 4).sum(1) == 2)


def test_magnitude_lm_layer_and_row_groups():
    model, _ = _tiny(seed=2)
    weight = model.blocks[0].mlp.fc.weight.detach().clone()
    layer = MagnitudeLM(
        copy.deepcopy(model), 2.0, params={"sparsity": 0.5}, classifier="lm_head"
    ).apply()
    row = MagnitudeLM(
        copy.deepcopy(model), 2.0, params={"sparsity": 0.5, "groups": "row"}, classifier="lm_head"
    ).apply()
    name = "blocks.0.mlp.fc.weight"
    assert torch.equal(layer[name], layer_mask(weight.abs(), weight.numel() // 2))
    assert torch.equal(row[name], row_mask(weight.abs(), weight.numel() // 2))


def test_owl_block_sparsities_follow_outlier_ratios():
    model, calibration = _tiny(seed=3, layers=3)
    strategy = OWL(
        copy.deepcopy(model),
        2.0,
        params={"sparsity": 0.6, "lamda": 0.1},
        calibration=calibration,
        classifier="lm_head",
    )
    masks = strategy.apply()
    ratios = strategy.report["outlier_ratios"]
    expected = owl_sparsities(ratios, 0.6, 0.1)
    assert strategy.report["block_sparsities"] == pytest.approx(expected)
    for index in range(3):
        block = [m for n, m in masks.items() if n.startswith(f"blocks.{index}.")]
        removed = sum(int((~m).sum()) for m in block) / sum(m.numel() for m in block)
        assert removed == pytest.approx(expected[index], abs=0.01)
    # the first block's ratio equals a dense computation by hand
    dense_stats = _inputs_of(
        model, [n for n in masks if n.startswith("blocks.0.")], calibration[0][0]
    )
    scores = [wanda_scores(dict(model.named_parameters())[n], s) for n, s in dense_stats.items()]
    assert ratios[0] == pytest.approx(outlier_ratio(scores, 5.0))


def test_owl_nm_uses_mixed_patterns_around_the_target():
    model, calibration = _tiny(seed=4, layers=3)
    strategy = OWL(
        copy.deepcopy(model),
        2.0,
        params={"nm": "4:8", "lamda": 0.2},
        calibration=calibration,
        classifier="lm_head",
    )
    masks = strategy.apply()
    patterns = strategy.report["nm_per_block"]
    for index, pattern in enumerate(patterns):
        n = int(pattern.split(":")[0])
        for name, mask in masks.items():
            if name.startswith(f"blocks.{index}."):
                assert torch.all(mask.view(-1, 8).sum(1) == n)


def test_bad_strategy_input_is_reported_before_pruning():
    model, calibration = _tiny()
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(ConfigError, match="not both"):
        WandaLM(
            model,
            2.0,
            params={"nm": "2:4", "sparsity": 0.5},
            calibration=calibration,
            classifier="lm_head",
        )
    with pytest.raises(ConfigError, match="multiple of m=3"):
        WandaLM(model, 2.0, params={"nm": "1:3"}, calibration=calibration, classifier="lm_head")
    with pytest.raises(UserError, match="calibration"):
        WandaLM(model, 2.0, classifier="lm_head").apply()
    with pytest.raises(UserError, match="samples=99"):
        WandaLM(
            model, 2.0, params={"samples": 99}, calibration=calibration, classifier="lm_head"
        ).apply()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

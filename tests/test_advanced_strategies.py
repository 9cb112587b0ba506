"""SNIP, GraSP, SynFlow, Taylor, Fisher/OBD, N:M and Wanda: hand-computed scores, exact budgets."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from pydantic import ValidationError
from shrinkbench_strategies.init_pruning import SNIP, GraSP, SynFlow, synflow_keep_counts
from shrinkbench_strategies.nm_sparsity import NMMagnitude, nm_mask, nm_violations, satisfies_nm
from shrinkbench_strategies.params import NMParameters
from shrinkbench_strategies.taylor import GlobalFisher, GlobalTaylor
from shrinkbench_strategies.wanda import Wanda
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.pruning import PrunableRule, masks_equal
from shrinkbench_core.registry import get_registry

COMPRESSIONS = [2, 4, 8, 16, 32, 64]
NEW_NAMES = ["SNIP", "GraSP", "SynFlow", "GlobalTaylor", "GlobalFisher", "NMMagnitude", "Wanda"]


# -- small models and data ----------------------------------------------------------
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, groups=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(48, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def batches(shape=(3, 4, 4), n=2, size=8, classes=10, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, *shape, generator=generator),
            torch.randint(0, classes, (size,), generator=generator),
        )
        for _ in range(n)
    ]


WITH_CLASSIFIER = PrunableRule(exclude_classifier=False)  # so that both models reach 64x
BUILDS = {"mlp": (mlp, (3, 4, 4)), "cnn": (small_cnn, (3, 6, 6))}


def nonzero(model: nn.Module) -> int:
    """Kept parameters as budgets count them: 1-d ones (biases, BatchNorm) are never masked,
    so all their entries count, zero-initialized ones included."""
    return sum(
        int(torch.count_nonzero(p)) if p.dim() > 1 else p.numel() for p in model.parameters()
    )


def make(strategy, model, compression, shape, data, **kwargs):
    classifier = str(len(model) - 1)
    if strategy is SynFlow:
        kwargs.setdefault("input_shape", shape)
        kwargs.setdefault("params", {"rounds": 20})  # exactness does not depend on the rounds
    if strategy is GraSP:
        kwargs.setdefault("params", {"temperature": 1.0})  # keep scores far from float32 ties
    return strategy(model, compression, calibration=data, classifier=classifier, **kwargs)


def reference_top(scores: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    """Brute force: a stable descending sort of all scores, first ``keep`` kept."""
    flat = torch.cat([s.reshape(-1).float() for s in scores.values()])
    kept = torch.zeros(flat.numel(), dtype=torch.bool)
    kept[torch.sort(flat, descending=True, stable=True).indices[:keep]] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = kept[start : start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


# -- hand-computed scores on a one-layer softmax classifier --------------------------
@pytest.fixture
def tiny():
    """Linear(3 -> 4, no bias): logits = x W^T; every quantity below is closed form."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4, bias=False))
    data = batches((3,), n=2, size=5, classes=4, seed=7)
    return model, data


def softmax_parts(weight, x, y, temperature=1.0):
    """Per-example probabilities and gradients of CE(x W^T / T): (p - e_y) x^T / T."""
    probs = torch.softmax(x @ weight.t() / temperature, dim=1)
    residual = probs - nn.functional.one_hot(y, weight.shape[0]).float()
    per_example = residual[:, :, None] * x[:, None, :] / temperature  # (n, out, in)
    return probs, per_example


def test_snip_score_is_abs_weight_times_first_batch_gradient(tiny):
    model, data = tiny
    weight = model[0].weight.detach().clone()
    _, per_example = softmax_parts(weight, *data[0])
    expected = (weight * per_example.mean(0)).abs()
    scores = SNIP(model, 2, calibration=data, prunable=["0.weight"]).scores()
    torch.testing.assert_close(scores["0.weight"], expected)


@pytest.mark.parametrize("accumulate", ["squared", "absolute"])
def test_taylor_score_accumulates_per_batch(tiny, accumulate):
    model, data = tiny
    weight = model[0].weight.detach().clone()
    terms = []
    for x, y in data:
        gradient = softmax_parts(weight, x, y)[1].mean(0)
        product = weight * gradient
        terms.append(product.pow(2) if accumulate == "squared" else product.abs())
    expected = sum(terms) / len(terms)
    scores = GlobalTaylor(
        model, 2, calibration=data, prunable=["0.weight"], params={"accumulate": accumulate}
    ).scores()
    torch.testing.assert_close(scores["0.weight"], expected)
    # not the same as |w * mean gradient| (GlobalMagGrad): per-batch terms do not cancel
    mean_grad = sum(softmax_parts(weight, x, y)[1].mean(0) for x, y in data) / len(data)
    assert not torch.allclose(scores["0.weight"], (weight * mean_grad).pow(2))


@pytest.mark.parametrize("gradients", ["example", "batch"])
def test_fisher_obd_score_is_half_w_squared_times_empirical_fisher(tiny, gradients):
    model, data = tiny
    weight = model[0].weight.detach().clone()
    if gradients == "example":
        squares = torch.cat([softmax_parts(weight, x, y)[1] for x, y in data]).pow(2)
        fisher = squares.mean(0)
    else:
        fisher = sum(softmax_parts(weight, x, y)[1].mean(0).pow(2) for x, y in data) / len(data)
    expected = 0.5 * weight.pow(2) * fisher
    scores = GlobalFisher(
        model,
        2,
        calibration=data,
        prunable=["0.weight"],
        params={"gradients": gradients, "chunk_size": 3},
    ).scores()
    torch.testing.assert_close(scores["0.weight"], expected)


def test_grasp_score_is_minus_w_times_hessian_gradient_product(tiny):
    model, data = tiny
    temperature = 2.0
    weight = model[0].weight.detach().clone()
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    probs, per_example = softmax_parts(weight, x, y, temperature)
    g = per_example.mean(0)
    # H vec(V) of CE(x W^T / T) = mean_n (diag(p_n) - p_n p_n^T)(V x_n) x_n^T / T^2
    hg = torch.zeros_like(weight)
    for p, xn in zip(probs, x, strict=True):
        curvature = torch.diag(p) - torch.outer(p, p)
        hg += torch.outer(curvature @ (g @ xn), xn) / temperature**2
    hg /= len(x)
    expected = -weight * hg
    scores = GraSP(
        model, 2, calibration=data, prunable=["0.weight"], params={"temperature": temperature}
    ).scores()
    torch.testing.assert_close(scores["0.weight"], expected, rtol=1e-4, atol=1e-7)


def test_grasp_hessian_product_matches_the_full_hessian_across_layers():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    data = batches((3,), n=2, size=6, classes=3, seed=2)
    names = ["0.weight", "2.weight"]
    grasp = GraSP(model, 2, calibration=data, prunable=names, params={"temperature": 3.0})
    scores = grasp.scores()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    shapes = [base[n].shape for n in names]
    sizes = [base[n].numel() for n in names]

    def loss(flat):
        parts = dict(zip(names, torch.split(flat, sizes), strict=True))
        weights = {**base, **{n: parts[n].reshape(s) for n, s in zip(names, shapes, strict=True)}}
        total = 0
        for x, y in data:
            logits = torch.func.functional_call(model, weights, (x,)) / 3.0
            total = total + nn.functional.cross_entropy(logits, y)
        return total / len(data)

    flat = torch.cat([base[n].reshape(-1) for n in names])
    gradient = torch.autograd.functional.jacobian(loss, flat)
    hessian = torch.autograd.functional.hessian(loss, flat)
    expected = torch.split(-flat * (hessian @ gradient), sizes)
    for name, value, shape in zip(names, expected, shapes, strict=True):
        torch.testing.assert_close(scores[name], value.reshape(shape), rtol=1e-4, atol=1e-8)
    masks = grasp.compute_masks()  # the highest scores are removed
    assert masks_equal(masks, reference_top({n: -s for n, s in scores.items()}, grasp.keep))


def test_wanda_score_is_abs_weight_times_input_channel_l2_norm(tiny):
    model, data = tiny
    weight = model[0].weight.detach().clone()
    x = torch.cat([b[0] for b in data])
    norms = x.pow(2).sum(0).sqrt()  # ||X_j||_2 over every example
    expected = weight.abs() * norms[None, :]
    scores = Wanda(model, 2, calibration=data, prunable=["0.weight"]).scores()
    torch.testing.assert_close(scores["0.weight"], expected)


def test_wanda_on_convolutions_uses_every_position():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.LazyLinear(2))
    data = [(torch.randn(4, 2, 5, 5), torch.randint(0, 2, (4,)))]
    model(data[0][0])
    scores = Wanda(model, 1.2, calibration=data, prunable=["0.weight"]).scores()
    norms = data[0][0].transpose(0, 1).reshape(2, -1).pow(2).sum(1).sqrt()
    expected = model[0].weight.detach().abs() * norms[None, :, None, None]
    torch.testing.assert_close(scores["0.weight"], expected)


def synflow_reference(w1, w2, keep_counts):
    """Two bias-free linear layers with ReLU, by hand: R = 1^T |W2| |W1| 1."""
    a1, a2 = w1.abs().clone(), w2.abs().clone()
    for count in keep_counts:
        s1 = a1 * a2.sum(0)[:, None]  # dR/dW1_ij = sum_k |W2_ki|
        s2 = a2 * a1.sum(1)[None, :]  # dR/dW2_ki = h_i = sum_j |W1_ij|
        ranked = {
            n: torch.where(a != 0, torch.log(s), torch.tensor(-float("inf")))
            for n, s, a in (("0.weight", s1, a1), ("2.weight", s2, a2))
        }
        masks = reference_top(ranked, count)
        a1, a2 = a1 * masks["0.weight"], a2 * masks["2.weight"]
    return masks, (s1, s2)


@pytest.mark.parametrize("rounds", [1, 4])
def test_synflow_scores_and_rounds_match_the_hand_computed_flow(rounds):
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False))
    names = ["0.weight", "2.weight"]
    pruner = SynFlow(
        model,
        3,
        prunable=names,
        input_shape=(6,),
        params={"rounds": rounds, "precision": "float64"},
    )
    linear = pruner.linearized_copy()
    scores = SynFlow.flow_scores(linear, names, (6,))
    w1, w2 = (model[i].weight.detach().double() for i in (0, 2))
    torch.testing.assert_close(scores["0.weight"], w1.abs() * w2.abs().sum(0)[:, None])
    torch.testing.assert_close(scores["2.weight"], w2.abs() * w1.abs().sum(1)[None, :])
    counts = synflow_keep_counts(pruner.budget.prunable_nonzero, pruner.keep, rounds, "exponential")
    expected, _ = synflow_reference(w1, w2, counts)
    assert masks_equal(pruner.compute_masks(), expected)


def test_synflow_keep_counts_follow_the_exponential_schedule():
    counts = synflow_keep_counts(1000, 10, 4, "exponential")
    assert counts == [round(1000 * 0.01 ** (k / 4)) for k in range(1, 4)] + [10]
    assert synflow_keep_counts(1000, 10, 3, "linear") == [670, 340, 10]
    assert synflow_keep_counts(7, 3, 1, "exponential") == [3]


class PoisonBatch:
    """A calibration batch that fails the moment anything reads it."""

    def __iter__(self):
        raise AssertionError("SynFlow touched a calibration batch")

    def __getitem__(self, index):
        raise AssertionError("SynFlow touched a calibration batch")

    def __len__(self):
        raise AssertionError("SynFlow touched a calibration batch")


def test_synflow_is_data_free():
    model = small_cnn()
    poisoned = SynFlow(
        model,
        8,
        calibration=[PoisonBatch(), PoisonBatch()],
        classifier="10",
        input_shape=(3, 6, 6),
        params={"rounds": 10},
    )
    clean = SynFlow(model, 8, classifier="10", params={"rounds": 10, "input_shape": [3, 6, 6]})
    assert masks_equal(poisoned.compute_masks(), clean.compute_masks())
    with pytest.raises(UserError, match="input shape"):
        SynFlow(model, 8, classifier="10").compute_masks()
    with pytest.raises(AssertionError, match="touched"):  # the poison itself works
        SNIP(model, 8, calibration=[PoisonBatch()], classifier="10").compute_masks()


# -- the shared bar: exact budgets, brute-force selection, untouched model -------------
EXACT = [SNIP, GraSP, SynFlow, GlobalTaylor, GlobalFisher, Wanda]


@pytest.mark.parametrize("strategy", EXACT, ids=lambda s: s.__name__)
@pytest.mark.parametrize("build", list(BUILDS), ids=str)
def test_achieved_compression_is_exact(strategy, build):
    factory, shape = BUILDS[build]
    data = batches(shape)
    for compression in COMPRESSIONS:
        model = factory()
        total = sum(p.numel() for p in model.parameters())
        pruner = make(strategy, model, compression, shape, data, rule=WITH_CLASSIFIER)
        pruner.apply()
        assert nonzero(model) == round(total / compression), compression  # within one weight
        assert abs(nonzero(model) - total / compression) <= 0.5


@pytest.mark.parametrize(
    "strategy", [SNIP, GraSP, GlobalTaylor, GlobalFisher, SynFlow], ids=lambda s: s.__name__
)
def test_global_masks_are_the_exact_top_k_of_the_scores(strategy):
    factory, shape = BUILDS["cnn"]
    pruner = make(strategy, factory(), 8, shape, batches(shape))
    if strategy is SynFlow:
        pruner = make(strategy, factory(), 8, shape, None, params={"rounds": 1})
        scores = SynFlow.flow_scores(pruner.linearized_copy(), pruner.prunable, shape)
    elif strategy is GraSP:
        scores = {n: -s for n, s in pruner.scores().items()}
    else:
        scores = pruner.scores()
    assert masks_equal(pruner.compute_masks(), reference_top(scores, pruner.keep))


@pytest.mark.parametrize("comparison", ["layer", "output"])
def test_wanda_keeps_the_same_fraction_per_layer_and_row(comparison):
    factory, shape = BUILDS["cnn"]
    model, data = factory(), batches(shape)
    pruner = make(Wanda, model, 8, shape, data, params={"comparison": comparison})
    masks, scores, counts = pruner.compute_masks(), pruner.scores(), pruner.layer_keep()
    for name, mask in masks.items():
        assert int(mask.sum()) == counts[name]
        if comparison == "layer":
            assert masks_equal({name: mask}, reference_top({name: scores[name]}, counts[name]))
            continue
        rows = mask.reshape(mask.shape[0], -1).sum(1)
        assert int(rows.max() - rows.min()) <= 1, name
        for row, kept in enumerate(rows.tolist()):
            expected = reference_top({"r": scores[name][row]}, kept)["r"]
            assert torch.equal(mask[row], expected), (name, row)


@pytest.mark.parametrize("strategy", [*EXACT, NMMagnitude], ids=lambda s: s.__name__)
def test_scoring_leaves_the_model_untouched_and_is_deterministic(strategy):
    factory, shape = BUILDS["cnn"]
    model = factory().train()
    existing = torch.full_like(model[0].weight, 0.25)
    model[0].weight.grad = existing
    before = copy.deepcopy(model.state_dict())
    kwargs = {"params": {"incompatible": "skip"}} if strategy is NMMagnitude else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = make(strategy, model, 8, shape, batches(shape), seed=5, **kwargs).compute_masks()
        second = make(strategy, model, 8, shape, batches(shape), seed=5, **kwargs).compute_masks()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[0].weight.grad is existing
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")
    assert masks_equal(first, second)


def test_data_driven_strategies_ask_for_calibration_data():
    for strategy in (SNIP, GraSP, GlobalTaylor, GlobalFisher, Wanda):
        with pytest.raises(UserError, match="calibration"):
            strategy(mlp(), 4, classifier="5").compute_masks()


def test_repruning_never_revives_weights():
    factory, shape = BUILDS["mlp"]
    data = batches(shape)
    for strategy in EXACT:
        model = factory()
        total = sum(p.numel() for p in model.parameters())
        first = make(strategy, model, 4, shape, data).apply()
        second = make(strategy, model, 16, shape, data).apply()
        assert nonzero(model) == round(total / 16), strategy.__name__
        assert all(not (second[n] & ~first[n]).any() for n in first), strategy.__name__


# -- N:M --------------------------------------------------------------------------------
def test_nm_mask_keeps_the_two_largest_of_every_four_by_hand():
    weight = torch.tensor(
        [[0.1, -0.5, 0.3, 0.2, 0.0, 0.0, 0.0, -1.0], [0.4, 0.4, 0.4, 0.4, 2.0, -3.0, 1.0, 0.5]]
    )
    expected = torch.tensor([[0, 1, 1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(nm_mask(weight, 2, 4), expected)  # zeros never kept; ties by position


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (1, 2)])
@pytest.mark.parametrize("build", list(BUILDS), ids=str)
def test_nm_masks_satisfy_the_constraint_in_every_group(build, n, m):
    factory, _ = BUILDS[build]
    model = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = NMMagnitude(
            model,
            2,
            classifier=str(len(model) - 1),
            params={"n": n, "m": m, "incompatible": "skip"},
        )
        masks = pruner.apply()
    named = dict(model.named_parameters())
    for name, mask in masks.items():
        if name in pruner.skipped:
            assert mask.all()
            continue
        groups = (named[name].detach() != 0).movedim(1, -1).reshape(-1, m).sum(1)
        assert int(groups.max()) == n and int(groups.min()) == n, name  # exactly n per group
        assert nm_violations(mask, n, m) == 0 and satisfies_nm(mask, n, m)
        # a conv groups input channels at each (output channel, kernel position)
        if mask.dim() == 4:
            assert (mask[:, :m].sum(1) == n).all()
    assert satisfies_nm(torch.ones(4, 8, dtype=torch.bool), 8, 8) and not satisfies_nm(
        torch.ones(4, 8, dtype=torch.bool), 2, 4
    )


def test_nm_reports_incompatible_layers_or_skips_them():
    model = small_cnn()  # the first conv has 3 input channels
    with pytest.raises(UserError, match=r"0.weight input dimension 3 is not a multiple of m=4"):
        NMMagnitude(model, 2, classifier="10").compute_masks()
    with pytest.warns(UserWarning, match="left 1 parameter"):
        pruner = NMMagnitude(model, 2, classifier="10", params={"incompatible": "skip"})
        masks = pruner.compute_masks()
    assert list(pruner.skipped) == ["0.weight"] and "not a multiple" in pruner.skipped["0.weight"]
    assert masks["0.weight"].all()


def test_nm_ignores_the_requested_compression_and_says_so():
    model = mlp()
    total = sum(p.numel() for p in model.parameters())
    with pytest.warns(UserWarning, match="requested 64 is ignored"):
        pruner = NMMagnitude(model, 64, classifier="5")
        pruner.apply()
    assert pruner.achieved_compression == pytest.approx(total / nonzero(model))
    prunable = 48 * 256 + 256 * 128
    assert total - nonzero(model) == prunable // 2  # 2:4 removes exactly half
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the request matches
        NMMagnitude(mlp(), pruner.achieved_compression, classifier="5").apply()
    with pytest.raises(ValidationError, match="n must be smaller than m"):
        NMParameters(n=4, m=4)


# -- registration -------------------------------------------------------------------------
def test_new_strategies_are_registered_with_reference_and_data_needs():
    registry = get_registry()
    facts = {name: registry.get("strategies", name) for name in NEW_NAMES}
    for name, spec in facts.items():
        assert spec.reference and spec.load().__name__ == name
    assert facts["SNIP"].needs_gradients and facts["GraSP"].needs_gradients
    assert not facts["SynFlow"].needs_data
    assert facts["Wanda"].needs_data and not facts["Wanda"].needs_gradients
    assert facts["NMMagnitude"].structure == "n:m"
    assert facts["GlobalTaylor"].needs_gradients and facts["GlobalFisher"].needs_gradients

"""``calibration.samples`` / ``calibration.seqlen``: the papers' names for the LM strategies'
calibration windows, linked to the strategies' older ``samples`` / ``seqlen`` parameters."""

from __future__ import annotations

import pytest

pytest.importorskip("shrinkbench_llm")

from shrinkbench_llm.calibration import sequential_blocks  # noqa: E402

from shrinkbench_core.errors import ConfigError  # noqa: E402
from shrinkbench_core.experiment.resolve import validate_experiment  # noqa: E402
from shrinkbench_core.experiment.runner import Experiment  # noqa: E402
from shrinkbench_core.registry import get_registry  # noqa: E402


def lm(tmp_path, strategy: str = "SparseGPT", **fields) -> dict:
    return {
        "strategy": {"name": strategy, "params": fields.pop("params", {})},
        "compression": 2,
        "dataset": {"name": "tinyshakespeare", "batch_size": 4,
                    "params": {"seqlen": 32, "train_tokens": 4096}},
        "model": {"name": "tiny-gpt",
                  "params": {"layers": 2, "width": 32, "heads": 2, "max_positions": 32}},
        "device": "cpu",
        "output": str(tmp_path),
        **fields,
    }  # fmt: skip


def resolve(data):
    return validate_experiment(data, get_registry(), check_environment=False)


def test_calibration_samples_and_seqlen_reach_the_lm_strategy(tmp_path):
    resolved = resolve(lm(tmp_path, calibration={"samples": 5, "seqlen": 16}))
    assert resolved.config.strategy.params["samples"] == 5
    assert resolved.config.strategy.params["seqlen"] == 16
    experiment = Experiment(resolved, quiet=True)
    batches = experiment.calibration_batches()
    assert [len(inputs) for inputs, _ in batches] == [4, 1]  # just enough batches, cut to 5
    spec = resolved.strategy
    model = experiment.build_model()
    strategy = spec.load()(
        model, 2.0, params=spec.parameters(**resolved.config.strategy.params),
        calibration=batches, input_shape=(32,),
    )  # fmt: skip
    ids = strategy.calibration_ids()
    assert tuple(ids.shape) == (5, 16)
    # the sequential calibration sees exactly these windows: 5 x 16 tokens per layer
    (index, _block, run), *_ = sequential_blocks(model, strategy.blocks, ids)
    stats = run.statistics(strategy.layers[index])
    assert {s.tokens for s in stats.values()} == {80}


def test_the_older_parameter_names_are_the_same_setting(tmp_path):
    old = resolve(lm(tmp_path, params={"samples": 6}))
    new = resolve(lm(tmp_path, calibration={"samples": 6}))
    assert old.config.calibration.samples == 6 and new.config.strategy.params["samples"] == 6
    assert old.config.digest() == new.config.digest()
    both = resolve(lm(tmp_path, params={"samples": 6}, calibration={"samples": 6}))
    assert both.config.digest() == new.config.digest()


def test_both_names_given_differently_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        resolve(lm(tmp_path, params={"seqlen": 8}, calibration={"seqlen": 16}))
    assert error.value.problems == [
        "calibration.seqlen: 16, but strategy.params.seqlen (its older name) is 8; set "
        "calibration.seqlen only"
    ]


def test_unset_calibration_keeps_calibration_batches(tmp_path):
    resolved = resolve(lm(tmp_path, calibration_batches=2))
    assert resolved.config.strategy.params["samples"] is None
    assert resolved.config.calibration_draw() == (2, None)
    batches = Experiment(resolved, quiet=True).calibration_batches()
    assert [len(inputs) for inputs, _ in batches] == [4, 4]


def test_calibration_seqlen_needs_a_strategy_that_cuts_windows(tmp_path):
    data = {"strategy": {"name": "Wanda"}, "calibration": {"seqlen": 16},
            "output": str(tmp_path)}  # fmt: skip
    with pytest.raises(ConfigError, match="calibration.seqlen: strategy Wanda does not"):
        resolve(data)


def test_calibration_samples_works_for_any_data_driven_strategy(tmp_path):
    data = {"strategy": {"name": "Wanda"}, "calibration": {"samples": 70},
            "calibration_batches": 0, "output": str(tmp_path)}  # fmt: skip
    resolved = resolve(data)  # calibration_batches=0 is fine: samples decide
    batches = Experiment(resolved, quiet=True).calibration_batches()
    assert [len(inputs) for inputs, _ in batches] == [64, 6]


def test_calibration_seqlen_longer_than_the_windows_is_found_before_running(tmp_path):
    with pytest.raises(ConfigError) as error:
        resolve(lm(tmp_path, calibration={"seqlen": 64}))
    assert error.value.problems == [
        "calibration.seqlen: 64 tokens > the dataset's windows of 32 (dataset.seqlen); lower "
        "the first or raise the second"
    ]

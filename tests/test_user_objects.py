"""run_experiment with models and data the caller built (the backend of ``sb.run``), and
sequence outputs (N, T, C) through the one training loop and the runner's evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from shrinkbench_core.config import build_config
from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import ConfigError
from shrinkbench_core.experiment import run_experiment
from shrinkbench_core.experiment.training import train_epoch
from shrinkbench_core.experiment.user_objects import data_fingerprint, model_fingerprint


def fast(output, **fields):
    data = {
        "strategy": {"name": "GlobalMagWeight"},
        "compression": 3,
        "dense": {"epochs": 1},
        "finetune": {"epochs": 1},
        "metrics": ["size", "accuracy"],
        "output": str(output),
    }
    data.update(fields)
    return build_config(data)


def mlp(hidden: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_user_models_get_their_own_digest_dense_cache_and_resume(tmp_path, capsys):
    first, second = mlp(24), mlp(24, seed=1)  # same architecture, other initial weights
    before = {k: v.clone() for k, v in first.state_dict().items()}
    a = run_experiment(fast(tmp_path), model=first, quiet=True)
    b = run_experiment(fast(tmp_path), model=second, quiet=True)
    assert a.path != b.path and a.metrics["digest"] != b.metrics["digest"]
    assert a.path.name.startswith("digits-user-model-GlobalMagWeight-c3-s0-")
    assert len(list((tmp_path / "dense").glob("*/model.pt"))) == 2  # never a shared cache
    assert all(torch.equal(before[k], first.state_dict()[k]) for k in before)  # not trained
    config = json.loads((a.path / "config.json").read_text())
    assert config["user_objects"]["model"] == {
        "user_provided": True,
        **model_fingerprint(first),
    }
    assert (
        config["config"]["model"]["params"]["architecture"]
        == "torch.nn.modules.container.Sequential"
    )
    # the same object again: already complete; a factory building it: the same run too
    again = run_experiment(fast(tmp_path), model=first, quiet=True)
    assert again.already_complete and again.path == a.path
    assert run_experiment(fast(tmp_path), model=lambda: mlp(24), quiet=True).path == a.path
    assert a.metrics["pruned"]["size"]["compression_ratio"] == pytest.approx(3, rel=1e-3)


def test_a_user_object_and_a_registered_name_for_the_same_field_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        run_experiment(fast(tmp_path, model={"name": "lenet300"}), model=mlp(8))
    assert "model.name: a model object was passed and the config also names model" in str(
        error.value
    )
    with pytest.raises(ConfigError, match="data: expected shrinkbench_core.data.DataSplits"):
        run_experiment(fast(tmp_path), data=[1, 2, 3])
    with pytest.raises(ConfigError, match="the factory returned int"):
        run_experiment(fast(tmp_path), model=lambda: 3)
    assert not (tmp_path / "runs").exists()


def digits_like(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 64, generator=generator)
    return TensorDataset(inputs, (inputs[:, :10].argmax(1)))


def test_user_data_with_a_registered_model_and_fingerprints(tmp_path):
    splits = DataSplits(
        train=digits_like(256, 0),
        test=digits_like(64, 1),
        validation=digits_like(32, 2),
        num_classes=10,
        input_shape=(64,),
    )
    other = DataSplits(train=digits_like(256, 3), test=splits.test, num_classes=10)
    assert data_fingerprint(splits)["sha256"] != data_fingerprint(other)["sha256"]
    assert data_fingerprint(splits) == data_fingerprint(splits)
    assert data_fingerprint(splits)["sizes"] == {"train": 256, "validation": 32, "test": 64}
    result = run_experiment(
        fast(tmp_path, model={"name": "mlp", "params": {"hidden_sizes": [16]}}),
        data=splits,
        quiet=True,
    )
    assert result.path.name.startswith("user-data-mlp-")
    assert result.metrics["finetuned"]["accuracy"]["test_examples"] == 64
    config = json.loads((result.path / "config.json").read_text())
    assert config["user_objects"]["dataset"]["sizes"]["train"] == 256
    with pytest.raises(ConfigError, match="dataset.name: data were passed"):
        run_experiment(fast(tmp_path, dataset={"name": "digits"}), data=splits)


# -- sequences ------------------------------------------------------------------------
VOCAB, LENGTH = 12, 6


class TinyLM(nn.Module):
    """Next-token scores for every position: (N, T) tokens -> (N, T, VOCAB)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.hidden = nn.Linear(16, 32)
        self.head = nn.Linear(32, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embed(tokens))))


def tokens(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, VOCAB, (n, LENGTH), generator=generator)
    return TensorDataset(inputs, (inputs + 1) % VOCAB)  # learnable: the next id


def test_the_training_loop_flattens_sequence_scores_and_skips_padding():
    torch.manual_seed(0)
    model = TinyLM()
    data = tokens(8, 0)
    inputs, targets = data.tensors
    targets = targets.clone()
    targets[:, -1] = -100  # padding: neither loss nor accuracy
    loader = [(inputs, targets)]
    with torch.no_grad():
        scores = model(inputs)
    valid = targets != -100
    expected_loss = nn.functional.cross_entropy(scores[valid], targets[valid]).item()
    expected_top1 = (scores.argmax(-1)[valid] == targets[valid]).float().mean().item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing moves: exact comparison
    stats = train_epoch(model, loader, optimizer, torch.device("cpu"), quiet=True)
    assert stats["train_loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert stats["train_top1"] == pytest.approx(expected_top1)
    with pytest.raises(ValueError, match=r"do not fit labels of shape \(8, 5\)"):
        train_epoch(model, [(inputs, targets[:, :5])], optimizer, torch.device("cpu"), quiet=True)


def test_a_sequence_model_runs_end_to_end(tmp_path):
    splits = DataSplits(
        train=tokens(512, 0),
        test=tokens(128, 1),
        validation=tokens(64, 2),
        num_classes=VOCAB,
        input_shape=(LENGTH,),
    )
    config = fast(
        tmp_path,
        dense={"epochs": 3, "optimizer": {"name": "adam", "lr": 0.01}},
        compression=2,
        prunable={"exclude_classifier": False, "exclude": ["embed.weight"]},
    )
    result = run_experiment(config, model=TinyLM, data=splits, quiet=True)
    metrics = result.metrics
    dense = metrics["dense"]["accuracy"]
    assert dense["test_examples"] == 128 * LENGTH  # per token
    assert dense["test_top1"] > 0.5  # learned the next id (chance: 1/12)
    rows = (result.path / "logs.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,train_top1,validation_top1")
    assert metrics["pruned"]["size"]["compression_ratio"] > 1.5

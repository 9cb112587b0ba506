"""``sb.run``: a whole experiment from a dict, a config file or keyword fields, with
registered names or the user's own model and data (issue 15, point 1)."""

from __future__ import annotations

import json

import pytest
from torch import nn

import shrinkbench_core as sb
from shrinkbench_core.errors import ConfigError

TINY = {
    "dense": {"epochs": 1},
    "finetune": {"epochs": 1},
    "metrics": ["size", "accuracy"],
}


def small_net(width: int = 32) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def test_run_from_fields_dict_and_file_agree(tmp_path):
    fields = dict(TINY, compression=4, model={"name": "mlp", "hidden_sizes": [32]},
                  output=str(tmp_path), quiet=True)
    first = sb.run(**fields)
    assert first.path.parent == tmp_path / "runs" and (first.path / "metrics.json").is_file()
    assert first.metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(4, rel=1e-3)
    as_dict = {**TINY, "compression": 4, "output": str(tmp_path),
               "model": {"name": "mlp", "params": {"hidden_sizes": [32]}}}
    again = sb.run(as_dict, quiet=True)
    assert again.already_complete and again.path == first.path
    config_file = tmp_path / "experiment.json"
    config_file.write_text(json.dumps(as_dict))
    from_file = sb.run(config_file, quiet=True, **{"finetune.epochs": 1})
    assert from_file.already_complete and from_file.path == first.path


def test_run_with_user_model_objects_and_factories(tmp_path):
    common = dict(TINY, compression=4, output=str(tmp_path), quiet=True)
    by_factory = sb.run(model=small_net, **common)
    assert "user-model" in by_factory.path.name
    assert by_factory.metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(4, 1e-3)
    wider = sb.run(model=lambda: small_net(48), **common)
    assert wider.path != by_factory.path  # a different architecture never shares a run
    again = sb.run(model=small_net, **common)
    assert again.already_complete and again.path == by_factory.path


def test_user_model_and_registered_name_clash(tmp_path):
    with pytest.raises(ConfigError, match="model.name: a model object was passed"):
        sb.run(model=small_net, **{"model.name": "mlp"}, output=str(tmp_path))
    with pytest.raises(ConfigError, match="strategy.name"):
        sb.run(strategy="NoSuchStrategy", output=str(tmp_path))

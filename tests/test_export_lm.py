"""Export of runs whose inputs are not float images: token ids of a language-model run
(tiny-gpt on tinyshakespeare at the run's own sequence length), and where the example
input comes from (the run's data, or a seeded random fallback that the model accepts).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import shrinkbench_core as sb
from shrinkbench_core.cli import main
from shrinkbench_core.errors import UserError
from shrinkbench_core.exporting import formats
from shrinkbench_core.exporting.example import FALLBACK_SEED, seeded_random

pytest.importorskip("shrinkbench_llm")

SEQLEN = 32
LM_RUN = {
    "model": {"name": "tiny-gpt",
              "params": {"layers": 1, "width": 32, "max_positions": SEQLEN}},
    "dataset": {"name": "tinyshakespeare",
                "params": {"seqlen": SEQLEN, "train_tokens": 20000}},
    "dense": {"epochs": 1},
    "finetune": {"epochs": 0},
    "metrics": ["size"],
}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("export-lm-runs")
    return sb.run(LM_RUN, strategy="MagnitudeLM", compression=2, output=str(output), quiet=True)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("export-digits-runs")
    tiny = {"dense": {"epochs": 1}, "finetune": {"epochs": 0}, "metrics": ["size"]}
    return sb.run(tiny, compression=2, model={"name": "mlp", "hidden_sizes": [16]},
                  output=str(output), quiet=True)


def final_lm(run) -> torch.nn.Module:
    """The run's final model, built by hand at the run's sequence length and vocabulary."""
    data = sb.get_dataset("tinyshakespeare", seed=1, seqlen=SEQLEN, train_tokens=20000)
    model = sb.get_model("tiny-gpt", num_classes=data.num_classes, input_shape=(SEQLEN,),
                         layers=1, width=32, max_positions=SEQLEN)
    model.load_state_dict(torch.load(run.path / "model.pt", weights_only=True))
    return model.eval()


def test_example_input_is_the_runs_first_test_sample(lm_run, tmp_path):
    result = sb.export(lm_run, tmp_path / "m.safetensors")
    expected = sb.get_dataset("tinyshakespeare", seed=1, seqlen=SEQLEN,
                              train_tokens=20000).test[0][0]
    assert result.example_input == {"source": "data", "dtype": "int64", "shape": [1, SEQLEN],
                                    "dataset": "tinyshakespeare", "split": "test", "index": 0}
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["input_shape"]) == [SEQLEN]
    assert metadata["input_dtype"] == "int64"
    assert json.loads(metadata["example_input"]) == result.example_input
    assert json.loads(metadata["architecture"])["num_classes"] == 65
    from shrinkbench_core.exporting.source import from_run

    assert torch.equal(from_run(lm_run.path).example_input, expected.unsqueeze(0))


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "onnx"])
def test_lm_run_exports_each_format_and_runs_on_token_ids(lm_run, tmp_path, capsys, fmt):
    out = tmp_path / f"lm.{fmt}"
    assert main(["export", str(lm_run.path), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"example input: test sample 0 of tinyshakespeare (int64 1x{SEQLEN})" in printed
    reference = final_lm(lm_run)
    ids = torch.randint(0, 65, (3, SEQLEN), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(ids)
    if fmt == "pt":
        extra = {formats.PT_METADATA: ""}
        with out.open("rb") as handle:
            program = torch.export.load(handle, extra_files=extra).module()
        assert torch.allclose(program(ids), expected, atol=1e-5)  # batch 3: dynamic batch
        assert json.loads(extra[formats.PT_METADATA])["example_input"]["source"] == "data"
    elif fmt == "safetensors":
        tensors = load_file(str(out))
        assert all(torch.equal(tensors[k], v) for k, v in reference.state_dict().items())
    else:
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].type == "tensor(int64)"
        (logits,) = session.run(None, {session.get_inputs()[0].name: ids.numpy()})
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
        props = session.get_modelmeta().custom_metadata_map
        assert json.loads(props["example_input"])["dtype"] == "int64"


def broken_copy(run, tmp_path, **params):
    """A copy of ``run`` whose recorded dataset parameters no longer build its data."""
    copy = tmp_path / run.path.name
    shutil.copytree(run.path, copy)
    record = json.loads((copy / "config.json").read_text())
    record["config"]["dataset"]["params"].update(params)
    (copy / "config.json").write_text(json.dumps(record))
    return copy


def test_unbuildable_data_falls_back_to_a_seeded_random_input(digits_run, tmp_path):
    run = broken_copy(digits_run, tmp_path, validation_size=10**6)
    first = sb.export(run, tmp_path / "a.pt")
    second = sb.export(run, tmp_path / "b.onnx")
    assert first.example_input["source"] == second.example_input["source"] == "random"
    assert first.example_input["values"] == "normal"
    assert first.example_input["seed"] == FALLBACK_SEED
    assert "validation" in first.example_input["reason"]
    assert first.example_input["shape"] == [1, 1, 8, 8]
    assert "the run's data could not be built" in first.summary()
    from shrinkbench_core.exporting.source import from_run

    expected = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(FALLBACK_SEED))
    assert torch.equal(from_run(run).example_input, expected)


def test_unbuildable_lm_data_whose_nominal_shape_does_not_fit_is_one_clear_error(
    lm_run, tmp_path, capsys
):
    run = broken_copy(lm_run, tmp_path, tokenizer=str(tmp_path / "no-such-tokenizer"))
    out = tmp_path / "lm.pt"
    assert main(["export", str(run), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "its data could not be built" in error and "no-such-tokenizer" in error
    assert "nominal input shape (128,)" in error and "example_input=" in error
    assert "Traceback" not in error and len(error.splitlines()) <= 3
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [run.name]


def test_the_random_fallback_gives_token_ids_to_a_model_with_embeddings():
    model = sb.get_model("tiny-gpt", num_classes=50, input_shape=(16,), layers=1, width=16,
                         max_positions=16).eval()
    example = seeded_random(model, (16,), "gone")
    again = seeded_random(model, (16,), "gone")
    assert example.tensor.dtype == torch.int64 and example.tensor.shape == (1, 16)
    assert torch.equal(example.tensor, again.tensor)
    assert int(example.tensor.max()) < 16 and example.details["values"] == "ids in [0, 16)"
    with pytest.raises(UserError, match="pass example_input="):
        seeded_random(model, (17,), "gone")  # longer than max_positions: nothing fits


def test_onnx_that_cannot_represent_the_model_is_one_clear_error(tmp_path, capfd, monkeypatch):
    """An operator the TorchScript-based exporter lacks: no graph dump, no traceback."""

    class Diff(torch.nn.Module):
        def forward(self, x):
            return torch.diff(x, dim=-1)

    monkeypatch.setattr(formats.importlib.util, "find_spec",
                        lambda name: None if name == "onnxscript" else object())
    with pytest.raises(UserError, match="cannot be written as onnx") as caught:
        sb.export(Diff(), tmp_path / "d.onnx", example_input=torch.randn(1, 4))
    assert "pt or safetensors" in str(caught.value)
    printed = capfd.readouterr()
    assert "graph" not in printed.out and "graph" not in printed.err
    assert not torch._C._jit_is_onnx_log_enabled()
    assert list(tmp_path.iterdir()) == []


LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 65, "max_position_embeddings": SEQLEN}


def test_shrunk_hf_llama_run_exports_with_token_ids(tmp_path, capsys):
    """Channel pruning of a Hugging Face model, shrunk physically, then exported."""
    config = {
        "model": {"name": "hf-causal-lm", "params": {"config": LLAMA}},
        "dataset": LM_RUN["dataset"],
        "dense": {"epochs": 0}, "finetune": {"epochs": 0}, "metrics": ["size"],
    }
    run = sb.run(config, strategy="GlobalChannelNorm", compression=1.5,
                 output=str(tmp_path / "runs"), quiet=True)
    result = sb.export(run, tmp_path / "h.pt", shrink=True)
    assert result.shrunk and result.parameters < result.parameters_before / 1.3
    assert result.example_input["dtype"] == "int64"
    from shrinkbench_core.exporting.source import from_run

    masked = from_run(run.path).model
    ids = torch.randint(0, 65, (2, SEQLEN), generator=torch.Generator().manual_seed(3))
    with (tmp_path / "h.pt").open("rb") as handle:
        program = torch.export.load(handle).module()
    with torch.no_grad():
        assert torch.allclose(program(ids), masked(ids), atol=1e-4)
    assert sb.export(run, tmp_path / "h.safetensors", shrink=True).max_abs_diff == 0
    if formats.importlib.util.find_spec("onnxscript") is None:  # transformers' masks: aten::diff
        assert main(["export", str(run.path), "--out", str(tmp_path / "h.onnx")]) == 2
        error = capsys.readouterr().err
        assert "cannot be written as onnx" in error and len(error.splitlines()) == 1
        assert not (tmp_path / "h.onnx").exists()
    else:  # the torch.export-based exporter writes it
        onnx_result = sb.export(run, tmp_path / "h.onnx", shrink=True)
        assert onnx_result.max_abs_diff < 1e-4 and "torch.export-based" in onnx_result.notes[-1]

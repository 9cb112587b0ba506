"""``shrinkbench export`` and ``sb.export``: files that load without ShrinkBench (issue 15, 4)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import shrinkbench_core as sb
from shrinkbench_core.cli import main
from shrinkbench_core.errors import UserError
from shrinkbench_core.exporting import formats
from shrinkbench_core.exporting.core import ExportCheckError

TINY = {"dense": {"epochs": 1}, "finetune": {"epochs": 1}, "metrics": ["size", "accuracy"]}


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("export-runs")
    return sb.run(TINY, compression=4, model={"name": "mlp", "hidden_sizes": [32]},
                  output=str(output), quiet=True)


def final_model(run) -> nn.Module:
    model = sb.get_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    model.load_state_dict(torch.load(run.path / "model.pt", weights_only=True))
    return model.eval()


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "onnx"])
def test_cli_exports_each_format(mlp_run, tmp_path, capsys, fmt):
    out = tmp_path / "deep" / f"model.{fmt}"
    assert main(["export", str(mlp_run.path), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"exported {out} ({fmt}, " in printed and " MB, " in printed
    assert "max |difference|" in printed
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left
    reference = final_model(mlp_run)
    x = torch.randn(3, 1, 8, 8)
    if fmt == "pt":
        with out.open("rb") as handle:
            program = torch.export.load(handle).module()
        assert torch.allclose(program(x), reference(x), atol=1e-6)
    elif fmt == "safetensors":
        tensors = load_file(str(out))
        assert all(torch.equal(tensors[k], v) for k, v in reference.state_dict().items())
        zeros = int((tensors["features.1.weight"] == 0).sum())
        assert zeros == tensors["features.1.weight"].numel() - int(
            torch.load(mlp_run.path / "masks.pt", weights_only=True)["features.1.weight"].sum()
        )
        with safe_open(str(out), "pt") as handle:
            metadata = handle.metadata()
        assert json.loads(metadata["architecture"])["name"] == "mlp"
        assert json.loads(metadata["input_shape"]) == [1, 8, 8]
    else:
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        np.testing.assert_allclose(output, reference(x).detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_exported_files_load_without_shrinkbench(mlp_run, tmp_path):
    for fmt in ("pt", "onnx", "safetensors"):
        sb.export(mlp_run, tmp_path / f"m.{fmt}")
    code = textwrap.dedent(
        f"""
        import sys, torch, onnxruntime, numpy
        from safetensors.torch import load_file
        x = torch.randn(2, 1, 8, 8)
        with open({str(tmp_path / "m.pt")!r}, "rb") as handle:
            program = torch.export.load(handle).module()
        session = onnxruntime.InferenceSession({str(tmp_path / "m.onnx")!r})
        (onnx_out,) = session.run(None, {{session.get_inputs()[0].name: x.numpy()}})
        assert numpy.allclose(onnx_out, program(x).detach().numpy(), atol=1e-5)
        assert "features.1.weight" in load_file({str(tmp_path / "m.safetensors")!r})
        assert not [m for m in sys.modules if m.startswith("shrinkbench")], "imported shrinkbench"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=300)


def test_incomplete_run_is_exit_2_and_writes_nothing(mlp_run, tmp_path, capsys):
    run_dir = tmp_path / "interrupted"
    shutil.copytree(mlp_run.path, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    out = tmp_path / "m.onnx"
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "is not complete (status: interrupted)" in error and "Traceback" not in error
    assert not out.exists()
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_bad_destinations_and_formats(mlp_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["export", str(mlp_run.path), "--out", str(blocker / "m.onnx")]) == 2
    assert f"{blocker} is a file, not a directory" in capsys.readouterr().err
    assert main(["export", str(mlp_run.path), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["export", str(mlp_run.path), "--out", str(tmp_path / "m.bin")]) == 2
    assert "pass --format pt|safetensors|onnx" in capsys.readouterr().err
    assert main(["export", str(mlp_run.path), "--shrink", "--out", str(tmp_path / "m.pt")]) == 2
    assert "use a channel strategy" in capsys.readouterr().err


def test_missing_library_names_the_extra(mlp_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(formats.LIBRARIES, "onnx", ("onnx", "onnxruntime_not_installed"))
    assert main(["export", str(mlp_run.path), "--out", str(tmp_path / "m.onnx")]) == 2
    error = capsys.readouterr().err
    assert "needs onnxruntime_not_installed" in error
    assert "pip install 'shrinkbench-core[export]'" in error


def test_shrunk_channel_run_exports_a_smaller_model(tmp_path):
    run = sb.run(TINY, strategy="GlobalChannelNorm", compression=2, model=small_cnn,
                 output=str(tmp_path / "runs"), quiet=True)
    with pytest.raises(UserError, match="Pass model= the same architecture"):
        sb.export(run, tmp_path / "m.onnx", shrink=True)
    result = sb.export(run, tmp_path / "m.onnx", model=small_cnn, shrink=True)
    assert result.shrunk and result.parameters < result.parameters_before / 1.5
    assert result.max_abs_diff < 1e-4 and result.size_bytes == (tmp_path / "m.onnx").stat().st_size
    masked = sb.export(run, tmp_path / "masked.onnx", model=small_cnn)
    assert masked.parameters == result.parameters_before > result.parameters
    assert result.size_bytes < masked.size_bytes
    x = torch.randn(4, 1, 8, 8)
    outputs = []
    for path in (tmp_path / "m.onnx", tmp_path / "masked.onnx"):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)


def test_export_a_pruned_module_directly(tmp_path):
    model = small_cnn().eval()
    example = torch.randn(1, 1, 8, 8)
    pruned = sb.prune(model, "GlobalMagWeight", 3, example_input=example, inplace=False)
    result = sb.export(model, tmp_path / "m.pt", masks=pruned.masks, example_input=example)
    assert result.nonzero < result.parameters and result.parameters == result.parameters_before
    with (tmp_path / "m.pt").open("rb") as handle:
        program = torch.export.load(handle).module()
    assert torch.allclose(program(example), pruned.model.eval()(example), atol=1e-6)
    with pytest.raises(UserError, match="needs example_input"):
        sb.export(model, tmp_path / "n.pt")


class Noisy(nn.Module):
    """Adds fresh noise on every call: no exported file can reproduce it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) + torch.rand(x.shape[0], 2)


def test_a_file_that_does_not_reproduce_the_model_is_not_kept(tmp_path):
    with pytest.raises(ExportCheckError, match="does not reproduce the model") as caught:
        sb.export(Noisy(), tmp_path / "m.onnx", example_input=torch.randn(1, 4))
    assert caught.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []

"""Built-in data and models: digits split, MNIST from real idx files, LeNet-5 and the MLP."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from shrinkbench_core.builtin.catalogue import DigitsParameters, LenetParameters, MlpParameters
from shrinkbench_core.builtin.datasets import build_digits
from shrinkbench_core.builtin.models import build_lenet5, build_lenet300, build_mlp
from shrinkbench_core.cli import run_main


def write_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """MNIST in torchvision's raw on-disk format (big-endian idx files)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        header = struct.pack(">IIII", 2051, count, 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, count) + labels.tobytes()
        )


def test_digits_split_is_fixed_and_disjoint():
    first = build_digits(DigitsParameters(), seed=0)
    second = build_digits(DigitsParameters(), seed=99)  # the run seed does not move the test set
    assert (len(first.train), len(first.validation), len(first.test)) == (1257, 180, 360)
    assert torch.equal(first.test.tensors[0], second.test.tensors[0])
    train = {tuple(x.flatten().tolist()) for x in first.train.tensors[0]}
    test = [tuple(x.flatten().tolist()) for x in first.test.tensors[0]]
    assert sum(t in train for t in test) < 10  # the digits set has a few exact duplicates only
    assert first.test.tensors[0].max() <= 1.0 and first.input_shape == (1, 8, 8)


def test_builtin_models_have_expected_shapes_and_counts():
    lenet5 = build_lenet5(LenetParameters(), num_classes=10, input_shape=(1, 28, 28))
    assert lenet5(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in lenet5.parameters()) == 61706  # LeCun et al. 1998
    lenet300 = build_lenet300(LenetParameters(), num_classes=10, input_shape=(1, 28, 28))
    assert sum(p.numel() for p in lenet300.parameters()) == 266610
    mlp = build_mlp(MlpParameters(hidden_sizes=(32,)), num_classes=3, input_shape=(2, 4))
    assert mlp(torch.zeros(5, 2, 4)).shape == (5, 3)


def test_mnist_lenet5_run_from_real_idx_files(tmp_path):
    write_mnist(tmp_path / "data", n_train=200, n_test=100)
    args = [
        "--strategy",
        "LayerMagWeight",
        "--compression",
        "4",
        "--dataset",
        "mnist",
        "--model",
        "lenet5",
        "--data-root",
        str(tmp_path / "data"),
        "--output",
        str(tmp_path / "out"),
        "-p",
        "dataset.validation_size=50",
        "-p",
        "dense.epochs=1",
        "-p",
        "finetune.epochs=1",
        "-p",
        "metrics=[size,flops,accuracy]",
        "--quiet",
    ]
    assert run_main(args) == 0
    (run,) = (tmp_path / "out" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finetuned"]["accuracy"]["test_examples"] == 100
    assert metrics["finetuned"]["accuracy"]["validation_examples"] == 50
    assert abs(metrics["finetuned"]["size"]["compression_ratio"] - 4) < 1e-3


def test_digits_read_directly_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    from shrinkbench_core.builtin.datasets import load_digits_tensors

    images, labels = load_digits_tensors()
    bunch = load_digits()
    assert torch.equal(images, torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16)
    assert torch.equal(labels, torch.tensor(bunch.target, dtype=torch.long))


def test_a_digits_run_imports_neither_scikit_learn_nor_torchvision(tmp_path):
    """Every sweep worker pays these imports (seconds each) for its first run."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from shrinkbench_core.cli import main\n"
        f"code = main(['run', '--output', r'{tmp_path}', '-p', 'dense.epochs=1',"
        " '-p', 'finetune.epochs=1', '--quiet'])\n"
        "heavy = [m for m in ('sklearn', 'torchvision') if m in sys.modules]\n"
        "print('HEAVY', heavy, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "HEAVY [] 0" in out.stdout, out.stdout + out.stderr

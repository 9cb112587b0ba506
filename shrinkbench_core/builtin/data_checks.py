"""Cheap checks of the built-in datasets, run during validation (nothing is loaded).

Each ``check(params) -> list[str]`` returns ``"parameter: problem"`` lines.
"""

from __future__ import annotations

from pathlib import Path

from shrinkbench_core.builtin.catalogue import DigitsParameters, MnistParameters

DIGITS_EXAMPLES = 1797  # scikit-learn's UCI digits
MNIST_TRAIN_EXAMPLES = 60_000
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def check_digits(params: DigitsParameters) -> list[str]:
    """The held-out splits must leave training examples."""
    held = params.validation_size + params.test_size
    if held >= DIGITS_EXAMPLES:
        return [
            f"validation_size: {params.validation_size} validation + {params.test_size} test "
            f"examples leave none of the {DIGITS_EXAMPLES} digits for training"
        ]
    return []


def check_mnist(params: MnistParameters) -> list[str]:
    """The raw files must be present (unless downloading); the validation split must fit."""
    from shrinkbench_core.data import data_root

    problems = []
    if params.validation_size >= MNIST_TRAIN_EXAMPLES:
        problems.append(
            f"validation_size: {params.validation_size} leaves no training examples "
            f"(MNIST has {MNIST_TRAIN_EXAMPLES})"
        )
    raw = Path(data_root(params.root)) / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing and not params.download:
        problems.append(
            f"root: MNIST not found: {raw} lacks {', '.join(missing)}. Get it with "
            "`-p dataset.download=true` (needs internet), or point --data-root or "
            "SHRINKBENCH_DATA at a folder containing MNIST/raw"
        )
    return problems

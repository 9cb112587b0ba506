"""Loading weights from local files, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shrinkbench_core.errors import CheckpointError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict (or a dict holding one under ``state_dict``/``model``) safely."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors of a corrupted file
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(error).__name__}: {str(error)[:200]}"
        ) from None
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict of tensors")
    return data


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model``, raising a short error on any key or shape mismatch."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    problems = []
    if missing:
        problems.append(
            f"missing keys: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected keys: {', '.join(unexpected[:5])}"
            + (" ..." if len(unexpected) > 5 else "")
        )
    if wrong:
        problems.append(
            f"shape mismatch: {', '.join(wrong[:5])}" + (" ..." if len(wrong) > 5 else "")
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match the model {type(model).__name__}: "
            + "; ".join(problems)
        )
    model.load_state_dict(state)

"""Writers of the export formats, each followed by a check that reads the file back.

Every writer gets the model (eval mode, CPU), one example input and a
temporary path; it writes the file there and returns the largest absolute
difference between the reloaded file's outputs (or tensors) and the model's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core.errors import UserError

EXTRA_HINT = "pip install 'shrinkbench-core[export]'"
#: Name of the extra file holding the export's metadata in a ``pt`` archive.
PT_METADATA = "shrinkbench.json"
LIBRARIES = {"pt": (), "safetensors": ("safetensors",), "onnx": ("onnx", "onnxruntime")}


def check_libraries(fmt: str) -> None:
    """Raise a one-line error naming the extra when a library of ``fmt`` is missing."""
    missing = [name for name in LIBRARIES[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"--format {fmt} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {EXTRA_HINT}"
        )


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "logits"):
        return [value.logits]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return []


def max_difference(reference: Any, output: Any) -> float:
    """Largest absolute difference between two outputs' tensors (``inf`` if they differ in
    structure or shape)."""
    first, second = _leaves(reference), _leaves(output)
    if len(first) != len(second) or not first:
        return float("inf")
    worst = 0.0
    for a, b in zip(first, second, strict=True):
        b = torch.as_tensor(b)
        if tuple(a.shape) != tuple(b.shape):
            return float("inf")
        worst = max(worst, float((a.detach().float() - b.float()).abs().max()))
    return worst


def _metadata_json(metadata: dict[str, Any] | None) -> str:
    return json.dumps(metadata or {}, sort_keys=True)


def write_pt(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any] | None = None
) -> tuple[float, list[str]]:
    """A ``torch.export`` program with a dynamic batch dimension when the model allows it.

    ``metadata`` goes, as JSON, into the archive's extra file ``shrinkbench.json``
    (``torch.export.load(f, extra_files={"shrinkbench.json": ""})``).
    """
    notes: list[str] = []
    batch2 = torch.cat([example, example]) if example.shape[0] == 1 else example
    try:
        program = torch.export.export(
            model, (batch2,), dynamic_shapes=({0: torch.export.Dim.AUTO},), strict=False
        )
    except Exception as error:  # some models only export with their example's exact shape
        notes.append(f"exported for batch size {example.shape[0]} only ({type(error).__name__})")
        program = torch.export.export(model, (example,), strict=False)
    with path.open("wb") as handle:  # a file object: any suffix, not only .pt2
        torch.export.save(program, handle, extra_files={PT_METADATA: _metadata_json(metadata)})
    with path.open("rb") as handle:
        loaded = torch.export.load(handle).module()
    with torch.no_grad():
        return max_difference(model(example), loaded(example)), notes


def write_safetensors(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any]
) -> tuple[float, list[str]]:
    """The state dict (every tensor its own contiguous copy) with JSON metadata."""
    from safetensors.torch import load_file, save_file

    state = {
        name: value.detach().clone().contiguous() for name, value in model.state_dict().items()
    }
    header = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
    }
    save_file(state, str(path), metadata=header)
    loaded = load_file(str(path))
    if set(loaded) != set(state):
        return float("inf"), []
    worst = 0.0
    for name, tensor in state.items():
        if tensor.numel():
            worst = max(worst, float((tensor.double() - loaded[name].double()).abs().max()))
    return worst, []


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:300]


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Silence file descriptors 1 and 2 while torch's ONNX exporter runs.

    Its TorchScript-based exporter leaves its C++ log switched on and prints the
    whole graph to stdout when an operator is unsupported; the error says what
    failed instead. The log switch is restored afterwards.
    """
    log_enabled = torch._C._jit_is_onnx_log_enabled()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in saved:
            os.close(descriptor)
        torch._C._jit_set_onnx_log_enabled(log_enabled)


def write_onnx(
    model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any] | None = None
) -> tuple[float, list[str]]:
    """``torch.onnx.export`` (batch dimension dynamic), checked with onnxruntime.

    ``metadata`` goes into the model's ``metadata_props`` (each value a string; JSON
    for structured values).

    Uses torch's TorchScript-based exporter (no extra dependency, mature for
    convolutional networks); when this torch no longer has it or it fails, the
    ``torch.export``-based one (which needs ``onnxscript``).
    """
    import onnx
    import onnxruntime

    notes = ["exporter: TorchScript-based torch.onnx.export"]
    other_formats = "--format pt or safetensors can hold this model"
    with warnings.catch_warnings(), _quiet_output():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        except Exception as error:
            reason = f"{type(error).__name__}: {_first_line(error)}"
            if importlib.util.find_spec("onnxscript") is None:
                raise UserError(
                    f"this model cannot be written as onnx: torch's TorchScript-based "
                    f"exporter failed ({reason}); the torch.export-based exporter would need "
                    f"onnxscript (pip install onnxscript). {other_formats}"
                ) from None
            notes = [f"exporter: torch.export-based (TorchScript-based failed: {reason})"]
            try:
                torch.onnx.export(
                    model, (example,), str(path), dynamo=True, input_names=["input"],
                    output_names=["output"],
                )
            except Exception as second:
                raise UserError(
                    f"this model cannot be written as onnx: torch's TorchScript-based exporter "
                    f"failed ({reason}), and so did the torch.export-based one "
                    f"({type(second).__name__}: {_first_line(second)}). {other_formats}"
                ) from None
    if metadata:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.helper.set_model_props(proto, {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in metadata.items()
        })
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example.numpy()}
    outputs = session.run(None, feed)
    with torch.no_grad():
        reference = model(example)
    return max_difference(reference, [torch.from_numpy(o) for o in outputs]), notes

"""Export a finished run (or any model) to a file that loads without ShrinkBench.

(Named ``exporting`` so that it never shadows the API function ``shrinkbench_core.export``.)

Formats (``shrinkbench export RUN_DIR --format ... --out FILE``, ``sb.export``):

* ``pt``: a ``torch.export`` program (``torch.export.save``); load it with
  ``torch.export.load(FILE).module()``. It holds the graph and the weights, so it
  runs without the model's Python class: shrunk models with unusual channel
  counts and your own architectures load the same way, with torch alone.
* ``safetensors``: the state dict (masks baked in) plus the architecture in the
  file's metadata (``safetensors.torch.load_file``, ``safe_open(...).metadata()``).
* ``onnx``: ``torch.onnx.export``, checked by running onnxruntime on the example
  input.

Importing this package is cheap; torch and the format libraries are imported
when an export runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shrinkbench_core.exporting.core import FORMATS, ExportResult, export_model

__all__ = ["FORMATS", "ExportResult", "export_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from shrinkbench_core.exporting import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

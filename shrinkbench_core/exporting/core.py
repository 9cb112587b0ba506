"""``export_model``: one run (or model) to one file, checked, written atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shrinkbench_core.errors import UserError

FORMATS = ("pt", "safetensors", "onnx")
_SUFFIXES = {".pt": "pt", ".pt2": "pt", ".safetensors": "safetensors", ".onnx": "onnx"}


class ExportCheckError(UserError):
    """The exported file did not reproduce the model's outputs (nothing was kept)."""

    exit_code = 1


@dataclass
class ExportResult:
    """Where the export went and what it holds.

    ``max_abs_diff``: largest difference between the reloaded file's outputs
    (ONNX: onnxruntime's; pt: the reloaded program's; safetensors: the tensors)
    and the model's, on ``example_input``. ``parameters`` / ``nonzero`` count
    the exported model's parameters; ``parameters_before`` those of the
    unshrunk model. ``example_input`` says which input the file was traced and
    checked with: ``source`` ``data`` (a sample of the run's test split), ``random``
    (seeded, when the run's data could not be built; with the reason) or ``given``,
    plus its dtype and shape. The same record is in the file's metadata.
    """

    path: Path
    format: str
    size_bytes: int
    max_abs_diff: float
    parameters: int
    nonzero: int
    parameters_before: int
    shrunk: bool = False
    notes: list[str] = field(default_factory=list)
    example_input: dict[str, Any] = field(default_factory=dict)
    example_summary: str = ""

    def summary(self) -> str:
        """A few human-readable lines."""
        shrink = (
            f", shrunk {self.parameters_before:,} -> {self.parameters:,} parameters "
            f"({self.parameters_before / max(self.parameters, 1):.2f}x)"
            if self.shrunk
            else ""
        )
        lines = [
            f"exported {self.path} ({self.format}, {self.size_bytes / 1e6:.2f} MB, "
            f"{self.nonzero:,} of {self.parameters:,} parameters nonzero{shrink})",
            f"check: max |difference| from the model = {self.max_abs_diff:.3g}",
        ]
        if self.example_summary:
            lines.append(f"example input: {self.example_summary}")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"load: {loader_hint(self.format, self.path)}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "max_abs_diff": self.max_abs_diff,
            "parameters": self.parameters,
            "nonzero": self.nonzero,
            "parameters_before": self.parameters_before,
            "shrunk": self.shrunk,
            "notes": self.notes,
            "example_input": self.example_input,
        }


def loader_hint(fmt: str, path: Path) -> str:
    """The line of Python that loads the file, without ShrinkBench."""
    if fmt == "pt":
        source = f"'{path}'" if path.suffix == ".pt2" else f"open('{path}', 'rb')"
        return f"torch.export.load({source}).module()"
    if fmt == "safetensors":
        return f"safetensors.torch.load_file('{path}')"
    return f"onnxruntime.InferenceSession('{path}')"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def resolve_format(fmt: str | None, out: Path) -> str:
    """``fmt``, or the one ``out``'s suffix names; a clear error otherwise."""
    if fmt is None:
        fmt = _SUFFIXES.get(out.suffix.lower())
        if fmt is None:
            raise UserError(
                f"cannot tell the format from {out.name!r}; pass --format "
                f"{'|'.join(FORMATS)} (or end the file in .pt, .safetensors or .onnx)"
            )
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return fmt


def check_destination(out: Path) -> None:
    """Refuse an ``out`` that is a directory or lies under an existing file."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name, e.g. {out / 'model.onnx'}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot write {out}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise UserError(f"cannot write {out}: {parent} is not writable")
            break


def export_model(
    source: Any,
    out: str | Path,
    *,
    format: str | None = None,  # noqa: A002 - the CLI's --format
    shrink: bool = False,
    model: Any = None,
    example_input: Any = None,
    masks: dict | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Export ``source`` to ``out`` and check the file by loading it back.

    Args:
        source: a completed run (its directory, or a ``RunResult``) or an
            ``nn.Module`` (then ``example_input`` is required).
        out: the file to write (parents are created; an existing file is replaced).
        format: ``pt`` (a ``torch.export`` program), ``safetensors`` (state dict
            and architecture metadata) or ``onnx``; default: from ``out``'s suffix.
        shrink: physically remove pruned channels first
            (:func:`~shrinkbench_core.pruning.shrink.shrink_model`; channel strategies).
        model: for a run of a user-built model, the same architecture (a module
            or a zero-argument function building one); its weights are replaced.
        example_input: one input batch; default for a run: the first sample of the
            run's test split, rebuilt with the run's recorded dataset parameters and
            data seed (its exact dtype and shape), or, when the data cannot be built,
            a seeded random input of the dataset's nominal shape (see
            :mod:`~shrinkbench_core.exporting.example`).
        masks: for a module source, masks to apply (to a copy) first.
        tolerance: largest accepted difference, relative to the output's scale
            (``max |diff| <= tolerance * max(1, max |output|)``).

    Nothing is left at ``out`` unless the check passes.
    """
    import torch
    from torch import nn

    from shrinkbench_core.exporting import formats
    from shrinkbench_core.exporting.source import from_model, from_run

    out = Path(out).expanduser()
    check_destination(out)
    fmt = resolve_format(format, out)
    formats.check_libraries(fmt)
    if isinstance(source, nn.Module):
        loaded = from_model(source, example_input, masks)
    else:
        path = getattr(source, "path", source)
        if not isinstance(path, (str, Path)):
            raise UserError(
                "export source must be a run directory, a RunResult or an nn.Module, "
                f"not {type(source).__name__}"
            )
        loaded = from_run(path, model, example_input)
    exported, before = loaded.model, sum(p.numel() for p in loaded.model.parameters())
    notes: list[str] = []
    channel_config: dict[str, Any] = {}
    if shrink:
        exported, channel_config, shrink_notes = _shrink(loaded)
        notes += shrink_notes
    metadata = {
        "format": "shrinkbench-export",
        "architecture": loaded.architecture,
        "channel_config": channel_config,
        "input_shape": list(loaded.example_input.shape[1:]),
        "input_dtype": str(loaded.example_input.dtype).removeprefix("torch."),
        "example_input": loaded.example.describe() if loaded.example else {},
        "masks_applied": bool(loaded.masks),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if fmt == "pt":
            difference, more = formats.write_pt(
                exported, loaded.example_input, temporary, metadata
            )
        elif fmt == "safetensors":
            difference, more = formats.write_safetensors(
                exported, loaded.example_input, temporary, metadata
            )
        else:
            difference, more = formats.write_onnx(
                exported, loaded.example_input, temporary, metadata
            )
        notes += more
        with torch.no_grad():
            scale = max(1.0, *(float(t.abs().max()) for t in
                               formats._leaves(exported(loaded.example_input))))
        if not difference <= tolerance * scale:
            raise ExportCheckError(
                f"the exported {fmt} file does not reproduce the model: max |difference| "
                f"{difference:.3g} > {tolerance * scale:.3g} on the example input; "
                "nothing was written"
            )
        os.replace(temporary, out)
        os.chmod(out, 0o666 & ~_umask())
    finally:
        temporary.unlink(missing_ok=True)
    with torch.no_grad():
        nonzero = sum(int(torch.count_nonzero(p)) for p in exported.parameters())
    return ExportResult(
        path=out,
        format=fmt,
        size_bytes=out.stat().st_size,
        max_abs_diff=difference,
        parameters=sum(p.numel() for p in exported.parameters()),
        nonzero=nonzero,
        parameters_before=before,
        shrunk=shrink,
        notes=notes,
        example_input=metadata["example_input"],
        example_summary=loaded.example.summary() if loaded.example else "",
    )


def _shrink(loaded: Any) -> tuple[Any, dict[str, Any], list[str]]:
    """The physically shrunk model, its channel config and notes on what stayed."""
    from shrinkbench_core.pruning.shrink import shrink_model

    if loaded.structure not in (None, "channel"):
        raise UserError(
            f"--shrink removes whole channels, but this run's strategy prunes "
            f"{loaded.structure} weights: no channel is empty. Export without --shrink "
            "(the zeros are kept), or use a channel strategy (e.g. GlobalChannelNorm)"
        )
    from shrinkbench_core.pruning.masks import masks_from_model

    masks = loaded.masks or masks_from_model(
        loaded.model, [name for name, p in loaded.model.named_parameters() if p.dim() > 1]
    )
    result = shrink_model(loaded.model, masks, loaded.example_input)
    notes = [f"kept (unsupported pattern): {entry}" for entry in result.unsupported]
    if result.params_after == result.params_before:
        notes.append("no channel was entirely pruned: the shrunk model has the same size")
    return result.model.eval(), result.channel_config, notes

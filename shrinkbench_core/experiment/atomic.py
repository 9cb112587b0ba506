"""Atomic file writes: a crash never leaves a truncated file that looks complete.

A write goes to a temporary file in the same folder, is flushed to disk and renamed over
the target. SIGINT and SIGTERM arriving meanwhile are held back until the file is in
place (then delivered as usual), so Ctrl-C never interrupts ``torch.save`` half-way.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from shrinkbench_core.errors import UserError

_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back in this block; deliver them, once each, after it.

    The Python-level handlers are swapped for a recorder rather than blocking the signals
    with ``pthread_sigmask``: a process-directed signal blocked in the main thread would be
    delivered to another thread (torch, onnxruntime or a tracker's), and Python would still
    run its handler in the main thread in the middle of the write. Only the main thread can
    set handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, Any] = {}
    for signum in _DEFERRED:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: cannot be restored, leave it
            continue
        previous[signum] = handler
        signal.signal(signum, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class FolderInTheWay(UserError, IsADirectoryError):
    """A folder stands where a file is to be written."""


def _atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # the rename would fail after the work of writing
        raise FolderInTheWay(
            f"cannot write {path}: a folder is in its place; remove that folder (in a run "
            "directory, rerunning with --force also clears it and redoes the run)"
        )
    with deferred_signals():
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o666 & ~_umask())  # as open() would create it, not 0600
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    _atomic(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, valid JSON (NaN/inf become null) atomically."""
    atomic_write_text(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically."""
    import torch

    _atomic(path, lambda handle: torch.save(obj, handle))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_json(path: str | Path) -> Any:
    """Read a JSON file (``None`` when missing)."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())

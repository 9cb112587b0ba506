"""Shared fixtures: fake plugin distributions on sys.path, a clean registry, one thread."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from shrinkbench_core.registry import reset_registry


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test builds its own registry from the current environment."""
    for var in (
        "SHRINKBENCH_LOAD_PLUGINS",
        "SHRINKBENCH_DISABLE_PLUGINS",
        "SHRINKBENCH_STRICT_PLUGINS",
    ):
        monkeypatch.delenv(var, raising=False)
    reset_registry()
    yield
    reset_registry()


class FakeDistributions:
    """Writes real ``*.dist-info`` folders with ``shrinkbench`` entry points into a sys.path dir."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def add(self, distribution: str, module: str, source: str, version: str = "1.0") -> None:
        """Install distribution ``distribution`` whose entry point loads module ``module``."""
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(f"[shrinkbench]\n{distribution} = {module}\n")
        self.modules.append(module)
        importlib.invalidate_caches()

    def cleanup(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)


@pytest.fixture
def fake_dists(tmp_path, monkeypatch):
    """Install fake plugin distributions for the duration of a test."""
    (tmp_path / "site").mkdir()
    dists = FakeDistributions(tmp_path / "site", monkeypatch)
    yield dists
    dists.cleanup()
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of many small tensor ops, which threads only slow
    down (use with ``pytestmark = pytest.mark.usefixtures("single_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

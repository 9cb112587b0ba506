"""What a run records about where it ran: versions of everything used, the git commit."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from shrinkbench_core import __version__
from shrinkbench_core.experiment.resolve import ResolvedExperiment


def git_commit() -> str | None:
    """The commit of the source tree the core runs from, when it is a git checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def installed_version(distribution: str) -> str | None:
    """Version of an installed distribution, read from its metadata (no import: importing
    torchvision alone takes seconds, paid again by every sweep worker)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def versions(resolved: ResolvedExperiment) -> dict[str, Any]:
    """Versions of python, torch, the core and every plugin used, and the git commit."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": installed_version("torchvision"),
        "shrinkbench-core": __version__,
        "plugins": resolved.plugin_versions(),
        "git_commit": git_commit(),
    }

"""Errors a user can act on.

Anything raised as a :class:`UserError` is shown by the CLI as a short message
(no traceback) and exits with code 2.
"""

from __future__ import annotations

import sys
import warnings


class UserError(Exception):
    """A mistake in the user's input: shown without a traceback, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """One or more invalid configuration fields, each as ``field: problem``."""

    def __init__(self, problems: list[str], title: str = "invalid configuration") -> None:
        self.problems = list(problems)
        self.title = title
        super().__init__(self.__str__())

    def __str__(self) -> str:
        # A problem may carry more lines (e.g. a broken plugin's error): indent them further.
        lines = [f"  {p}".replace("\n", "\n    ") for p in self.problems]
        return self.title + ":\n" + "\n".join(lines)


class UnknownComponentError(UserError, LookupError):
    """A component name that the registry does not know (with suggestions)."""


class PluginError(UserError):
    """A plugin failed to load, or one of its components was asked for while broken."""


class CompressionError(UserError, ValueError):
    """A compression ratio that is invalid or cannot be reached."""


class MaskError(UserError, ValueError):
    """A mask that does not fit the model (unknown name, wrong shape or dtype)."""


class DataMissingError(UserError, FileNotFoundError):
    """Dataset files are not where they were looked for."""


class CheckpointError(UserError):
    """A checkpoint that is corrupted or does not match the model."""


class ShrinkBenchWarning(UserWarning):
    """Something the user should know that does not stop the run.

    The CLI prints it as one ``shrinkbench: warning: ...`` line (no source line);
    Python callers can filter or catch it like any warning.
    """


def warn(message: str) -> None:
    """Issue a :class:`ShrinkBenchWarning` attributed to the caller's caller."""
    warnings.warn(message, ShrinkBenchWarning, stacklevel=3)


def show_shrinkbench_warnings() -> None:
    """Print ShrinkBench warnings as one plain line each (other warnings keep Python's format)."""
    if getattr(warnings.showwarning, "_shrinkbench", False):
        return
    original = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ShrinkBenchWarning):
            print(f"shrinkbench: warning: {message}", file=file or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    showwarning._shrinkbench = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning

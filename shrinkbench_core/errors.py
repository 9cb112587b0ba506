"""Errors a user can act on.

Anything raised as a :class:`UserError` is shown by the CLI as a short message
(no traceback) and exits with code 2.
"""

from __future__ import annotations


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
        return self.title + ":\n" + "\n".join(f"  {p}" for p in self.problems)


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

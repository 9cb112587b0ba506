"""Run events: the information passed to the lifecycle hooks, and their safe dispatch.

The runner announces what happens (run start/end, stage end, epoch end, pruning step)
through :class:`RunEvents`. Every ``shrinkbench_*`` lifecycle implementation of the
installed plugins, and of the trackers selected for the run, is called. An implementation
that raises is reported once on stderr and skipped for the rest of the run, so a failing
tracker never stops an experiment or loses its results.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIFECYCLE_HOOKS = (
    "shrinkbench_run_start",
    "shrinkbench_run_end",
    "shrinkbench_stage_end",
    "shrinkbench_epoch_end",
    "shrinkbench_pruning_step",
)


@dataclass
class RunInfo:
    """What a lifecycle hook knows about the run it is called for."""

    path: Path
    name: str
    digest: str
    config: dict[str, Any]
    resumed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class RunEvents:
    """Calls lifecycle hooks of a plugin manager, isolating failures per implementation.

    ``plugins`` are extra plugin objects (the run's trackers) registered for the lifetime of
    this object; call :meth:`close` (or use it as a context manager) to unregister them.
    """

    def __init__(self, manager: Any, run: RunInfo, plugins: Iterable[tuple[str, object]] = ()):
        self.manager = manager
        self.run = run
        self.failed: dict[str, str] = {}
        self._registered: list[object] = []
        for name, plugin in plugins:
            manager.register(plugin, name=name)
            self._registered.append(plugin)

    def emit(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name`` with ``run`` and ``kwargs``."""
        if hook_name not in LIFECYCLE_HOOKS:
            raise ValueError(f"unknown lifecycle hook {hook_name!r}; known: {LIFECYCLE_HOOKS}")
        caller = getattr(self.manager.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            plugin_name = impl.plugin_name
            if plugin_name in self.failed:
                continue
            try:
                impl.function(**{k: v for k, v in {"run": self.run, **kwargs}.items()
                                 if k in impl.argnames})
            except Exception as error:  # a tracker must never take the run down
                message = f"{type(error).__name__}: {error}".splitlines()[0]
                self.failed[plugin_name] = message
                print(
                    f"shrinkbench: warning: '{plugin_name}' failed in {hook_name} and is "
                    f"disabled for this run: {message}",
                    file=sys.stderr,
                )

    def close(self) -> None:
        """Unregister the run's own plugins (trackers)."""
        for plugin in self._registered:
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
        self._registered.clear()

    def __enter__(self) -> RunEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

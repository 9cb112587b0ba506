"""Experiment trackers: plugin objects that observe a run through the lifecycle hooks.

A tracker is registered by a plugin (``shrinkbench_register_trackers``) and selected per run
with ``trackers = [tensorboard, mlflow, wandb]`` (``-p trackers=[tensorboard]``). The runner
passes :func:`tracker_plugins` to :class:`shrinkbench_core.lifecycle.RunEvents`, which
registers them for the run only and disables (with a one-line warning) any that fails, so
a tracker never loses the run's own results. :func:`tracker_problems` finds unknown names,
bad parameters and missing libraries before anything runs.
"""

from shrinkbench_core.trackers.base import Tracker, TrackerError
from shrinkbench_core.trackers.selection import missing_modules, tracker_plugins, tracker_problems

__all__ = ["Tracker", "TrackerError", "missing_modules", "tracker_plugins", "tracker_problems"]

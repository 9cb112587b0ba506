"""Run directory names, without importing torch (sweep planning uses them)."""

from __future__ import annotations

from shrinkbench_core.experiment.resolve import ResolvedExperiment


def run_name(resolved: ResolvedExperiment) -> str:
    """Directory name of a run: readable fields (the schedule's label unless one-shot), digest."""
    config = resolved.config
    strategy = config.strategy.name.replace(":", "-")
    schedule = "" if config.schedule.kind == "oneshot" else f"-{config.schedule.label()}"
    return (
        f"{config.dataset.name}-{config.model.name}-{strategy}-"
        f"c{config.compression:g}-s{config.seed}{schedule}-{config.digest()[:10]}"
    )

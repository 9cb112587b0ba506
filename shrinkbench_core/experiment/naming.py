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
        f"{sparsity_label(resolved)}-s{config.seed}{schedule}-{config.digest()[:10]}"
    )


def sparsity_label(resolved: ResolvedExperiment) -> str:
    """``c4`` for a requested compression; ``2of4`` for an N:M pattern, which fixes it."""
    params = resolved.config.strategy.params
    spec = getattr(resolved, "strategy", None)
    if getattr(spec, "structure", None) == "n:m" and "n" in params and "m" in params:
        return f"{params['n']}of{params['m']}"
    return f"c{resolved.config.compression:g}"

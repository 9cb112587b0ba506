"""``shrinkbench-run --print-config``: the fully resolved configuration, run nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def resolved_config(resolved: Any) -> dict[str, Any]:
    """What a run of ``resolved`` would use.

    ``config`` is every field with its default filled in (component parameters
    included, schedule, ``dense.source``, prunable rules); it can be saved and
    passed back with ``--config``. ``derived`` shows what follows from it: the
    seeds of each stage, the digests and the run directory.
    """
    config = resolved.config
    try:
        from shrinkbench_core.experiment.naming import run_name

        run_dir: str | None = str(Path(config.output) / "runs" / run_name(resolved))
    except Exception:  # naming is not essential to show the config
        run_dir = None
    return {
        "config": config.model_dump(mode="json"),
        "derived": {
            "seeds": config.seeds.resolve(config.seed).model_dump(mode="json"),
            "digest": config.digest(),
            "dense_digest": config.dense_digest(),
            "run_dir": run_dir,
            "component_defaults": getattr(resolved, "defaults", {}),  # their config_defaults
        },
    }


def format_resolved_config(resolved: Any) -> str:
    """:func:`resolved_config` as indented JSON."""
    return json.dumps(resolved_config(resolved), indent=2)

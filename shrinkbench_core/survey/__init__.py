"""The literature survey of ShrinkBench: 81 pruning papers as data, queries and plots.

- :mod:`.load`: the shipped exports as tidy tables (every conversion rule is
  documented there): :func:`load_results`, :func:`load_papers`, :func:`load_issues`;
- :mod:`.names`: our names <-> the survey's (:func:`survey_pair_for`);
- :mod:`.query`: filters, papers per pair, pairs ranked by results;
- :mod:`.plot`: :func:`plot_pair` and :func:`overlay_survey` (matplotlib);
- :mod:`.cli`: ``shrinkbench survey papers|results|pairs|issues|plot``.

Nothing here imports torch; attributes are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_results": "load",
    "load_papers": "load",
    "load_issues": "load",
    "survey_pair_for": "names",
    "NameMapping": "names",
    "pairs_table": "query",
    "papers_table": "query",
    "filter_results": "query",
    "plot_pair": "plot",
    "overlay_survey": "plot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)

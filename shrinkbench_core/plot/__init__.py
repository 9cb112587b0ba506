"""Tradeoff plots of a results directory (``shrinkbench plot DIR``, :func:`plot_tradeoff`).

Importing this package is cheap; pandas and matplotlib are imported when a figure is drawn.
"""

from __future__ import annotations

from shrinkbench_core.plot.tradeoff import (
    TradeoffSummary,
    dense_reference,
    plot_tradeoff,
    save_figure,
    tradeoff_points,
)

__all__ = ["TradeoffSummary", "dense_reference", "plot_tradeoff", "save_figure", "tradeoff_points"]

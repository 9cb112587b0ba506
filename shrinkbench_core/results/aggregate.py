"""Mean and standard deviation over seeds: the table a paper reports.

:func:`aggregate_results` turns the one-row-per-run table of
:func:`~shrinkbench_core.results.collect.load_results` into one row per
(dataset, model, strategy, schedule, requested compression), with the parameters
of each component as part of the key. Only complete runs are aggregated; every
numeric column becomes ``<column>_mean`` and ``<column>_std`` (sample standard
deviation, ``NaN`` for a single seed) and ``seeds`` counts the runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shrinkbench_core.results.collect import NUMERIC

if TYPE_CHECKING:
    import pandas as pd

#: The key of one aggregated row.
GROUP_BY = (
    "dataset", "model", "model_params", "strategy", "strategy_params", "schedule", "compression",
)


def aggregate_results(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per :data:`GROUP_BY` key over the complete runs of ``frame``.

    Columns: the key, ``seeds``, then ``<column>_mean`` and ``<column>_std`` for
    every numeric column of the results table (requested compression excluded:
    it is part of the key). Empty (with its columns) when no run is complete.
    """
    import pandas as pd

    values = [c for c in NUMERIC if c != "compression" and c in frame.columns]
    columns = [*GROUP_BY, "seeds", *(f"{c}_{s}" for c in values for s in ("mean", "std"))]
    runs = frame[frame["status"] == "complete"] if "status" in frame else frame
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.assign(**{key: runs[key].fillna("") for key in GROUP_BY if key != "compression"})
    grouped = runs.groupby(list(GROUP_BY), sort=True, dropna=False)
    table = grouped[values].agg(["mean", "std"])
    table.columns = [f"{column}_{stat}" for column, stat in table.columns]
    table.insert(0, "seeds", grouped.size())
    return table.reset_index()[columns]

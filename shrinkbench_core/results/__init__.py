"""Results of many runs as one table (``shrinkbench results DIR``, :func:`load_results`).

Importing this package is cheap; pandas is imported when a table is built.
"""

from __future__ import annotations

from shrinkbench_core.results.aggregate import aggregate_results
from shrinkbench_core.results.collect import COLUMNS, find_run_dirs, load_results, run_row

__all__ = ["COLUMNS", "aggregate_results", "find_run_dirs", "load_results", "run_row"]

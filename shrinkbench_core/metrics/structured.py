"""The ``structured`` metric: theoretical vs measured speedup, masked vs physically shrunk.

For a model pruned by whole channels, the pruned channels are removed
(:func:`shrinkbench_core.pruning.shrink.shrink_model`) and three speedups are
reported side by side: the theoretical one (dense / nonzero multiply-adds), the
measured one of the masked model (usually about 1x: zeros cost as much as any
weight) and the measured one of the shrunk model. A model the tracer cannot
handle is reported with its error instead of failing the run.
"""

from __future__ import annotations

from typing import Any

from shrinkbench_core.builtin.metrics import StructuredParameters
from shrinkbench_core.errors import UserError
from shrinkbench_core.metrics import MetricContext


def compute(context: MetricContext, params: StructuredParameters) -> dict[str, Any]:
    """Speedups of the masked and shrunk model on a batch of ``params.batch_size``."""
    from shrinkbench_core.pruning.shrink import structured_speedups

    example = context.example_input
    batch_size = params.batch_size or context.batch_size
    batch = example[:1].repeat(batch_size, *([1] * (example.dim() - 1)))
    try:
        result = structured_speedups(context.model, context.masks, batch, repeats=params.repeats)
    except UserError as error:
        return {"error": str(error).splitlines()[0]}
    return {
        key: value
        for key, value in result.items()
        if isinstance(value, (int, float, str, bool)) or value is None
    }

"""The ``structured`` metric: theoretical vs measured speedup, masked vs physically shrunk.

For a model pruned by whole channels, the pruned channels are removed
(:func:`shrinkbench_core.pruning.shrink.shrink_model`) and three speedups are
reported side by side: the theoretical one (dense / nonzero multiply-adds), the
measured one of the masked model (usually about 1x: zeros cost as much as any
weight) and the measured one of the shrunk model. Patterns the channel analysis
left intact are kept in the result (``unsupported``: one line each,
``unsupported_count``) and noted on stderr, so they reach ``metrics.json`` and
the screen. A model the tracer cannot handle is reported with its error instead
of failing the run.
"""

from __future__ import annotations

import sys
from typing import Any

from shrinkbench_core.builtin.metrics import StructuredParameters
from shrinkbench_core.errors import UserError
from shrinkbench_core.metrics import MetricContext

SHOWN_ON_SCREEN = 5
"""Unsupported patterns printed on stderr; all of them go to the result."""


def compute(context: MetricContext, params: StructuredParameters) -> dict[str, Any]:
    """Speedups of the masked and shrunk model on a batch of ``params.batch_size``."""
    from shrinkbench_core.pruning.shrink import structured_speedups

    example = context.example_input
    batch_size = params.batch_size or context.batch_size
    batch = example[:1].repeat(batch_size, *([1] * (example.dim() - 1)))
    try:
        result = structured_speedups(context.model, context.masks, batch, repeats=params.repeats)
    except UserError as error:
        message = str(error).splitlines()[0]
        print(f"shrinkbench: note: structured metric: {message}", file=sys.stderr)
        return {"error": message}
    unsupported = [str(entry) for entry in result.get("unsupported", [])]
    metrics = {
        key: value
        for key, value in result.items()
        if isinstance(value, (int, float, str, bool)) or value is None
    }
    metrics["unsupported"] = unsupported
    metrics["unsupported_count"] = len(unsupported)
    if unsupported:
        note(unsupported)
    return metrics


def note(unsupported: list[str]) -> None:
    """Tell the user on stderr which patterns kept channels the masks asked to remove."""
    lines = [
        f"shrinkbench: note: structured metric: {len(unsupported)} pattern(s) kept channels "
        "intact (shrunk model is larger than the masks ask; see metrics.json 'unsupported'):"
    ]
    lines += [f"  {entry}" for entry in unsupported[:SHOWN_ON_SCREEN]]
    if len(unsupported) > SHOWN_ON_SCREEN:
        lines.append(f"  ... and {len(unsupported) - SHOWN_ON_SCREEN} more")
    print("\n".join(lines), file=sys.stderr)

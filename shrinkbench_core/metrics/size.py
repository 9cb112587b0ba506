"""Model size: parameter counts, compression ratio and storage.

Counts every parameter of the model once (shared parameters once), as
``model.parameters()`` does; buffers (e.g. batch-norm running statistics) are
not parameters and are not counted. Weights are read as they are: masks are
already applied as zeros. Weights on the ``meta`` device count as nonzero.

* ``compression_ratio`` = all parameters / nonzero parameters (the paper's
  definition: parameters that are not prunable count too).
* ``pruned_parameters`` = entries of the prunable parameters that equal zero.
* ``dense_bytes`` = sum of ``numel x element size`` over parameters.
* ``sparse_bytes``: each parameter stored as a bitmap of its nonzero positions
  (``ceil(numel / 8)`` bytes) followed by its nonzero values, or dense when that
  is smaller. This is a simple, exact bound a real sparse format can reach; it
  ignores file headers and names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from shrinkbench_core.builtin.metrics import SizeParameters
from shrinkbench_core.errors import MaskError
from shrinkbench_core.metrics import MetricContext


@dataclass(frozen=True)
class SizeReport:
    """Parameter counts and storage of a model (counts in parameters, sizes in bytes)."""

    total_parameters: int
    nonzero_parameters: int
    prunable_parameters: int
    pruned_parameters: int
    dense_bytes: int
    sparse_bytes: int

    @property
    def compression_ratio(self) -> float:
        """All parameters / nonzero parameters (``inf`` when every parameter is zero)."""
        if self.nonzero_parameters == 0:
            return float("inf")
        return self.total_parameters / self.nonzero_parameters

    @property
    def pruned_fraction(self) -> float:
        """Fraction of the prunable parameters that are zero."""
        if not self.prunable_parameters:
            return 0.0
        return self.pruned_parameters / self.prunable_parameters

    def as_dict(self) -> dict[str, Any]:
        """Counts plus ``compression_ratio`` (``None`` if infinite) and ``pruned_fraction``."""
        ratio = self.compression_ratio
        return {
            **asdict(self),
            "compression_ratio": ratio if ratio != float("inf") else None,
            "pruned_fraction": self.pruned_fraction,
        }


def count_nonzero(tensor: torch.Tensor) -> int:
    """Nonzero entries of ``tensor`` (all of them on the ``meta`` device, which has no values)."""
    if tensor.device.type == "meta":
        return tensor.numel()
    return int(torch.count_nonzero(tensor))


def sparse_storage_bytes(tensor: torch.Tensor, nonzero: int | None = None) -> int:
    """Bytes of ``tensor`` as bitmap + nonzero values, or dense if that is smaller.

    ``nonzero`` may pass the tensor's nonzero count when it is already known.
    """
    nonzero = count_nonzero(tensor) if nonzero is None else nonzero
    dense = tensor.numel() * tensor.element_size()
    bitmap = -(-tensor.numel() // 8) + nonzero * tensor.element_size()
    return min(dense, bitmap)


def count_parameters(model: nn.Module, prunable: Iterable[str] | None = None) -> SizeReport:
    """Count the parameters of ``model``.

    ``prunable`` names the prunable parameters (e.g. ``MetricContext.prunable``);
    ``None`` uses the default rule of :func:`shrinkbench_core.pruning.prunable.
    prunable_parameters` (every convolution and linear weight; the classifier is
    included since it is not known here). Raises :class:`MaskError` for a name
    the model does not have.
    """
    params = dict(model.named_parameters())
    if prunable is None:
        from shrinkbench_core.pruning.prunable import prunable_parameters

        prunable = prunable_parameters(model, classifier=None)
    prunable = list(dict.fromkeys(prunable))
    unknown = [name for name in prunable if name not in params]
    if unknown:
        raise MaskError(
            f"prunable parameter(s) not in the model: {', '.join(unknown[:5])}. "
            f"The model's parameters look like: {', '.join(list(params)[:3])} ..."
        )
    with torch.no_grad():
        nonzero = {name: count_nonzero(p) for name, p in params.items()}
        return SizeReport(
            total_parameters=sum(p.numel() for p in params.values()),
            nonzero_parameters=sum(nonzero.values()),
            prunable_parameters=sum(params[name].numel() for name in prunable),
            pruned_parameters=sum(params[name].numel() - nonzero[name] for name in prunable),
            dense_bytes=sum(p.numel() * p.element_size() for p in params.values()),
            sparse_bytes=sum(sparse_storage_bytes(p, nonzero[n]) for n, p in params.items()),
        )


def compute(context: MetricContext, params: SizeParameters) -> dict[str, Any]:
    """The ``size`` metric on ``context.model`` with ``context.prunable``.

    Keys: ``total_parameters``, ``nonzero_parameters``, ``prunable_parameters``,
    ``pruned_parameters``, ``pruned_fraction``, ``compression_ratio``,
    ``dense_bytes``, ``sparse_bytes``.
    """
    return count_parameters(context.model, context.prunable).as_dict()

"""Random pruning: the control every method must beat."""

from __future__ import annotations

import torch

from shrinkbench_core.pruning import Masks, Strategy


class RandomPruning(Strategy):
    """Keep a uniformly random subset of exactly the budgeted size (seeded)."""

    def model_masks(self) -> Masks:
        scores = {
            name: torch.rand(p.shape, generator=self.generator).to(p.device)
            for name, p in self.params().items()
        }
        return self.keep_top(scores)

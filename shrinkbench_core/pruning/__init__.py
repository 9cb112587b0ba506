"""The pruning engine: masks, importance helpers and strategy base classes."""

from shrinkbench_core.pruning.compression import Budget, compression_budget, fraction_to_keep
from shrinkbench_core.pruning.importance import (
    Threshold,
    allocate_counts,
    count_threshold,
    flatten_importances,
    fraction_mask,
    fraction_threshold,
    importance_masks,
    map_importances,
    top_count_masks,
)
from shrinkbench_core.pruning.masks import (
    MaskHolder,
    Masks,
    apply_masks,
    hold_masks,
    load_masks,
    mask_overlap,
    masks_equal,
    masks_from_model,
    masks_summary,
    save_masks,
    validate_masks,
)
from shrinkbench_core.pruning.prunable import PrunableRule, find_classifier, prunable_parameters
from shrinkbench_core.pruning.strategy import LayerStrategy, Strategy

__all__ = [
    "Budget",
    "LayerStrategy",
    "MaskHolder",
    "Masks",
    "PrunableRule",
    "Strategy",
    "Threshold",
    "allocate_counts",
    "apply_masks",
    "compression_budget",
    "count_threshold",
    "find_classifier",
    "flatten_importances",
    "fraction_mask",
    "fraction_threshold",
    "fraction_to_keep",
    "hold_masks",
    "importance_masks",
    "load_masks",
    "map_importances",
    "mask_overlap",
    "masks_equal",
    "masks_from_model",
    "masks_summary",
    "prunable_parameters",
    "save_masks",
    "top_count_masks",
    "validate_masks",
]

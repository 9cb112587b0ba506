"""Which parameters may be pruned: a rule the user can change.

Default: the ``weight`` of every convolution (1d/2d/3d, transposed) and
linear layer, except the classifier; never biases or normalization
parameters. The rule can add module types or parameter names by shell-style
pattern, remove others, or keep the classifier prunable.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from shrinkbench_core.config import DEFAULT_PRUNABLE_TYPES, PrunableRule

__all__ = ["DEFAULT_PRUNABLE_TYPES", "PrunableRule", "find_classifier", "prunable_parameters"]


def find_classifier(model: nn.Module, example_input: torch.Tensor) -> str | None:
    """Module name of the classifier: the last Linear/Conv layer executed whose output
    has as many features/channels as the model's output.

    Found by running ``example_input`` once with forward hooks (no state is changed:
    the model is run in eval mode under ``torch.no_grad``).
    """
    executed: list[tuple[str, int]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):

            def hook(mod, _inputs, output, name=name):
                if isinstance(output, torch.Tensor):
                    size = output.shape[-1] if isinstance(mod, nn.Linear) else output.shape[1]
                    executed.append((name, int(size)))

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not hasattr(output, "logits") and not isinstance(output, torch.Tensor):
        return None
    output = getattr(output, "logits", output)
    classes = int(output.shape[-1])
    for name, size in reversed(executed):
        if size == classes:
            return name
    return None


def prunable_parameters(
    model: nn.Module, rule: PrunableRule | None = None, classifier: str | None = None
) -> list[str]:
    """Names of the parameters ``rule`` allows to prune, in model order."""
    rule = rule or PrunableRule()
    names: list[str] = []
    classifier_params = {f"{classifier}.weight", f"{classifier}.bias"} if classifier else set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            classes = {cls.__name__ for cls in type(module).__mro__}
            by_type = param_name == "weight" and not classes.isdisjoint(rule.module_types)
            by_pattern = any(fnmatch.fnmatchcase(full, p) for p in rule.include)
            if not (by_type or by_pattern):
                continue
            if any(fnmatch.fnmatchcase(full, p) for p in rule.exclude):
                continue
            if rule.exclude_classifier and full in classifier_params and not by_pattern:
                continue
            names.append(full)
    return names

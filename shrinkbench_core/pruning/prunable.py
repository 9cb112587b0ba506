"""Which parameters may be pruned: a rule the user can change.

Default: the ``weight`` of every convolution (1d/2d/3d, transposed) and
linear layer, except the classifier; never biases or normalization
parameters. The rule can add module types or parameter names by shell-style
pattern, remove others, or keep the classifier prunable.

The classifier is located by :func:`locate_classifier`: from the model's
``torch.fx`` graph (the one Linear/Conv layer that every path to the output
ends with; no forward pass), else by running an example input with forward
hooks (:func:`find_classifier`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shrinkbench_core.config import DEFAULT_PRUNABLE_TYPES, PrunableRule

__all__ = [
    "DEFAULT_PRUNABLE_TYPES",
    "PrunableRule",
    "find_classifier",
    "graph_classifier",
    "locate_classifier",
    "prunable_parameters",
]

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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


def graph_classifier(model: nn.Module) -> str | None:
    """Module name of the one Linear/Conv layer that ends every path to the model's output.

    Read from the ``torch.fx`` graph of ``model`` (symbolic tracing: no forward
    pass, no state change). ``None`` when several such layers feed the output or
    none does. Raises whatever ``torch.fx`` raises for a model it cannot trace.
    """
    import torch.fx

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    found: set[str] = set()
    seen: set[torch.fx.Node] = set()
    stack = [node for node in graph.nodes if node.op == "output"]
    while stack:
        for source in stack.pop().all_input_nodes:
            if source in seen:
                continue
            seen.add(source)
            if source.op == "call_module" and isinstance(modules.get(source.target), _LAYER_TYPES):
                found.add(str(source.target))
            else:
                stack.append(source)
    return found.pop() if len(found) == 1 else None


def locate_classifier(
    model: nn.Module, example_input: Any = None, problems: list[str] | None = None
) -> str | None:
    """Module name of the classifier, or ``None`` when it cannot be found.

    Tries :func:`graph_classifier` first (cheap), then, when ``example_input``
    is given, :func:`find_classifier` (one forward pass with hooks). Why each
    attempt failed is appended to ``problems`` when a list is passed.
    """
    problems = [] if problems is None else problems
    try:
        name = graph_classifier(model)
        if name is not None:
            return name
        problems.append("its torch.fx graph does not end in a single Linear/Conv layer")
    except Exception as error:  # any model torch.fx cannot follow
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        problems.append(f"torch.fx cannot trace it ({type(error).__name__}: {first[:160]})")
    if example_input is None:
        problems.append("no example input was given to run it")
        return None
    try:
        name = find_classifier(model, example_input)
    except Exception as error:
        problems.append(f"running the example input failed ({type(error).__name__}: {error})")
        return None
    if name is None:
        problems.append(
            "running the example input gave no tensor of class scores made by a "
            "Linear/Conv layer"
        )
    return name


def example_from(
    model: nn.Module,
    calibration: Sequence[tuple[torch.Tensor, Any]] | None,
    input_shape: Sequence[int] | None,
) -> torch.Tensor | None:
    """One input of batch size 1 for ``model``: from the calibration data, else zeros of
    ``input_shape``, else ``None``."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if calibration:
        inputs = calibration[0][0]
        if isinstance(inputs, torch.Tensor):
            return inputs[:1].to(device)
    if input_shape is not None:
        return torch.zeros(1, *input_shape, device=device)
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

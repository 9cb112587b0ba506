"""Import a component's factory and check it against the plugin contract, before a run.

Registration never imports a factory (listing stays free of torch); a run
imports every factory it will use during validation, so a plugin whose module
fails to import, or whose factory breaks the contract, is reported as one
``field: problem`` line before anything is trained or written.
"""

from __future__ import annotations

from typing import Any

from shrinkbench_core.specs import ComponentSpec, NoParameters, StrategySpec


def _plugin(spec: ComponentSpec) -> str:
    return spec.distribution or spec.plugin or "unknown plugin"


def factory_problem(spec: ComponentSpec) -> str | None:
    """Why ``spec``'s factory cannot be used (``None`` when it imports and fits the contract).

    Modules that imported stay in ``sys.modules``, so checking the same
    component again (every run of a sweep) costs a dictionary lookup.
    """
    module_name = spec.factory.partition(":")[0]
    try:
        factory = spec.load()
    except ImportError as error:
        return f"cannot import {module_name} (plugin {_plugin(spec)}): {error}"
    except AttributeError as error:
        return f"cannot import {spec.factory} (plugin {_plugin(spec)}): {error}"
    except Exception as error:  # any failure while importing the plugin's module
        return (
            f"cannot import {module_name} (plugin {_plugin(spec)}): "
            f"{type(error).__name__}: {error}"
        )
    if isinstance(spec, StrategySpec):
        return _strategy_problem(spec, factory)
    if not callable(factory):
        return (
            f"{spec.factory} (plugin {_plugin(spec)}) is a {type(factory).__name__}, "
            f"not a callable {spec.kind} factory"
        )
    return None


def _strategy_problem(spec: StrategySpec, factory: Any) -> str | None:
    from shrinkbench_core.pruning.strategy import Strategy

    where = f"{spec.factory} (plugin {_plugin(spec)})"
    if not (isinstance(factory, type) and issubclass(factory, Strategy)):
        return f"{where} is not a subclass of shrinkbench_core.pruning.Strategy"
    declared = factory.Parameters
    if declared is not NoParameters and not issubclass(spec.parameters, declared):
        return (
            f"{where}: the spec's parameters ({spec.parameters.__name__}) are not the "
            f"class's Parameters ({declared.__name__}); register the same model on both"
        )
    return None


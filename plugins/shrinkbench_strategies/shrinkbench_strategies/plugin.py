"""Registers the strategies of this package with ShrinkBench (no torch import here)."""

from __future__ import annotations

from shrinkbench_core.hookspecs import hookimpl
from shrinkbench_core.specs import StrategySpec

HAN_2015 = "Han et al. 2015, Learning both Weights and Connections for Efficient Neural Networks"
MOLCHANOV_2017 = (
    "Molchanov et al. 2017, Pruning Convolutional Neural Networks for Resource Efficient Inference"
)
MOLCHANOV_2019 = "Molchanov et al. 2019, Importance Estimation for Neural Network Pruning"
LI_2017 = "Li et al. 2017, Pruning Filters for Efficient ConvNets"
BLALOCK_2020 = "Blalock et al. 2020, What is the State of Neural Network Pruning?"

_MODULE = "shrinkbench_strategies"


def _spec(name: str, module: str, summary: str, scope: str, **facts) -> StrategySpec:
    return StrategySpec(
        name=name, summary=summary, factory=f"{_MODULE}.{module}:{name}", scope=scope, **facts
    )


def strategy_specs() -> list[StrategySpec]:
    """Every strategy this package provides."""
    from shrinkbench_strategies.advanced_specs import advanced_strategy_specs
    from shrinkbench_strategies.params import (
        ChannelParameters,
        ChannelTaylorParameters,
        MagActParameters,
        MagGradParameters,
    )

    return [
        _spec(
            "GlobalMagWeight",
            "magnitude",
            "Largest |w| across all layers",
            "global",
            reference=HAN_2015,
        ),
        _spec(
            "LayerMagWeight",
            "magnitude",
            "Largest |w| within each layer",
            "layerwise",
            reference=HAN_2015,
        ),
        _spec(
            "GlobalMagGrad",
            "gradient",
            "Largest |w * grad| across all layers (calibration data)",
            "global",
            needs_data=True,
            needs_gradients=True,
            parameters=MagGradParameters,
            reference=MOLCHANOV_2017,
        ),
        _spec(
            "LayerMagGrad",
            "gradient",
            "Largest |w * grad| within each layer (calibration data)",
            "layerwise",
            needs_data=True,
            needs_gradients=True,
            parameters=MagGradParameters,
            reference=MOLCHANOV_2017,
        ),
        _spec(
            "GlobalMagAct",
            "activation",
            "Largest |w| x input activation (mean |x| or |mean x|) across all layers",
            "global",
            needs_data=True,
            parameters=MagActParameters,
            reference=BLALOCK_2020,
        ),
        _spec(
            "LayerMagAct",
            "activation",
            "Largest |w| x input activation (mean |x| or |mean x|) within each layer",
            "layerwise",
            needs_data=True,
            parameters=MagActParameters,
            reference=BLALOCK_2020,
        ),
        _spec(
            "RandomPruning",
            "random",
            "Uniformly random weights (seeded), the control baseline",
            "global",
            reference=BLALOCK_2020,
        ),
        _spec(
            "GlobalChannelNorm",
            "channel",
            "Whole output channels with the lowest L1/L2 norm across all layers",
            "global",
            structure="channel",
            parameters=ChannelParameters,
            reference=LI_2017,
        ),
        _spec(
            "LayerChannelNorm",
            "channel",
            "Whole output channels with the lowest L1/L2 norm within each layer",
            "layerwise",
            structure="channel",
            parameters=ChannelParameters,
            reference=LI_2017,
        ),
        _spec(
            "ChannelTaylor",
            "channel",
            "Whole tied channels with the lowest first-order Taylor importance (calibration data)",
            "global",
            needs_data=True,
            needs_gradients=True,
            structure="channel",
            parameters=ChannelTaylorParameters,
            reference=MOLCHANOV_2019,
        ),
        *advanced_strategy_specs(),
    ]


@hookimpl
def shrinkbench_register_strategies() -> list[StrategySpec]:
    """Register the baselines of the original ShrinkBench plus channel pruning."""
    return strategy_specs()

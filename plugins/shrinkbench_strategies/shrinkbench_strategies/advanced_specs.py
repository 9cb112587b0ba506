"""Specs of the strategies beyond the original's baselines (no torch import here).

Pruning at initialization (SNIP, GraSP, SynFlow), loss-change estimates
(first-order Taylor, Fisher / OBD), N:M semi-structured sparsity and Wanda.
"""

from __future__ import annotations

from shrinkbench_core.specs import StrategySpec

LEE_2019 = "Lee et al. 2019, SNIP: Single-shot Network Pruning based on Connection Sensitivity"
WANG_2020 = "Wang et al. 2020, Picking Winning Tickets Before Training by Preserving Gradient Flow"
TANAKA_2020 = (
    "Tanaka et al. 2020, Pruning neural networks without any data by iteratively conserving "
    "synaptic flow"
)
MOLCHANOV_2019 = "Molchanov et al. 2019, Importance Estimation for Neural Network Pruning"
LECUN_1990 = "LeCun et al. 1990, Optimal Brain Damage (empirical Fisher diagonal)"
MISHRA_2021 = "Mishra et al. 2021, Accelerating Sparse Deep Neural Networks (N:M, 2:4)"
SUN_2023 = "Sun et al. 2023, A Simple and Effective Pruning Approach for Large Language Models"

_MODULE = "shrinkbench_strategies"


def advanced_strategy_specs() -> list[StrategySpec]:
    """SNIP, GraSP, SynFlow, GlobalTaylor, GlobalFisher, NMMagnitude and Wanda."""
    from shrinkbench_strategies.params import (
        FisherParameters,
        GraspParameters,
        NMParameters,
        SnipParameters,
        SynFlowParameters,
        TaylorParameters,
        WandaParameters,
    )

    def spec(name: str, module: str, summary: str, scope: str, **facts) -> StrategySpec:
        return StrategySpec(
            name=name, summary=summary, factory=f"{_MODULE}.{module}:{name}", scope=scope, **facts
        )

    gradients = {"needs_data": True, "needs_gradients": True}
    return [
        spec(
            "SNIP",
            "init_pruning",
            "|w * grad| on one batch, for pruning at init (Lee 2019)",
            "global",
            parameters=SnipParameters,
            reference=LEE_2019,
            **gradients,
        ),
        spec(
            "GraSP",
            "init_pruning",
            "Prune highest -w * (H g), keeps gradient flow (Wang 2020)",
            "global",
            parameters=GraspParameters,
            reference=WANG_2020,
            **gradients,
        ),
        spec(
            "SynFlow",
            "init_pruning",
            "Data-free iterative synaptic flow |w*dR/dw| (Tanaka 2020)",
            "global",
            parameters=SynFlowParameters,
            reference=TANAKA_2020,
        ),
        spec(
            "GlobalTaylor",
            "taylor",
            "Per-batch (w * grad)^2, averaged (Molchanov 2019)",
            "global",
            parameters=TaylorParameters,
            reference=MOLCHANOV_2019,
            **gradients,
        ),
        spec(
            "GlobalFisher",
            "taylor",
            "OBD saliency 0.5 w^2 x empirical Fisher (LeCun 1990)",
            "global",
            parameters=FisherParameters,
            reference=LECUN_1990,
            **gradients,
        ),
        spec(
            "NMMagnitude",
            "nm_sparsity",
            "N:M (2:4) by |w|; pattern fixes ratio (Mishra 2021)",
            "layerwise",
            structure="n:m",
            parameters=NMParameters,
            reference=MISHRA_2021,
        ),
        spec(
            "Wanda",
            "wanda",
            "|w| x input-channel L2 norm, per layer (Sun 2023)",
            "layerwise",
            parameters=WandaParameters,
            reference=SUN_2023,
            needs_data=True,
        ),
    ]

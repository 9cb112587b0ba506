"""The ``lm_eval`` metric: zero-shot tasks of EleutherAI's lm-evaluation-harness.

The pruned model is wrapped in an lm-eval ``LM`` adapter that scores text with
the dataset's own tokenizer (attached to the token windows). Tasks are named as
in lm-eval (``arc_easy``, ``hellaswag``...) or defined by YAML files in
``include_path`` (e.g. over local data). The lm-eval version and each task's
version are recorded with the results.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.metrics import MetricContext

from .parameters import LMEvalParameters
from .perplexity import max_positions
from .windows import token_windows_of


def _lm_class() -> type:
    try:
        from lm_eval.api.model import LM
    except ImportError:
        raise UserError(
            "the lm_eval metric needs the lm-eval package: pip install 'shrinkbench-llm[eval]'"
        ) from None
    return LM


def make_adapter(model: nn.Module, encode, device: torch.device, max_length: int) -> Any:
    """An lm-eval ``LM`` scoring with ``model`` (ids -> logits) and ``encode`` (text -> ids)."""

    class ShrinkBenchLM(_lm_class()):
        def _logprobs(self, ids: list[int]) -> torch.Tensor:
            tensor = torch.tensor([ids], dtype=torch.long, device=device)
            return F.log_softmax(model(tensor).float()[0], dim=-1)

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            out = []
            for request in requests:
                context, continuation = request.args
                cont = encode(continuation)
                ids = (encode(context) + cont)[-(max_length + 1) :]
                scored = min(len(cont), len(ids) - 1)  # the first token has no context
                if scored <= 0:
                    out.append((0.0, True))
                    continue
                logprobs = self._logprobs(ids[:-1])[-scored:]
                targets = torch.tensor(ids[-scored:], device=logprobs.device)
                total = float(logprobs.gather(1, targets[:, None]).sum())
                greedy = bool((logprobs.argmax(-1) == targets).all())
                out.append((total, greedy))
            return out

        def loglikelihood_rolling(self, requests) -> list[float]:
            out = []
            for request in requests:
                ids = encode(request.args[0])
                total = 0.0
                for start in range(0, max(len(ids) - 1, 0), max_length):
                    window = ids[start : start + max_length + 1]
                    logprobs = self._logprobs(window[:-1])
                    targets = torch.tensor(window[1:], device=logprobs.device)
                    total += float(logprobs.gather(1, targets[:, None]).sum())
                out.append(total)
            return out

        def generate_until(self, requests) -> list[str]:
            raise UserError(
                "lm_eval: generation tasks are not supported; choose log-likelihood tasks "
                "(multiple choice, perplexity)"
            )

    return ShrinkBenchLM()


def compute(context: MetricContext, params: LMEvalParameters) -> dict[str, Any]:
    """Scores of every task (``results``), task versions, lm-eval version and settings."""
    _lm_class()
    import lm_eval
    from lm_eval.tasks import TaskManager

    windows = next(
        (
            w
            for w in map(token_windows_of, (loader.dataset for loader in context.loaders.values()))
            if w
        ),
        None,
    )
    if windows is None or windows.encoder is None:
        raise UserError("lm_eval needs a text dataset (its tokenizer scores the tasks' text)")
    limit = params.max_length or max_positions(context.model) or windows.seqlen
    manager = TaskManager(include_path=params.include_path)
    unknown = [t for t in params.tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"lm_eval: unknown task(s) {', '.join(unknown)}; add task YAML files with "
            "include_path or use lm-eval's names (lm-eval ls tasks)"
        )
    model = context.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = lm_eval.simple_evaluate(
                model=make_adapter(model, windows.encoder.encode, context.device, limit),
                tasks=list(params.tasks),
                num_fewshot=params.num_fewshot,
                limit=params.limit,
                task_manager=manager,
                log_samples=False,
            )
    finally:
        model.train(was_training)
    results = {
        task: {k: v for k, v in values.items() if isinstance(v, (int, float, str))}
        for task, values in output["results"].items()
    }
    return {
        "results": results,
        "task_versions": {k: str(v) for k, v in output.get("versions", {}).items()},
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "num_fewshot": params.num_fewshot,
        "limit": params.limit,
        "max_length": limit,
        "tokenizer": windows.tokenizer,
    }

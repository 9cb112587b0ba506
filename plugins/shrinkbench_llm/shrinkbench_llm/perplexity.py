"""Perplexity as SparseGPT and Wanda measure it.

The split's text is joined and tokenized once (the dataset did that: its token
stream is attached to the windows). It is cut into ``numel // seqlen``
non-overlapping windows of ``seqlen`` tokens; in each window every token but the
first is predicted from the tokens before it. Perplexity = exp(mean token NLL)
over all predicted tokens. With ``stride``, windows of ``seqlen`` tokens advance
by ``stride`` and only the tokens not scored before are scored (sliding window).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.experiment.progress import progress
from shrinkbench_core.metrics import MetricContext

from .parameters import PerplexityParameters
from .windows import token_windows_of

PROTOCOL = "SparseGPT/Wanda: joined split, tokenized once, non-overlapping seqlen windows"


def max_positions(model: nn.Module) -> int | None:
    """The model's longest sequence, when it says (``max_positions`` attribute)."""
    value = getattr(model, "max_positions", None)
    return value if isinstance(value, int) else None


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return (out if isinstance(out, torch.Tensor) else out.logits).float()


def nonoverlapping_nll(
    model: nn.Module,
    tokens: torch.Tensor,
    seqlen: int,
    batch_size: int,
    device: torch.device,
    max_windows: int | None = None,
    quiet: bool = False,
) -> tuple[float, int, int]:
    """Summed NLL (nats), predicted tokens and windows over non-overlapping windows."""
    count = tokens.numel() // seqlen
    if max_windows:
        count = min(count, max_windows)
    windows = tokens[: count * seqlen].view(count, seqlen)
    total, scored = 0.0, 0
    starts = range(0, count, batch_size)
    for start in progress(starts, "perplexity", quiet, total=len(starts)):
        ids = windows[start : start + batch_size].to(device)
        logits = _logits(model, ids)[:, :-1]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(nll.detach().double())
        scored += ids[:, 1:].numel()
    return total, scored, count


def strided_nll(
    model: nn.Module,
    tokens: torch.Tensor,
    seqlen: int,
    stride: int,
    device: torch.device,
    max_windows: int | None = None,
    quiet: bool = False,
) -> tuple[float, int, int]:
    """Summed NLL, scored tokens and windows of a sliding window advancing by ``stride``."""
    numel = tokens.numel()
    total, scored, windows, scored_until = 0.0, 0, 0, 1  # token 0 is never predicted
    begins = range(0, max(numel - 1, 1), stride)
    for begin in progress(begins, "perplexity", quiet, total=len(begins)):
        end = min(begin + seqlen, numel)
        ids = tokens[begin:end].unsqueeze(0).to(device)
        logits = _logits(model, ids)[0, :-1]
        targets = ids[0, 1:]
        first = max(scored_until, begin + 1) - (begin + 1)  # new targets start here
        nll = F.cross_entropy(logits[first:], targets[first:], reduction="sum")
        total += float(nll.detach().double())
        scored += targets.numel() - first
        scored_until = end
        windows += 1
        if end == numel or (max_windows and windows >= max_windows):
            break
    return total, scored, windows


def compute(context: MetricContext, params: PerplexityParameters) -> dict[str, Any]:
    """The ``perplexity`` metric on ``context.loaders[params.split]``.

    Keys: ``perplexity``, ``nll`` (mean nats per token), ``tokens_scored``,
    ``windows``, ``seqlen``, ``stride``, ``tokenizer`` and ``protocol``.
    """
    if params.split not in context.loaders:
        available = ", ".join(sorted(context.loaders)) or "none"
        raise UserError(f"perplexity: no '{params.split}' split; available: {available}")
    windows = token_windows_of(context.loaders[params.split].dataset)
    if windows is None:
        raise UserError(
            "perplexity needs a text dataset of token windows (tinyshakespeare, wikitext2, c4, "
            "text-files)"
        )
    seqlen = params.seqlen or windows.seqlen
    check_seqlen(context.model, seqlen, windows.tokens.numel(), params.split)
    model = context.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if params.stride:
                total, scored, count = strided_nll(
                    model,
                    windows.tokens,
                    seqlen,
                    params.stride,
                    context.device,
                    params.max_windows,
                )
            else:
                total, scored, count = nonoverlapping_nll(
                    model,
                    windows.tokens,
                    seqlen,
                    params.batch_size,
                    context.device,
                    params.max_windows,
                )
    finally:
        model.train(was_training)
    nll = total / scored
    return {
        "perplexity": math.exp(nll) if nll < 700 else float("inf"),
        "nll": nll,
        "tokens_scored": scored,
        "windows": count,
        "seqlen": seqlen,
        "stride": params.stride,
        "tokenizer": windows.tokenizer,
        "protocol": PROTOCOL if not params.stride else f"sliding window, stride {params.stride}",
    }


def check_seqlen(model: nn.Module, seqlen: int, numel: int, split: str) -> None:
    """Errors for a window longer than the model allows or than the split."""
    limit = max_positions(model)
    if limit is not None and seqlen > limit:
        raise UserError(f"perplexity seqlen {seqlen} > the model's maximum positions {limit}")
    if numel < seqlen:
        raise UserError(
            f"the {split} split has {numel} tokens: too short for one perplexity window of "
            f"{seqlen}; lower -p dataset.seqlen"
        )

"""Token streams cut into (input_ids[T], target_ids[T]) windows for next-token prediction."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from shrinkbench_core.errors import UserError


class TokenWindows(Dataset):
    """Non-overlapping windows of a 1-D token stream.

    Window ``i`` is ``tokens[i*T : i*T+T]`` as input and the same positions shifted
    by one as target, so ``len = (numel - 1) // T``. ``tokens`` (the whole split,
    tokenized once) and ``tokenizer`` info stay attached for metrics such as
    perplexity that re-window the stream their own way; ``encoder`` is the tokenizer
    object itself (``encode(text) -> ids``) for metrics that tokenize new text.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        seqlen: int,
        tokenizer: dict[str, Any],
        name: str = "",
        encoder: Any = None,
    ) -> None:
        if tokens.dim() != 1:
            raise ValueError("tokens must be a 1-D tensor of token ids")
        self.tokens = tokens.long()
        self.seqlen = int(seqlen)
        self.tokenizer = dict(tokenizer)
        self.name = name
        self.encoder = encoder  # the tokenizer object (encode/decode), for lm-eval
        if len(self) == 0:
            raise UserError(
                f"{name or 'a'} split has {self.tokens.numel()} tokens: too short for one window "
                f"of seqlen {self.seqlen} (needs {self.seqlen + 1}); lower -p dataset.seqlen"
            )

    def __len__(self) -> int:
        return max(0, (self.tokens.numel() - 1) // self.seqlen)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        start = (index % len(self)) * self.seqlen
        chunk = self.tokens[start : start + self.seqlen + 1]
        return chunk[:-1], chunk[1:]


def token_windows_of(dataset: Any) -> TokenWindows | None:
    """The :class:`TokenWindows` behind a dataset (through ``Subset``), if any."""
    seen = 0
    while dataset is not None and seen < 8:
        if isinstance(dataset, TokenWindows):
            return dataset
        dataset = getattr(dataset, "dataset", None)
        seen += 1
    return None

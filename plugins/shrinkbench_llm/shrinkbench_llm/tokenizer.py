"""Tokenizers: character level (no download) or a local / cached Hugging Face tokenizer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from shrinkbench_core.errors import DataMissingError, UserError


@dataclass
class CharTokenizer:
    """Character-level tokenizer: token id = rank of the character in ``vocab``."""

    vocab: str
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {ch: i for i, ch in enumerate(self.vocab)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The sorted distinct characters of ``text``."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; a character outside the vocabulary is a :class:`UserError`."""
        try:
            return [self._index[ch] for ch in text]
        except KeyError as error:
            raise UserError(
                f"character {error.args[0]!r} is not in the character vocabulary of "
                f"{self.vocab_size} characters built from the corpus"
            ) from None

    def decode(self, ids: list[int]) -> str:
        """Text of token ids."""
        return "".join(self.vocab[i] for i in ids)

    def info(self) -> dict[str, Any]:
        """What is recorded in the run (kind, size, hash of the vocabulary)."""
        digest = hashlib.sha256(self.vocab.encode("utf-8")).hexdigest()[:16]
        return {"kind": "char", "vocab_size": self.vocab_size, "vocab_sha256": digest}


class HFTokenizer:
    """A Hugging Face tokenizer loaded from a local folder or the local cache."""

    def __init__(self, name_or_path: str, download: bool = False) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                name_or_path, local_files_only=not download
            )
        except OSError as error:
            raise DataMissingError(
                f"tokenizer {name_or_path!r} is neither a local folder nor in the Hugging Face "
                "cache; pass a local path, or allow a download with -p dataset.download=true "
                f"({type(error).__name__})"
            ) from None
        self.name = name_or_path

    @property
    def vocab_size(self) -> int:
        """Number of token ids (including added tokens)."""
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        """Text of token ids."""
        return self.tokenizer.decode(ids)

    def info(self) -> dict[str, Any]:
        """What is recorded in the run."""
        import transformers

        return {
            "kind": "huggingface",
            "name": self.name,
            "class": type(self.tokenizer).__name__,
            "vocab_size": self.vocab_size,
            "transformers": transformers.__version__,
        }


Tokenizer = CharTokenizer | HFTokenizer


def make_tokenizer(spec: str, corpus: str, download: bool = False) -> Tokenizer:
    """``"char"``: a character tokenizer of ``corpus``; else a Hugging Face tokenizer."""
    if spec == "char":
        return CharTokenizer.from_text(corpus)
    return HFTokenizer(spec, download=download)

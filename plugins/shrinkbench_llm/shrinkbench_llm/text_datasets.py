"""Dataset factories: ``build(params, *, seed) -> DataSplits`` of token windows.

* ``tinyshakespeare``: the embedded corpus; first 90% of characters train, next
  5% validation, last 5% test.
* ``wikitext2``: ``wikitext-2-raw-v1`` (documents joined with blank lines, as
  SparseGPT and Wanda evaluate it).
* ``c4``: the ``allenai/c4`` ``en`` shards the papers use (train shard 00000 for
  training/calibration, validation shard 00000: its first documents, joined by
  spaces, for test).
* ``text-files``: any local ``.txt`` / ``.jsonl`` files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import ConfigError, DataMissingError

from .parameters import HubTextParameters, TextDataParameters, TextFilesParameters
from .text_files import read_texts, split_files
from .tokenizer import Tokenizer, make_tokenizer
from .windows import TokenWindows

WIKITEXT_REPO, WIKITEXT_CONFIG = "Salesforce/wikitext", "wikitext-2-raw-v1"
C4_REPO = "allenai/c4"
C4_FILES = {
    "train": "en/c4-train.00000-of-01024.json.gz",
    "validation": "en/c4-validation.00000-of-00008.json.gz",
}
C4_TRAIN_DOCUMENTS = 20000  # documents of the training shard tokenized (of about 356k)
C4_TEST_WINDOWS = 256  # the papers evaluate the first 256 windows of the joined text


def embedded_corpus() -> str:
    """The embedded tinyshakespeare text."""
    return (
        resources.files("shrinkbench_llm")
        .joinpath("data/tinyshakespeare.txt")
        .read_text(encoding="utf-8")
    )


def _encode(tokenizer: Tokenizer, text: str, limit: int | None = None) -> torch.Tensor:
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    return ids[:limit] if limit else ids


def make_splits(
    texts: dict[str, str], params: TextDataParameters, tokenizer: Tokenizer, info: dict
) -> DataSplits:
    """Tokenize each split's text once and cut it into windows of ``params.seqlen``."""
    tok_info = tokenizer.info()
    streams = {
        split: _encode(tokenizer, text, params.train_tokens if split == "train" else None)
        for split, text in texts.items()
    }
    windows = {
        split: TokenWindows(stream, params.seqlen, tok_info, name=split, encoder=tokenizer)
        for split, stream in streams.items()
    }
    return DataSplits(
        train=windows["train"],
        test=windows["test"],
        validation=windows.get("validation"),
        num_classes=tokenizer.vocab_size,
        input_shape=(params.seqlen,),
        info={
            "tokenizer": tok_info,
            "seqlen": params.seqlen,
            "tokens": {split: int(s.numel()) for split, s in streams.items()},
            **info,
        },
    )


def build_tinyshakespeare(params: TextDataParameters, *, seed: int = 0) -> DataSplits:
    """The embedded corpus with the fixed 90/5/5 character split."""
    text = embedded_corpus()
    n = len(text)
    train_end, val_end = int(n * 0.9), int(n * 0.95)
    texts = {
        "train": text[:train_end],
        "validation": text[train_end:val_end],
        "test": text[val_end:],
    }
    tokenizer = make_tokenizer(params.tokenizer, text)
    return make_splits(
        texts, params, tokenizer, {"source": "embedded tinyshakespeare", "split": "90/5/5 chars"}
    )


def _hub_files(repo: str, patterns: list[str], download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo, repo_type="dataset", allow_patterns=patterns, local_files_only=not download
        )
    except LocalEntryNotFoundError:
        raise DataMissingError(
            f"{repo} ({', '.join(patterns)}) is not in the local Hugging Face cache; point "
            "-p dataset.root=DIR at local copies of the files, or allow a download with "
            "-p dataset.download=true"
        ) from None
    return Path(folder)


def _root_or_cache(params: HubTextParameters, repo: str, patterns: list[str]) -> Path:
    if params.root:
        root = Path(params.root).expanduser()
        if not root.is_dir():
            raise DataMissingError(f"dataset.root {root} is not a folder")
        return root
    return _hub_files(repo, patterns, params.download)


def _split_documents(root: Path, split: str, required: bool = True) -> list[str]:
    files = split_files(root, split)
    if not files and required:
        raise DataMissingError(
            f"no {split} file under {root} (looked for .parquet/.arrow/.json[l][.gz]/.txt files "
            f"whose path names '{split}')"
        )
    return [doc for path in files for doc in read_texts(path)]


def build_wikitext2(params: HubTextParameters, *, seed: int = 0) -> DataSplits:
    """WikiText-2 (raw) from ``root`` or the HF cache; documents joined with blank lines."""
    root = _root_or_cache(params, WIKITEXT_REPO, [f"{WIKITEXT_CONFIG}/*"])
    texts = {
        split: "\n\n".join(_split_documents(root, split))
        for split in ("train", "validation", "test")
    }
    tokenizer = make_tokenizer(params.tokenizer, "".join(texts.values()), params.download)
    return make_splits(
        texts,
        params,
        tokenizer,
        {"source": f"{WIKITEXT_REPO} {WIKITEXT_CONFIG}", "root": str(root)},
    )


def build_c4(params: HubTextParameters, *, seed: int = 0) -> DataSplits:
    """C4 (en): the papers' training shard 00000 and validation shard 00000."""
    root = _root_or_cache(params, C4_REPO, list(C4_FILES.values()))
    train_docs = _split_documents(root, "train")[:C4_TRAIN_DOCUMENTS]
    val_docs = _split_documents(root, "validation")
    count = params.validation_documents
    texts = {
        "train": "\n\n".join(train_docs),
        "test": " ".join(val_docs[:count]),
    }
    if len(val_docs) > count:
        texts["validation"] = " ".join(val_docs[count : 2 * count])
    tokenizer = make_tokenizer(params.tokenizer, "".join(texts.values()), params.download)
    splits = make_splits(texts, params, tokenizer, {"source": f"{C4_REPO} en", "root": str(root)})
    test = splits.test
    limit = C4_TEST_WINDOWS * params.seqlen + 1
    splits.test = TokenWindows(
        test.tokens[:limit], test.seqlen, test.tokenizer, name="test", encoder=test.encoder
    )
    return splits


def build_text_files(params: TextFilesParameters, *, seed: int = 0) -> DataSplits:
    """Local ``.txt`` / ``.jsonl`` files given per split (documents joined with blank lines)."""
    if not params.train or not params.test:
        raise ConfigError(
            [
                "dataset.train: list the training files, e.g. -p 'dataset.train=[a.txt]'",
                "dataset.test: list the test files (.txt or .jsonl)",
            ],
            title="text-files needs its files",
        )
    texts = {}
    for split in ("train", "validation", "test"):
        files = getattr(params, split)
        if files:
            docs = [doc for f in files for doc in read_texts(f, params.text_field)]
            texts[split] = "\n\n".join(docs)
    tokenizer = make_tokenizer(params.tokenizer, "".join(texts.values()))
    return make_splits(texts, params, tokenizer, {"source": "local files"})

"""Reading the text of local files in the formats the datasets come in.

Raw text (``.txt``), JSON lines (``.jsonl``, ``.json``, optionally ``.gz``), and
the formats Hugging Face ``datasets`` writes: Parquet (``.parquet``, the Hub's
format) and Arrow (``.arrow``, ``save_to_disk`` and the datasets cache).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from shrinkbench_core.errors import DataMissingError, UserError

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TABLE_SUFFIXES = (".parquet", ".arrow")
SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + TABLE_SUFFIXES
METADATA_FILES = {"dataset_info.json", "state.json", "dataset_dict.json"}  # save_to_disk's
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val"),
    "test": ("test",),
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def read_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """The documents of one file: the whole file for ``.txt``, one per record otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataMissingError(f"text file not found: {path}")
    suffix = _suffix(path)
    if suffix in TEXT_SUFFIXES:
        return [path.read_text(encoding="utf-8")]
    if suffix in JSON_SUFFIXES:
        opener = gzip.open if suffix.endswith(".gz") else open
        texts = []
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{number}: not a JSON record ({error.msg})") from None
                if not isinstance(record, dict) or text_field not in record:
                    raise UserError(
                        f"{path}:{number}: record has no {text_field!r} field "
                        "(set -p dataset.text_field=NAME)"
                    )
                texts.append(str(record[text_field]))
        return texts
    if suffix in TABLE_SUFFIXES:
        return _table_texts(path, suffix, text_field)
    raise UserError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}")


def _table_texts(path: Path, suffix: str, text_field: str) -> list[str]:
    import datasets

    table = (
        datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
        if suffix == ".parquet"
        else datasets.Dataset.from_file(str(path), in_memory=True)
    )
    if text_field not in table.column_names:
        raise UserError(
            f"{path}: no {text_field!r} column (columns: {', '.join(table.column_names)})"
        )
    return [str(t) for t in table[text_field]]


def split_files(root: Path, split: str) -> list[Path]:
    """Files under ``root`` whose relative path names ``split`` (``valid``/``val`` count too)."""
    aliases = SPLIT_ALIASES[split]
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or not _suffix(path) or path.name in METADATA_FILES:
            continue
        words = path.relative_to(root).as_posix().lower().replace("-", "/").replace("_", "/")
        words = words.replace(".", "/").split("/")
        if any(alias in words for alias in aliases):
            found.append(path)
    return found

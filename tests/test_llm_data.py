"""Text datasets: the embedded corpus and local files in the formats they come in (no download)."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

pytest.importorskip("shrinkbench_llm")
datasets = pytest.importorskip("datasets")

from shrinkbench_llm.parameters import (  # noqa: E402
    HubTextParameters,
    TextFilesParameters,
    TinyShakespeareParameters,
)
from shrinkbench_llm.text_datasets import (  # noqa: E402
    _hub_files,
    build_c4,
    build_text_files,
    build_tinyshakespeare,
    build_wikitext2,
    embedded_corpus,
)
from shrinkbench_llm.tokenizer import CharTokenizer  # noqa: E402

from shrinkbench_core.errors import ConfigError, DataMissingError, UserError  # noqa: E402


def test_tinyshakespeare_fixed_split_and_char_tokenizer():
    text = embedded_corpus()
    assert len(text) == 1_115_394
    splits = build_tinyshakespeare(TinyShakespeareParameters(seqlen=64))
    assert splits.num_classes == 65 and splits.input_shape == (64,)
    tokens = splits.info["tokens"]
    assert tokens["train"] == int(len(text) * 0.9)
    assert tokens["train"] + tokens["validation"] + tokens["test"] == len(text)
    tokenizer = CharTokenizer.from_text(text)
    assert splits.test.tokens[:50].tolist() == tokenizer.encode(text[int(len(text) * 0.95) :][:50])
    inputs, targets = splits.train[3]
    assert inputs.shape == targets.shape == (64,)
    assert torch.equal(inputs[1:], targets[:-1])
    assert tokenizer.decode(inputs.tolist()) == text[3 * 64 : 4 * 64]
    assert splits.info["tokenizer"]["kind"] == "char"


def test_text_files_txt_and_jsonl(tmp_path):
    (tmp_path / "train.txt").write_text("abcabcabc " * 20)
    with open(tmp_path / "test.jsonl", "w") as handle:
        for text in ["cab cab", "bca bca bca"]:
            handle.write(json.dumps({"body": text}) + "\n")
    params = TextFilesParameters(
        seqlen=4,
        train=[str(tmp_path / "train.txt")],
        test=[str(tmp_path / "test.jsonl")],
        text_field="body",
    )
    splits = build_text_files(params)
    assert splits.num_classes == 5  # ' ', a, b, c and the newline joining documents
    assert splits.validation is None
    assert splits.test.tokens.numel() == len("cab cab\n\nbca bca bca")
    with pytest.raises(UserError, match="no 'text' field"):
        build_text_files(params.model_copy(update={"text_field": "text"}))
    with pytest.raises(ConfigError, match="needs its files"):
        build_text_files(TextFilesParameters())
    with pytest.raises(DataMissingError, match="not found"):
        build_text_files(params.model_copy(update={"train": [str(tmp_path / "none.txt")]}))


def _wiki_rows(split):
    return {"text": [f" = {split} heading = \n", "", f" some {split} words here . \n"] * 30}


def test_wikitext2_from_parquet_as_the_hub_stores_it(tmp_path):
    folder = tmp_path / "wikitext-2-raw-v1"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        datasets.Dataset.from_dict(_wiki_rows(split)).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet")
        )
    splits = build_wikitext2(HubTextParameters(root=str(tmp_path), seqlen=16))
    expected = "\n\n".join(_wiki_rows("test")["text"])
    every_split = [
        t for split in ("train", "validation", "test") for t in _wiki_rows(split)["text"]
    ]
    tokenizer = CharTokenizer.from_text("".join(every_split))
    assert splits.test.tokens.tolist() == tokenizer.encode(expected)


def test_wikitext2_from_arrow_as_save_to_disk_writes_it(tmp_path):
    dataset = datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(_wiki_rows(split)) for split in ("train", "test")}
    )
    dataset["validation"] = datasets.Dataset.from_dict(_wiki_rows("train"))
    dataset.save_to_disk(str(tmp_path / "wiki"))
    assert list((tmp_path / "wiki" / "test").glob("*.arrow"))
    splits = build_wikitext2(HubTextParameters(root=str(tmp_path / "wiki"), seqlen=16))
    assert splits.info["tokens"]["test"] == len("\n\n".join(_wiki_rows("test")["text"]))


def test_c4_from_json_gz_shards(tmp_path):
    (tmp_path / "en").mkdir()
    for name, count in (("c4-train.00000-of-01024", 50), ("c4-validation.00000-of-00008", 7)):
        with gzip.open(tmp_path / "en" / f"{name}.json.gz", "wt") as handle:
            for i in range(count):
                handle.write(json.dumps({"text": f"doc {i} text", "url": "u"}) + "\n")
    splits = build_c4(HubTextParameters(root=str(tmp_path), seqlen=8, validation_documents=3))
    joined = " ".join(f"doc {i} text" for i in range(3))
    assert splits.test.tokens.numel() == len(joined)
    assert splits.validation.tokens.numel() == len(" ".join(f"doc {i} text" for i in range(3, 6)))


def test_missing_hub_data_is_an_error_not_a_download(tmp_path):
    with pytest.raises(DataMissingError, match="download=true"):
        _hub_files("shrinkbench-tests/never-published", ["*"], download=False)
    with pytest.raises(DataMissingError, match="no train file"):
        build_wikitext2(HubTextParameters(root=str(tmp_path)))


def test_local_hugging_face_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model = tokenizers.models.WordLevel(
        {"[UNK]": 0, "to": 1, "be": 2, "or": 3, "not": 4}, unk_token="[UNK]"
    )
    raw = tokenizers.Tokenizer(model)
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(
        str(tmp_path / "tok")
    )
    (tmp_path / "train.txt").write_text("to be or not to be " * 10)
    (tmp_path / "test.txt").write_text("not to be or to be")
    splits = build_text_files(
        TextFilesParameters(
            seqlen=2,
            tokenizer=str(tmp_path / "tok"),
            train=[str(tmp_path / "train.txt")],
            test=[str(tmp_path / "test.txt")],
        )
    )
    assert splits.test.tokens.tolist() == [4, 1, 2, 3, 1, 2]
    assert splits.num_classes == 5 and splits.info["tokenizer"]["kind"] == "huggingface"

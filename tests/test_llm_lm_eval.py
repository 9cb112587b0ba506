"""The lm_eval metric on a task defined from local files, checked against hand scoring."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("shrinkbench_llm")
pytest.importorskip("lm_eval")

from shrinkbench_llm.lm_eval_metric import compute  # noqa: E402
from shrinkbench_llm.parameters import LMEvalParameters  # noqa: E402
from shrinkbench_llm.tiny_gpt import TinyGPT  # noqa: E402
from shrinkbench_llm.tokenizer import CharTokenizer  # noqa: E402
from shrinkbench_llm.windows import TokenWindows  # noqa: E402

from shrinkbench_core.errors import UserError  # noqa: E402
from shrinkbench_core.metrics import MetricContext  # noqa: E402

DOCS = [
    {"question": "to be or not to", "choices": [" be", " no"], "label": 0},
    {"question": "the king is", "choices": [" on", " dead"], "label": 1},
    {"question": "my lord", "choices": [" sir", " tea"], "label": 0},
    {"question": "a horse", "choices": [" a horse", " kingdom"], "label": 1},
]


def _task(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "task.yaml").write_text(
        "task: shrinkbench_local_choice\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        'test_split: test\noutput_type: multiple_choice\ntarget_delimiter: ""\n'
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 2.0\n"
    )
    return str(tmp_path)


def _context():
    text = "".join(d["question"] + "".join(d["choices"]) for d in DOCS) * 3
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = TinyGPT(tokenizer.vocab_size, layers=1, width=16, heads=2, max_positions=64)
    windows = TokenWindows(
        torch.tensor(tokenizer.encode(text)), 16, tokenizer.info(), "test", encoder=tokenizer
    )
    context = MetricContext(
        model=model,
        example_input=windows[0][0][None],
        device=torch.device("cpu"),
        loaders={"test": DataLoader(windows)},
    )
    return context, model, tokenizer


def _loglikelihood(model, tokenizer, context, continuation):
    ids = tokenizer.encode(context + continuation)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0], -1)
    cont = len(tokenizer.encode(continuation))
    return sum(float(logprobs[i - 1, ids[i]]) for i in range(len(ids) - cont, len(ids)))


def test_accuracy_on_a_local_task_equals_hand_scoring(tmp_path):
    context, model, tokenizer = _context()
    result = compute(
        context, LMEvalParameters(tasks=["shrinkbench_local_choice"], include_path=_task(tmp_path))
    )
    expected = sum(
        max(range(2), key=lambda c, d=d: _loglikelihood(model, tokenizer, d["question"],
                                                         d["choices"][c])) == d["label"]
        for d in DOCS
    ) / len(DOCS)  # fmt: skip
    assert result["results"]["shrinkbench_local_choice"]["acc,none"] == pytest.approx(expected)
    assert result["task_versions"] == {"shrinkbench_local_choice": "2.0"}
    assert result["lm_eval_version"] and result["tokenizer"]["kind"] == "char"


def test_unknown_task_is_a_clear_error(tmp_path):
    context, _, _ = _context()
    with pytest.raises(UserError, match="unknown task"):
        compute(context, LMEvalParameters(tasks=["no_such_task_xyz"], include_path=str(tmp_path)))

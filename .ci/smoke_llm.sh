#!/usr/bin/env bash
# Install the core and the LLM plugin alone (non-editable) into a fresh venv that reuses the
# already installed third-party packages (torch, transformers...) but none of the shrinkbench
# distributions; check the packaged corpus and that a tiny SparseGPT run works end to end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
venv=$tmp/venv
bash "$root/.ci/venv_without_shrinkbench.sh" "$venv"
"$venv/bin/python" -m pip install -q --no-deps "$root" "$root/plugins/shrinkbench_llm"
cd "$tmp"
"$venv/bin/python" - <<'PY'
import json, subprocess, sys
bin_dir = sys.executable.rsplit("/", 1)[0]
plugins = json.loads(subprocess.check_output([f"{bin_dir}/shrinkbench", "plugins", "--json"]))
names = sorted(p["name"] for p in plugins)
assert names == ["builtin", "shrinkbench-llm"], names
assert all(p["status"] == "ok" for p in plugins), plugins
strategies = json.loads(subprocess.check_output([f"{bin_dir}/shrinkbench", "list", "strategies", "--json"]))
assert {s["name"] for s in strategies} == {"SparseGPT", "WandaLM", "MagnitudeLM", "OWL"}, strategies
from shrinkbench_llm.text_datasets import embedded_corpus
assert len(embedded_corpus()) == 1_115_394  # the corpus is package data, not read from the tree
subprocess.run(
    [f"{bin_dir}/shrinkbench-run", "--quiet", "--strategy", "SparseGPT", "--compression", "2",
     "--dataset", "tinyshakespeare", "--model", "tiny-gpt", "-p", "dataset.seqlen=32",
     "-p", "dataset.train_tokens=2048", "-p", "model.layers=1", "-p", "model.width=32",
     "-p", "model.heads=2", "-p", "model.max_positions=32", "-p", "dense.epochs=1",
     "-p", "finetune.epochs=0", "-p", "calibration_batches=1", "-p", "metrics=[size,perplexity]",
     "--output", "out"],
    check=True,
)
(metrics,) = __import__("pathlib").Path("out/runs").glob("*/metrics.json")
ppl = json.loads(metrics.read_text())["pruned"]["perplexity"]["test_perplexity"]
print(f"smoke ok: plugins {names}; {len(strategies)} strategies; SparseGPT run, test ppl {ppl:.2f}")
PY
rm -rf "$tmp"

#!/usr/bin/env bash
# Install the core and one plugin (non-editable) into a fresh venv that reuses the already
# installed third-party packages (torch...) but none of the shrinkbench distributions, then
# check that only that plugin's components are listed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(mktemp -d)/venv
bash "$root/.ci/venv_without_shrinkbench.sh" "$venv"
"$venv/bin/python" -m pip install -q --no-deps "$root" "$root/plugins/shrinkbench_cifar"
"$venv/bin/python" - <<'PY'
import json, subprocess
bin_dir = __import__("sys").executable.rsplit("/", 1)[0]
plugins = json.loads(subprocess.check_output([f"{bin_dir}/shrinkbench", "plugins", "--json"]))
names = sorted(p["name"] for p in plugins)
assert names == ["builtin", "shrinkbench-cifar"], names
assert all(p["status"] == "ok" for p in plugins), plugins
datasets = json.loads(subprocess.check_output([f"{bin_dir}/shrinkbench", "list", "datasets", "--json"]))
models = json.loads(subprocess.check_output([f"{bin_dir}/shrinkbench", "list", "models", "--json"]))
strategies = json.loads(subprocess.check_output([f"{bin_dir}/shrinkbench", "list", "strategies", "--json"]))
assert {d["plugin"] for d in datasets} == {"builtin", "shrinkbench-cifar"}, datasets
assert "cifar10" in {d["name"] for d in datasets}
assert "resnet20" in {m["name"] for m in models}
assert strategies == [], strategies
print(f"smoke ok: plugins {names}; {len(datasets)} datasets, {len(models)} models, no strategies")
PY
rm -rf "$(dirname "$venv")"

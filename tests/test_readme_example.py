"""The README's third-party plugin example, copied, pip-installed into a fresh venv and run."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r'```\w+ title="(?P<path>[^"]+)"\n(?P<body>.*?)```', re.S)


def readme_files() -> dict[str, str]:
    return {m["path"]: m["body"] for m in BLOCK.finditer((ROOT / "README.md").read_text())}


def test_readme_names_a_complete_package():
    files = readme_files()
    assert set(files) == {
        "pyproject.toml",
        "shrinkbench_mystrategy/__init__.py",
        "shrinkbench_mystrategy/strategy.py",
    }
    assert "[project.entry-points.shrinkbench]" in files["pyproject.toml"]


@pytest.mark.slow
def test_readme_plugin_installs_lists_and_runs(tmp_path):
    package = tmp_path / "mystrategy"
    for path, body in readme_files().items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(body)
    venv = tmp_path / "venv"
    subprocess.run(
        ["bash", str(ROOT / ".ci" / "venv_without_shrinkbench.sh"), str(venv)], check=True
    )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, str(ROOT), str(ROOT / "plugins" / "shrinkbench_strategies")], check=True)
    subprocess.run([*pip, str(package)], check=True)  # the README's `pip install` of the folder

    listed = subprocess.run(
        [str(venv / "bin" / "shrinkbench"), "list", "strategies", "My*", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (spec,) = json.loads(listed.stdout)
    assert spec["name"] == "MyGlobalMagnitude"
    assert spec["plugin"] == spec["distribution"] == "shrinkbench-mystrategy"

    run = subprocess.run(
        [
            str(venv / "bin" / "shrinkbench-run"),
            "--strategy",
            "MyGlobalMagnitude",
            "--compression",
            "8",
            "--output",
            str(tmp_path / "out"),
            "-p",
            "dense.epochs=2",
            "-p",
            "finetune.epochs=1",
            "-p",
            "model.hidden_sizes=[128,128]",
            "-p",
            "metrics=[size,accuracy]",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["finetuned"]["size"]["compression_ratio"] == pytest.approx(8, abs=1e-3)

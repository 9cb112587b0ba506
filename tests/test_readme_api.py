"""The README's "Python API" section, executed verbatim in a fresh process (issue 15, 5)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import shrinkbench_core as sb

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```python\n(?P<body>.*?)```", re.S)


def api_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Python API\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def api_code() -> str:
    return "\n".join(match["body"] for match in FENCE.finditer(api_section()))


def test_section_names_only_real_api_functions():
    code = api_code()
    for step in ("sb.prune(", "sb.evaluate(", "sb.run(", "sb.export(", "InferenceSession("):
        assert step in code
    used = set(re.findall(r"\bsb\.(\w+)", api_section()))
    assert used <= set(sb.__all__), used - set(sb.__all__)


@pytest.mark.slow
def test_section_runs_verbatim(tmp_path):
    script = tmp_path / "readme_api.py"
    script.write_text(api_code())
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "GlobalMagWeight" in out.splitlines()[0]
    assert re.search(r"GlobalMagWeight: compression 4\.0\dx \(requested 4x\)", out)
    assert "classifier fc" in out
    assert re.search(r"4\.0\dx fewer parameters", out)
    assert re.search(r"finetuned  test top-1 \d+\.\d%  compression 4\.00x", out)
    assert "exported digits_cnn.onnx (onnx, " in out
    accuracy = float(re.search(r"onnxruntime test top-1: (\d+\.\d)%", out)[1])
    assert accuracy > 30  # trained for a few epochs, far above chance (10%)
    assert (tmp_path / "digits_cnn.onnx").is_file() and (tmp_path / "results" / "runs").is_dir()

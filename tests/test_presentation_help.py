"""Every option of the benchmarks and of ``shrinkbench survey`` explains itself (item 13)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "benchmarks").glob("*.py")) + [ROOT / "shrinkbench_core/survey/cli.py"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_argparse_option_has_help(path):
    tree = ast.parse(path.read_text())
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
    ]
    undocumented = [
        f"line {call.lineno}: {ast.unparse(call.args[0]) if call.args else '?'}"
        for call in calls
        if not any(keyword.arg == "help" for keyword in call.keywords)
    ]
    assert not undocumented, f"{path.name}: options without help: {undocumented}"

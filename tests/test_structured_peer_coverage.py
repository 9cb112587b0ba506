"""``benchmarks/structured_coverage.py --peer``: ours (uniform) beside Torch-Pruning, each
model and tool in its own memory-limited child process, a failure of the peer reported
as such, and the summary line of the comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_torchvision_coverage import coverage_script

pytest.importorskip("torch_pruning")


def test_peer_comparison_reports_ratio_verification_and_peer_failures(tmp_path):
    script = coverage_script()
    results = tmp_path / "results.json"
    # Torch-Pruning 1.6 fails on ShuffleNetV2 (ZeroDivisionError) and works on SqueezeNet.
    # In its own process, as a user runs it: forking model children from a large test
    # session is not what the script is made for.
    run = subprocess.run(
        [sys.executable, script.__file__, "--peer", "--models", "squeezenet1_1,shufflenet_v2_x0_5",
         "--timeout", "300", "--json", str(results)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(results.read_text())
    squeeze, shuffle = data["squeezenet1_1"], data["shufflenet_v2_x0_5"]
    assert squeeze["ours"]["verified"] and not squeeze["peer"]["verified"]
    assert squeeze["ours"]["compression"] > 2 and squeeze["peer"]["compression"] > 2
    assert "error" in shuffle["peer"] and shuffle["ours"]["verified"]
    table = script.peer_table(data)
    ratio = squeeze["ours"]["compression"] / squeeze["peer"]["compression"]
    assert f"| squeezenet1_1 | {squeeze['ours']['compression']:.2f}x |" in table
    assert f"| {ratio:.0%} | yes |" in table
    assert "| shufflenet_v2_x0_5 |" in table and "failed: " in table
    out = run.stdout
    expected = "Torch-Pruning succeeded on 1/2; ours >= 90% of its parameter compression on "
    assert expected + ("1/1" if ratio >= 0.9 else "0/1") in out


def test_unknown_model_names_stop_before_anything_runs(tmp_path, capsys):
    script = coverage_script()
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--models", "resnet18,resnet_nine", "--json", str(tmp_path / "r.json")])
    assert exit_info.value.code == 2
    assert "unknown model(s) resnet_nine" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()

"""`shrinkbench plot DIR --survey` on a real digits sweep mapped to a survey pair."""

from __future__ import annotations

import json
import os
import subprocess

from shrinkbench_core.survey import load_results

SWEEP = """
output = "{output}"
compressions = [2, 4]
seeds = [0]
datasets = ["digits"]
models = [{{name = "mlp", params = {{hidden_sizes = [128, 128]}}}}]
[[strategies]]
name = "GlobalMagWeight"
[shared]
metrics = ["size", "flops", "accuracy"]
dense = {{epochs = 2}}
finetune = {{epochs = 1}}
"""


def test_overlay_of_own_sweep_on_the_literature(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP.format(output=tmp_path / "study"))
    env = {
        **os.environ,
        "SHRINKBENCH_SURVEY_NAMES": json.dumps({"pairs": {"digits:mlp": "CIFAR-10:ResNet-56"}}),
    }
    run = subprocess.run(
        ["shrinkbench", "sweep", str(sweep), "--workers", "1", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    out = tmp_path / "overlay.png"
    plot = subprocess.run(
        ["shrinkbench", "plot", str(tmp_path / "study"), "--survey", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert plot.returncode == 0, plot.stderr
    assert out.is_file() and out.stat().st_size > 10_000
    literature = load_results().query("dataset == 'CIFAR-10' and model == 'ResNet-56'")
    expected = len(literature.dropna(subset=["compression", "top1"]))
    assert expected > 0
    assert f"{expected} literature point" in plot.stdout, plot.stdout

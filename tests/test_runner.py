"""End-to-end runs of `shrinkbench-run` on the embedded digits data, faults and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from shrinkbench_core.cli import run_main
from shrinkbench_core.config import ExperimentConfig, build_config

FAST = [
    "-p",
    "model.hidden_sizes=[128,128]",
    "-p",
    "dense.epochs=3",
    "-p",
    "finetune.epochs=2",
    "-p",
    "metrics=[size,flops,accuracy,latency]",
    "--quiet",
]


def run_dir(output: Path) -> Path:
    (path,) = (output / "runs").iterdir()
    return path


def deterministic(metrics: dict) -> dict:
    """metrics.json without wall-clock measurements."""
    out = {}
    for key, value in metrics.items():
        if key in ("timings_seconds",):
            continue
        if isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k != "latency"}
        else:
            out[key] = value
    out.get("dense_source", {}).pop("trained_now", None)
    out.get("dense_source", {}).pop("cache", None)
    return out


def test_default_job_end_to_end(tmp_path, capsys):
    """The README's main job on digits (default model and epochs)."""
    assert (
        run_main(
            [
                "--strategy",
                "GlobalMagWeight",
                "--compression",
                "4",
                "--output",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "fine-tuned" in out and "results:" in out
    path = run_dir(tmp_path)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["dense"]["accuracy"]["test_top1"] >= 0.95
    assert metrics["compression"]["achieved"] == pytest.approx(4.0, abs=1e-4)
    assert metrics["pruned"]["size"]["compression_ratio"] == pytest.approx(4.0, abs=1e-4)
    config = json.loads((path / "config.json").read_text())
    assert config["config"]["strategy"]["name"] == "GlobalMagWeight"
    assert {"python", "torch", "shrinkbench-core", "plugins", "git_commit"} <= set(
        config["versions"]
    )
    assert config["versions"]["plugins"]["shrinkbench-strategies"] == "0.1.0"
    for name in ("logs.csv", "masks.pt", "masks_summary.csv", "model.pt", "checkpoints/last.pt"):
        assert (path / name).is_file(), name
    assert json.loads((path / "status.json").read_text())["status"] == "complete"


def test_rerun_reports_complete_and_force_redoes(tmp_path, capsys):
    args = ["--strategy", "RandomPruning", "--compression", "2", "--output", str(tmp_path), *FAST]
    assert run_main(args) == 0
    path = run_dir(tmp_path)
    first = (path / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_main(args) == 0
    assert "already complete" in capsys.readouterr().out
    assert (path / "metrics.json").stat().st_mtime_ns == first
    assert run_main([*args, "--force"]) == 0
    assert (path / "metrics.json").stat().st_mtime_ns != first


def test_same_config_gives_bit_identical_metrics_and_shares_dense(tmp_path):
    for output in ("a", "b"):
        assert (
            run_main(
                [
                    "--strategy",
                    "GlobalMagGrad",
                    "--compression",
                    "8",
                    "--output",
                    str(tmp_path / output),
                    *FAST,
                ]
            )
            == 0
        )
    first, second = (json.loads((run_dir(tmp_path / o) / "metrics.json").read_text()) for o in "ab")
    assert deterministic(first) == deterministic(second)
    # a second strategy in the same study prunes the very same dense model
    assert (
        run_main(
            [
                "--strategy",
                "LayerMagWeight",
                "--compression",
                "8",
                "--output",
                str(tmp_path / "a"),
                *FAST,
            ]
        )
        == 0
    )
    runs = sorted((tmp_path / "a" / "runs").iterdir())
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert metrics[0]["dense"]["accuracy"] == metrics[1]["dense"]["accuracy"]
    assert sorted(m["dense_source"]["trained_now"] for m in metrics) == [False, True]
    assert len(list((tmp_path / "a" / "dense").glob("*/model.pt"))) == 1


def test_seeds_are_recorded_separately(tmp_path):
    assert (
        run_main(
            [
                "--strategy",
                "RandomPruning",
                "--output",
                str(tmp_path),
                "--seed",
                "5",
                "-p",
                "seeds.pruning=42",
                *FAST,
            ]
        )
        == 0
    )
    seeds = json.loads((run_dir(tmp_path) / "config.json").read_text())["seeds"]
    assert seeds == {"init": 5, "data_order": 6, "augmentation": 7, "pruning": 42}


def test_config_file_and_flags_override(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(
        'compression = 8\n[strategy]\nname = "LayerMagWeight"\n'
        "[model.params]\nhidden_sizes = [128, 128]\n[dense]\nepochs = 2\n[finetune]\nepochs = 1\n"
    )
    assert (
        run_main(
            [
                "--config",
                str(config),
                "--compression",
                "2",
                "--output",
                str(tmp_path / "o"),
                "-p",
                "metrics=[size]",
                "--quiet",
            ]
        )
        == 0
    )
    resolved = json.loads((run_dir(tmp_path / "o") / "config.json").read_text())["config"]
    assert resolved["compression"] == 2 and resolved["strategy"]["name"] == "LayerMagWeight"
    assert resolved["finetune"]["epochs"] == 1


@pytest.mark.parametrize(
    "suffix,text",
    [
        (".yaml", "compression: 2\nstrategy: {name: GlobalMagWeight}\n"),
        (".json", '{"compression": 2, "strategy": {"name": "GlobalMagWeight"}}'),
    ],
)
def test_yaml_and_json_configs(tmp_path, suffix, text):
    from shrinkbench_core.config import read_config_file

    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    assert build_config(read_config_file(path)).compression == 2


def test_digest_ignores_key_order_and_output():
    a = build_config(
        {"compression": 4, "seed": 1, "output": "x", "strategy": {"name": "RandomPruning"}}
    )
    b = build_config(
        {"strategy": {"name": "RandomPruning"}, "output": "y", "seed": 1, "compression": 4}
    )
    c = build_config({"strategy": {"name": "RandomPruning"}, "seed": 2, "compression": 4})
    assert a.digest() == b.digest() != c.digest()
    assert ExperimentConfig().digest() == ExperimentConfig().digest()


# -- bad input -------------------------------------------------------------------
def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["shrinkbench-run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) < 25
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_every_invalid_field_is_reported_at_once(tmp_path):
    result = cli(
        "--strategy",
        "GlobalMagWieght",
        "--model",
        "mlpp",
        "--compression",
        "0.5",
        "-p",
        "finetune.epochs=-1",
        "-p",
        "finetune.optimizer.name=rmsprop",
        "--output",
        str(tmp_path),
    )
    assert_user_error(result, "compression: ", "finetune.epochs", "finetune.optimizer.name")
    result = cli("--strategy", "GlobalMagWieght", "--model", "mlpp", "--output", str(tmp_path))
    assert_user_error(
        result,
        "strategy.name: unknown strategy 'GlobalMagWieght'",
        "Did you mean: GlobalMagWeight",
        "model.name: unknown model 'mlpp'",
    )
    assert not (tmp_path / "runs").exists()


def test_parameters_a_component_does_not_accept(tmp_path):
    result = cli(
        "--strategy",
        "GlobalChannelNorm",
        "-p",
        "strategy.norm=l3",
        "-p",
        "strategy.colour=red",
        "-p",
        "dataset.nope=1",
        "--output",
        str(tmp_path),
    )
    assert_user_error(
        result,
        "strategy.params.norm",
        "strategy.params.colour: unknown field",
        "allowed: norm",
        "dataset.params.nope: unknown field",
    )


def test_unreachable_compression_names_the_largest(tmp_path):
    result = cli("--compression", "100000", "--output", str(tmp_path), "--quiet")
    assert_user_error(result, "largest reachable compression")


def test_missing_dataset_files_say_where_and_how(tmp_path):
    result = cli(
        "--dataset",
        "mnist",
        "--model",
        "lenet5",
        "--data-root",
        str(tmp_path / "nodata"),
        "--output",
        str(tmp_path / "o"),
    )
    assert_user_error(result, str(tmp_path / "nodata"), "download=true")


def test_corrupted_and_mismatched_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    result = cli(
        "-p",
        "dense.source=checkpoint",
        "-p",
        f"dense.checkpoint={garbage}",
        "--output",
        str(tmp_path / "o"),
    )
    assert_user_error(result, "cannot read checkpoint")
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    result = cli(
        "-p",
        "dense.source=checkpoint",
        "-p",
        f"dense.checkpoint={other}",
        "--output",
        str(tmp_path / "o"),
    )
    assert_user_error(result, "does not match the model")


def test_output_directory_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_user_error(cli("--output", str(blocker / "sub"), *FAST), "cannot write to the output")


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    args = [
        "--strategy",
        "GlobalMagWeight",
        "--compression",
        "4",
        "-p",
        "dataset.batch_size=8",
        "-p",
        "finetune.epochs=6",
        "-p",
        "dense.epochs=2",
        "-p",
        "model.hidden_sizes=[256,256]",
        "-p",
        "metrics=[size,accuracy]",
        "--quiet",
    ]
    assert run_main([*args, "--output", str(tmp_path / "straight")]) == 0
    reference = json.loads((run_dir(tmp_path / "straight") / "metrics.json").read_text())

    output = tmp_path / "killed"
    process = subprocess.Popen(
        ["shrinkbench-run", *args, "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    logs = None
    while time.time() < deadline and process.poll() is None:
        runs = list((output / "runs").glob("*/logs.csv")) if (output / "runs").exists() else []
        if runs and len(runs[0].read_text().splitlines()) >= 3:  # header + 2 epochs
            logs = runs[0]
            break
        time.sleep(0.05)
    assert logs is not None, "the run never reached its second fine-tuning epoch"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr
    path = run_dir(output)
    assert json.loads((path / "status.json").read_text())["status"] == "interrupted"
    assert not (path / "metrics.json").exists()  # never a result that looks complete

    resumed = subprocess.run(
        ["shrinkbench-run", *args, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch" in resumed.stdout
    metrics = json.loads((path / "metrics.json").read_text())
    assert deterministic(metrics) == deterministic(reference)

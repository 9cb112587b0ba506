"""Sweeps on the local executor: sweep files, validation, dense sharing, failures, resume."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from shrinkbench_core.cli import main
from shrinkbench_core.registry import get_registry
from shrinkbench_core.sweep.config import expand_sweep, load_sweep_file, parse_sweep, sharing_order
from shrinkbench_core.sweep.driver import describe_plan, run_sweep

TINY_SHARED = """
[[models]]
name = "mlp"
params = {{hidden_sizes = [64, 64]}}
[shared]
dense = {{epochs = {dense_epochs}}}
finetune = {{epochs = {finetune_epochs}}}
metrics = ["size", "flops", "accuracy"]
"""


def write_sweep(
    folder: Path,
    strategies: list[str],
    compressions: list[float],
    seeds: list[int],
    dense_epochs: int = 2,
    finetune_epochs: int = 1,
    name: str = "sweep.toml",
) -> Path:
    """A digits sweep file with a small MLP and short training."""
    lines = [f'output = "{folder / "out"}"', f"compressions = {compressions}", f"seeds = {seeds}"]
    lines += [f'[[strategies]]\nname = "{s}"' for s in strategies]
    text = "\n".join(lines) + TINY_SHARED.format(
        dense_epochs=dense_epochs, finetune_epochs=finetune_epochs
    )
    path = folder / name
    path.write_text(text)
    return path


def summary_counts(text: str) -> dict[str, int]:
    """The counts of the final summary line (``12 runs: 8 succeeded, 0 failed, 4 skipped``)."""
    match = re.search(r"(\d+) runs: (\d+) succeeded, (\d+) failed, (\d+) skipped", text)
    assert match, text
    total, succeeded, failed, skipped = map(int, match.groups())
    return {"total": total, "succeeded": succeeded, "failed": failed, "skipped": skipped}


def complete_runs(output: Path) -> dict[str, int]:
    """Completed run directory name -> metrics.json mtime (ns)."""
    done = {}
    for path in (output / "runs").glob("*"):
        status = path / "status.json"
        try:
            if json.loads(status.read_text()).get("status") == "complete":
                done[path.name] = (path / "metrics.json").stat().st_mtime_ns
        except (OSError, ValueError):
            continue  # being written
    return done


# -- sweep file and expansion -----------------------------------------------------
def test_expansion_is_the_full_grid_with_shared_settings(tmp_path):
    sweep = parse_sweep({
        "output": str(tmp_path / "study"),
        "strategies": ["GlobalMagWeight", {"name": "LayerChannelNorm", "params": {"norm": "l2"}}],
        "compressions": [1, 4],
        "seeds": [0, 1, 2],
        "models": [{"name": "mlp", "params": {"hidden_sizes": [32]}}],
        "shared": {"finetune": {"epochs": 3}, "model": {"params": {"hidden_sizes": [8]}}},
    })
    runs = expand_sweep(sweep, get_registry())
    assert len(runs) == 2 * 2 * 3
    assert len({run.name for run in runs}) == len(runs)
    configs = [run.config for run in runs]
    assert {c["finetune"]["epochs"] for c in configs} == {3}
    assert {tuple(c["model"]["params"]["hidden_sizes"]) for c in configs} == {(32,)}  # grid wins
    assert {c["strategy"]["params"].get("norm") for c in configs} == {None, "l2"}
    assert {(c["compression"], c["seed"]) for c in configs} == {
        (c, s) for c in (1, 4) for s in (0, 1, 2)
    }
    assert all(run.path.parent == tmp_path / "study" / "runs" for run in runs)
    # one dense baseline per seed, and parallel workers start on different ones
    assert len({run.dense_digest for run in runs}) == 3
    first = sharing_order(runs)[:3]
    assert len({run.dense_digest for run in first}) == 3


def test_yaml_and_toml_sweep_files_expand_identically(tmp_path):
    toml_file = write_sweep(tmp_path, ["RandomPruning"], [2, 4], [0])
    yaml_file = tmp_path / "sweep.yaml"
    yaml_file.write_text(
        f"output: {tmp_path / 'out'}\ncompressions: [2, 4]\nseeds: [0]\n"
        "strategies: [RandomPruning]\nmodels: [{name: mlp, params: {hidden_sizes: [64, 64]}}]\n"
        "shared:\n  dense: {epochs: 2}\n  finetune: {epochs: 1}\n"
        "  metrics: [size, flops, accuracy]\n"
    )
    registry = get_registry()
    from_toml = expand_sweep(load_sweep_file(toml_file), registry)
    from_yaml = expand_sweep(load_sweep_file(yaml_file), registry)
    assert [r.name for r in from_toml] == [r.name for r in from_yaml]
    assert [r.config for r in from_toml] == [r.config for r in from_yaml]


def test_every_problem_is_reported_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'output = "{tmp_path / "out"}"\ncompressions = [2]\n'
        'datasets = [{name = "digits", batch_size = 0}]\n'
        '[[strategies]]\nname = "GlobalMagWieght"\n'
        '[[strategies]]\nname = "LayerChannelNorm"\nparams = {norm = "l3"}\n'
        '[shared]\nfinetune = {epochs = -1}\nmetrics = ["size", "nope"]\n'
    )
    assert main(["sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    for line in (
        "datasets[0].batch_size: ",
        "strategies[0].name: unknown strategy 'GlobalMagWieght'",
        "Did you mean: GlobalMagWeight",
        "strategies[1].params.norm: ",
        "shared.finetune.epochs: ",
    ):
        assert line in err, (line, err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()

    structure = tmp_path / "structure.toml"
    structure.write_text('compressions = [0.5, 2]\nstrategies = []\ncolour = "red"\n'
                         '[shared]\nseed = 3\n')
    assert main(["sweep", str(structure)]) == 2
    err = capsys.readouterr().err
    for line in ("compressions[0]: must be >= 1", "strategies: ", "colour: unknown field",
                 "shared: 'seed' is set by the sweep's 'seeds' list"):
        assert line in err, (line, err)


def test_dry_run_prints_the_expanded_runs(tmp_path, capsys):
    path = write_sweep(tmp_path, ["GlobalMagWeight", "RandomPruning"], [1, 2, 4], [0, 1])
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("12 runs (0 complete, 12 to run), 2 dense baselines")
    assert len(re.findall(r"\[to run\]  digits-mlp-", out)) == 12
    assert re.search(r"RandomPruning +c=4 +seed=1", out)
    assert not (tmp_path / "out").exists()


def test_unknown_executor_and_bad_workers_are_user_errors(tmp_path, capsys):
    path = write_sweep(tmp_path, ["RandomPruning"], [2], [0])
    assert main(["sweep", str(path), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["sweep", str(path), "--address", "127.0.0.1:1"]) == 2
    assert "--address is only used with --executor ray" in capsys.readouterr().err


# -- running ----------------------------------------------------------------------
def test_failure_is_recorded_and_two_workers_share_one_dense_baseline(tmp_path, monkeypatch):
    """Two workers start together on the same baseline: one trains it, the other waits."""
    from shrinkbench_core.experiment import resolve

    # Validation would refuse the unreachable compression before anything runs; switched
    # off in the driver, the run fails in its worker like any run failing at run time.
    monkeypatch.setattr(resolve, "compression_problem", lambda *args: None)
    sweep = load_sweep_file(
        write_sweep(tmp_path, ["GlobalMagWeight"], [2, 4, 100_000], [0], dense_epochs=30)
    )
    stream = io.StringIO()
    summary = run_sweep(sweep, workers=2, stream=stream)
    assert summary.counts()["succeeded"] == 2 and summary.counts()["failed"] == 1
    assert summary.exit_code == 1
    assert "largest reachable compression" in stream.getvalue()
    runs = tmp_path / "out" / "runs"
    failed = next(runs.glob("*-c100000-*"))
    status = json.loads((failed / "status.json").read_text())
    assert status["status"] == "failed" and "CompressionError" in status["error"]
    outcomes = {o.name: o for o in summary.outcomes.values() if o.status == "succeeded"}
    assert sorted(o.dense_trained for o in outcomes.values()) == [False, True]
    assert len({o.worker for o in outcomes.values()}) == 2  # really two processes
    metrics = [json.loads((runs / name / "metrics.json").read_text()) for name in outcomes]
    assert metrics[0]["dense"]["accuracy"] == metrics[1]["dense"]["accuracy"]
    assert len(list((tmp_path / "out" / "dense").glob("*/model.pt"))) == 1
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert record["summary"]["failed"] == 1 and len(record["runs"]) == 3

    # the results table lists the failed run with its error; a rerun would retry only it
    from shrinkbench_core.results import load_results

    table = load_results(tmp_path / "out")
    assert sorted(table["status"]) == ["complete", "complete", "failed"]
    assert "largest reachable" in table.loc[table["status"] == "failed", "error"].item()
    plan = describe_plan(expand_sweep(sweep, get_registry()))
    assert plan.startswith("3 runs (2 complete, 1 to run)")
    assert re.search(r"c=100000  seed=0  \[to run\]", plan)


def _sweep_process(path: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shrinkbench_core.cli", "sweep", str(path), "--workers",
         str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_interrupted_sweep_reruns_only_missing_runs_then_tables_and_plots(tmp_path, capsys):
    path = write_sweep(tmp_path, ["GlobalMagWeight", "RandomPruning"], [2, 4, 8], [0, 1],
                       finetune_epochs=2)
    output = tmp_path / "out"
    process = _sweep_process(path, workers=2)
    try:
        deadline = time.monotonic() + 400
        while len(complete_runs(output)) < 3:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "no run completed in time"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the driver and its workers
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, out
    assert "sweep interrupted" in out and "rerun the same command to resume" in out
    deadline = time.monotonic() + 30
    while _group_alive(process.pid):  # no worker outlives the sweep
        assert time.monotonic() < deadline, "worker processes left behind"
        time.sleep(0.2)
    before = complete_runs(output)
    assert 3 <= len(before) < 12, "the sweep was not interrupted midway"
    statuses = {json.loads(p.read_text())["status"] for p in output.glob("runs/*/status.json")}
    assert statuses <= {"complete", "interrupted"}  # nothing left marked running
    assert json.loads((output / "sweep.json").read_text())["summary"]["interrupted"] is True

    rerun = subprocess.run(
        [sys.executable, "-m", "shrinkbench_core.cli", "sweep", str(path), "--workers", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    counts = summary_counts(rerun.stdout)
    assert counts == {"total": 12, "succeeded": 12 - len(before), "failed": 0,
                      "skipped": len(before)}
    after = complete_runs(output)
    assert len(after) == 12
    assert all(after[name] == mtime for name, mtime in before.items())  # not run again
    record = json.loads((output / "sweep.json").read_text())
    ran = {r["name"] for r in record["runs"] if r["status"] == "succeeded"}
    assert ran == set(after) - set(before)
    # every dense baseline was trained at most once, by a run that completed or was killed
    trained = [json.loads((output / "runs" / name / "metrics.json").read_text())
               ["dense_source"] for name in after]
    per_baseline = pd.Series([t["trained_now"] for t in trained]).groupby(
        [t["digest"] for t in trained]).sum()
    assert len(per_baseline) == 2 and (per_baseline <= 1).all()

    capsys.readouterr()
    assert main(["results", str(output), "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(table) == 12 and set(table["status"]) == {"complete"}
    assert sorted(set(table["strategy"])) == ["GlobalMagWeight", "RandomPruning"]
    assert sorted(set(table["compression"])) == [2, 4, 8]
    assert table["compression_achieved"].round(2).tolist() == table["compression"].tolist()
    assert table["finetuned_top1"].between(0, 1).all()
    assert main(["plot", str(output)]) == 0
    assert (output / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

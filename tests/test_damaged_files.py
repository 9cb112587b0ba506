"""Damaged files (issue 19, item 8): every file ShrinkBench wrote, found truncated, garbled,
empty or replaced by a folder, is reported by each reader in a few lines naming the file and
what to do, never a traceback; a rerun rewrites what it can, and ``--force`` over a damaged
dense cache keeps the complete run until its replacement completes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from shrinkbench_core.cli import main, run_main
from shrinkbench_core.experiment import training

ARGS = [
    "--strategy", "GlobalMagWeight",
    "-p", "model.hidden_sizes=[16]",
    "-p", "dense.epochs=1",
    "-p", "finetune.epochs=2",
    "-p", "metrics=[size,accuracy]",
    "--quiet",
]
RUN_FILES = {  # name: path under the run directory
    "config.json": "config.json",
    "status.json": "status.json",
    "metrics.json": "metrics.json",
    "progress.json": "checkpoints/progress.json",
    "last.pt": "checkpoints/last.pt",
    "best.pt": "checkpoints/best.pt",
    "masks.pt": "masks.pt",
    "model.pt": "model.pt",
    "logs.csv": "logs.csv",
}
DENSE_FILES = {"dense.json": "dense.json", "dense model.pt": "model.pt"}
KINDS = ("truncated", "garbage", "empty", "directory")
#: What results, plot and show read (the rest is read only by a rerun or an export).
RECORDS = ("config.json", "status.json", "metrics.json")


def args(compression: int, output: Path) -> list[str]:
    return [*ARGS, "--compression", str(compression), "--output", str(output)]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two complete runs (2x and 4x) sharing one dense model."""
    root = tmp_path_factory.mktemp("study")
    for compression in (2, 4):
        assert run_main(args(compression, root)) == 0
    return root


@pytest.fixture
def copy(study, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(study, out)
    return out


def run_4x(output: Path) -> Path:
    (path,) = (output / "runs").glob("*-c4-*")
    return path


def damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00\xff\xfe garbage {[" * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # a folder where the file was
        path.unlink()
        path.mkdir()
        (path / "stray").write_text("x")


def target(output: Path, name: str) -> Path:
    if name in RUN_FILES:
        return run_4x(output) / RUN_FILES[name]
    (entry,) = [p for p in (output / "dense").iterdir() if p.is_dir()]
    return entry / DENSE_FILES[name]


def no_traceback(err: str) -> None:
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 6, err  # one screen, not a dump


def complete(path: Path) -> dict:
    assert json.loads((path / "status.json").read_text())["status"] == "complete"
    return json.loads((path / "metrics.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [*RUN_FILES, *DENSE_FILES])
def test_rerun_rewrites_the_damage_or_names_the_file(copy, name, kind, capsys):
    before = complete(run_4x(copy))
    path = target(copy, name)
    weights = name in ("model.pt", "masks.pt")
    keys_before = set(torch.load(path, weights_only=True)) if weights else None
    damage(path, kind)
    code = run_main(args(4, copy))
    err = capsys.readouterr().err
    no_traceback(err)
    if code != 0:  # it cannot be rewritten: the file and --force are named
        assert code == 2 and str(path) in err and "--force" in err, err
        assert run_main([*args(4, copy), "--force"]) == 0, capsys.readouterr().err
    after = complete(run_4x(copy))
    assert after["finetuned"]["size"] == before["finetuned"]["size"]
    if name in RECORDS:  # the run's own record is rewritten, identical where deterministic
        assert path.is_file() and after["finetuned"]["accuracy"] == before["finetuned"]["accuracy"]
    if weights:  # never left damaged behind "already complete"
        assert set(torch.load(path, weights_only=True)) == keys_before


@pytest.fixture(scope="module")
def interrupted(study, tmp_path_factory) -> Path:
    """The study with its 4x run interrupted after its last epoch was committed (to resume)."""
    from shrinkbench_core.experiment.stages import evaluate

    root = tmp_path_factory.mktemp("interrupted")
    shutil.copytree(study / "dense", root / "dense")

    def stop(*a, **k):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "measure_best", stop)
        assert run_main(args(4, root)) == 130
    assert json.loads((run_4x(root) / "status.json").read_text())["status"] == "interrupted"
    return root


RESUMED = ("config.json", "status.json", "progress.json", "last.pt", "best.pt", "masks.pt",
           "logs.csv")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", RESUMED)
def test_resume_rewrites_the_damage_or_names_the_file(interrupted, study, tmp_path, name, kind,
                                                      capsys):
    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    path = target(out, name)
    damage(path, kind)
    code = run_main(args(4, out))
    err = capsys.readouterr().err
    no_traceback(err)
    if code != 0:
        assert code == 2 and str(path) in err and "--force" in err, err
        assert run_main([*args(4, out), "--force"]) == 0, capsys.readouterr().err
    reference = complete(run_4x(study))
    after = complete(run_4x(out))
    assert after["finetuned"]["accuracy"] == reference["finetuned"]["accuracy"]
    assert after["finetuned"]["size"] == reference["finetuned"]["size"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", DENSE_FILES)
def test_a_damaged_dense_entry_is_made_again_by_the_next_run(copy, name, kind, capsys):
    path = target(copy, name)
    damage(path, kind)
    code = run_main(args(3, copy))  # a new run on the same dense model
    err = capsys.readouterr().err
    no_traceback(err)
    if kind == "directory":  # never deleted: named, with what to do
        assert code == 2 and str(path) in err and "remove that folder" in err, err
        shutil.rmtree(path)
        assert run_main(args(3, copy)) == 0
    else:
        assert code == 0 and f"dense cache entry {path.parent} is damaged" in err, err
    (new,) = (copy / "runs").glob("*-c3-*")
    assert complete(new)["dense"] == complete(run_4x(copy))["dense"]  # the same model again
    assert path.is_file()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", RECORDS)
def test_results_plot_and_show_name_a_damaged_run(copy, name, kind, capsys):
    path = target(copy, name)
    damage(path, kind)
    run = run_4x(copy)

    assert main(["results", str(copy)]) == 0  # the table goes on without it
    out, err = capsys.readouterr()
    no_traceback(err)
    table, _, listing = out.partition("damaged runs (1):")
    assert "complete" in table and str(run) not in table
    assert name in listing and str(run) in listing and "--force" in listing, out

    assert main(["results", str(copy), "--format", "json"]) == 0
    rows = {row["path"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[str(run)]["status"] == "damaged" and name in rows[str(run)]["error"]
    assert [r["status"] for p, r in rows.items() if p != str(run)] == ["complete"]

    assert main(["plot", str(copy), "--out", str(copy / "tradeoff.png")]) == 0
    out, err = capsys.readouterr()
    assert "1 runs" in out and (copy / "tradeoff.png").is_file()  # the 2x run alone
    assert f"skipped damaged run {run}" in err and name in err

    code = main(["show", str(run)])
    err = capsys.readouterr().err
    no_traceback(err)
    if code != 0:
        assert code == 2 and str(path) in err and "--force" in err, err


def test_force_over_a_damaged_dense_cache_keeps_the_complete_run(copy, monkeypatch, capsys):
    run = run_4x(copy)
    before = (run / "metrics.json").read_bytes()
    weights = target(copy, "dense model.pt")
    damage(weights, "truncated")
    real = training.train_epoch

    def broken(*a, **k):
        raise RuntimeError("the disk filled up during dense training")

    monkeypatch.setattr(training, "train_epoch", broken)
    with pytest.raises(RuntimeError):  # the redo fails while retraining the damaged entry
        run_main([*args(4, copy), "--force"])
    err = capsys.readouterr().err
    assert f"dense cache entry {weights.parent} is damaged" in err
    assert (run / "metrics.json").read_bytes() == before  # the complete run is still there
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert not list((copy / ".replaced").glob("*"))

    monkeypatch.setattr(training, "train_epoch", real)
    assert run_main([*args(4, copy), "--force"]) == 0  # retrained, then replaced
    after = complete(run)
    assert after["dense"] == json.loads(before)["dense"]  # the same dense model, made again
    old = json.loads(before)["finetuned"]
    assert after["finetuned"]["accuracy"] == old["accuracy"]  # seeded: the same result
    assert not list((copy / ".replaced").glob("*"))


def test_show_names_a_damaged_log(copy, capsys):
    logs = run_4x(copy) / "logs.csv"
    damage(logs, "garbage")
    assert main(["show", str(run_4x(copy))]) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert str(logs) in err and "--force" in err


SWEEP = """output = "{output}"
compressions = [2, 4]
seeds = [0]
[[strategies]]
name = "GlobalMagWeight"
[[models]]
name = "mlp"
params = {{hidden_sizes = [16]}}
[shared]
dense = {{epochs = 1}}
finetune = {{epochs = 2}}
metrics = ["size", "accuracy"]
"""


@pytest.mark.slow  # a process pool and two runs: about half a minute
def test_a_sweep_rerun_redoes_what_it_can_and_names_the_rest(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP.format(output=tmp_path / "out"))
    assert main(["sweep", str(sweep), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    (two,) = (out / "runs").glob("*-c2-*")
    damage(two / "metrics.json", "garbage")  # rewritten: the run resumes from last.pt
    damage(run_4x(out) / "config.json", "directory")  # a folder it must not delete
    damage(out / "sweep.json", "truncated")  # the record of the last invocation: rewritten
    assert main(["sweep", str(sweep), "--quiet"]) == 1
    err = capsys.readouterr().err
    no_traceback(err)
    assert "failed: " + run_4x(out).name in err and str(run_4x(out) / "config.json") in err
    complete(two)
    record = json.loads((out / "sweep.json").read_text())
    outcomes = {Path(r["name"]).name: r for r in record["runs"]}
    assert outcomes[two.name]["status"] == "succeeded"
    assert "a folder is in its place" in outcomes[run_4x(out).name]["error"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["model.pt", "masks.pt"])
def test_export_names_a_damaged_file(copy, name, kind, capsys):
    path = target(copy, name)
    damage(path, kind)
    code = main(["export", str(run_4x(copy)), "--out", str(copy / "model-export.pt")])
    err = capsys.readouterr().err
    no_traceback(err)
    assert code == 2 and str(path) in err and "--force" in err, err
    assert not (copy / "model-export.pt").exists()

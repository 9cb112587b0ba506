"""The three trackers against their real libraries, read back with each library's own reader.

Runs are driven through :class:`RunEvents` with the sequence of events an experiment emits
(dense epochs, stage metrics, a pruning step with a real masks summary, fine-tuning epochs,
the run's end), on a real plugin manager and registry.
"""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch

from shrinkbench_core.config import build_config
from shrinkbench_core.lifecycle import RunEvents, RunInfo
from shrinkbench_core.plugins import make_plugin_manager
from shrinkbench_core.pruning.masks import masks_summary
from shrinkbench_core.registry import Registry
from shrinkbench_core.trackers import tracker_plugins

DENSE_LOGS = [
    {
        "epoch": 1,
        "lr": 0.05,
        "train_loss": 1.25,
        "train_acc": 0.61,
        "val_loss": 0.92,
        "val_acc": 0.72,
        "epoch_seconds": 0.4,
    },
    {
        "epoch": 2,
        "lr": 0.025,
        "train_loss": 0.5,
        "train_acc": 0.86,
        "val_loss": 0.41,
        "val_acc": 0.88,
        "epoch_seconds": 0.4,
    },
]
FINETUNE_LOGS = [
    {
        "epoch": 1,
        "lr": 0.05,
        "train_loss": 0.75,
        "train_acc": 0.8,
        "val_loss": 0.6,
        "val_acc": 0.83,
        "epoch_seconds": 0.3,
        "compression": 4.0,
    },
    {
        "epoch": 2,
        "lr": 0.01,
        "train_loss": 0.25,
        "train_acc": 0.93,
        "val_loss": 0.3,
        "val_acc": 0.9,
        "epoch_seconds": 0.3,
        "compression": 4.0,
    },
]
TOP1 = {"dense": 0.9, "pruned": 0.5, "finetuned": 0.875}
COMPRESSION = {"dense": 1.0, "pruned": 4.0, "finetuned": 4.0}


def stage_metrics(stage: str) -> dict:
    """A stage's metrics shaped as in ``metrics.json`` (nested dicts, a list of layers)."""
    return {
        "size": {"total_parameters": 1000, "compression_ratio": COMPRESSION[stage]},
        "flops": {
            "macs": 5000.0,
            "theoretical_speedup": COMPRESSION[stage],
            "layers": [{"layer": "fc1", "macs": 5000.0}],
        },
        "accuracy": {"test_top1": TOP1[stage], "test_loss": 1 - TOP1[stage], "test_examples": 360},
    }


def masks() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "fc1.weight": torch.rand(32, 16, generator=generator) > 0.8,  # ~80% pruned
        "fc2.weight": torch.rand(10, 32, generator=generator) > 0.5,  # ~50% pruned
    }


def start_run(tmp_path: Path, trackers: list, resumed: bool = False) -> RunEvents:
    """RunEvents for a run in ``tmp_path/run`` with ``trackers`` selected."""
    manager = make_plugin_manager(load_entry_points=False)
    config = build_config({"trackers": trackers, "output": str(tmp_path)})
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"config": config.model_dump(mode="json")}))
    run = RunInfo(
        path=run_dir,
        name="digits-mlp-GlobalMagWeight-c4-s0-abc",
        digest=config.digest(),
        config=config.model_dump(mode="json"),
        resumed=resumed,
    )
    return RunEvents(manager, run, plugins=tracker_plugins(config, Registry(manager)))


def drive(events: RunEvents, status: str = "complete", after=None) -> dict:
    """Emit a whole experiment's events; ``after(name)`` is called after each event."""
    after = after or (lambda name: None)
    events.emit("shrinkbench_run_start")
    after("run_start")
    for row in DENSE_LOGS:
        events.emit("shrinkbench_epoch_end", stage="dense", epoch=row["epoch"], logs=row)
        after("dense_epoch")
    events.emit("shrinkbench_stage_end", stage="dense", metrics=stage_metrics("dense"))
    summary = masks_summary(masks())
    events.emit(
        "shrinkbench_pruning_step",
        step=1,
        compression=4.0,
        summary=summary,
        details={"schedule": "oneshot", "round": 1},
    )
    events.emit("shrinkbench_stage_end", stage="pruned", metrics=stage_metrics("pruned"))
    after("pruned")
    for row in FINETUNE_LOGS:
        events.emit("shrinkbench_epoch_end", stage="finetune", epoch=row["epoch"], logs=row)
        after("finetune_epoch")
    events.emit("shrinkbench_stage_end", stage="finetuned", metrics=stage_metrics("finetuned"))
    metrics = None
    if status == "complete":
        metrics = {
            "compression": {"requested": 4.0, "achieved": 4.0},
            "theoretical_speedup": 4.0,
            "finetuned": stage_metrics("finetuned"),
        }
        (events.run.path / "metrics.json").write_text(json.dumps(metrics))
    events.emit(
        "shrinkbench_run_end",
        status=status,
        metrics=metrics,
        error=None if status == "complete" else "RuntimeError: boom",
    )
    events.close()
    return summary


def expected_sparsity(summary) -> dict[str, float]:
    return {row.parameter: row.pruned / row.size for row in summary.itertuples()}


# -- TensorBoard ----------------------------------------------------------------------------------
def event_accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def scalar_series(accumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, pytest.approx(event.value)) for event in accumulator.Scalars(tag)]


def test_tensorboard_event_files_read_back(tmp_path):
    summary = drive(start_run(tmp_path, ["tensorboard"]))
    accumulator = event_accumulator(tmp_path / "run" / "tensorboard")
    assert scalar_series(accumulator, "dense/train_loss") == [(1, 1.25), (2, 0.5)]
    assert scalar_series(accumulator, "finetune/val_acc") == [(1, 0.83), (2, 0.9)]
    assert scalar_series(accumulator, "finetune/lr") == [(1, 0.05), (2, 0.01)]
    assert scalar_series(accumulator, "finetune/compression") == [(1, 4.0), (2, 4.0)]
    assert scalar_series(accumulator, "stages/accuracy/test_top1") == [
        (0, 0.9),
        (1, 0.5),
        (2, 0.875),
    ]
    assert scalar_series(accumulator, "pruning/compression") == [(1, 4.0)]
    for name, value in expected_sparsity(summary).items():
        assert scalar_series(accumulator, f"sparsity/{name}") == [(1, value)]
    histogram = accumulator.Histograms("pruning/layer_sparsity")[0].histogram_value
    assert histogram.num == 2
    assert histogram.min == pytest.approx(min(expected_sparsity(summary).values()))
    config_text = accumulator.Tensors("config/text_summary")[0].tensor_proto.string_val[0]
    assert b'"trackers"' in config_text and b"GlobalMagWeight" in config_text
    assert scalar_series(accumulator, "final/test_top1") == [(0, 0.875)]
    assert "_hparams_/experiment" in accumulator.PluginTagToContent("hparams")
    status = accumulator.Tensors("status/text_summary")[0].tensor_proto.string_val[0]
    assert status == b"complete"


def test_tensorboard_log_dir_parameter(tmp_path):
    log_dir = tmp_path / "elsewhere"
    drive(start_run(tmp_path, [{"name": "tensorboard", "params": {"log_dir": str(log_dir)}}]))
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert "dense/train_loss" in event_accumulator(log_dir).Tags()["scalars"]


# -- MLflow ---------------------------------------------------------------------------------------
def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def only_run(client, experiment_name: str = "shrinkbench"):
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    metrics = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [(metric.step, pytest.approx(metric.value)) for metric in metrics]


def test_mlflow_run_read_back_with_the_client(tmp_path):
    uri = (tmp_path / "store").as_uri()
    summary = drive(start_run(tmp_path, [{"name": "mlflow", "params": {"tracking_uri": uri}}]))
    client = mlflow_client(uri)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "digits-mlp-GlobalMagWeight-c4-s0-abc"
    assert run.data.params["strategy.name"] == "GlobalMagWeight"
    assert run.data.params["finetune.optimizer.lr"] == "0.05"
    assert run.data.tags["shrinkbench.status"] == "complete"
    run_id = run.info.run_id
    assert history(client, run_id, "dense/train_loss") == [(1, 1.25), (2, 0.5)]
    assert history(client, run_id, "finetune/val_acc") == [(1, 0.83), (2, 0.9)]
    assert history(client, run_id, "finetuned/accuracy/test_top1") == [(0, 0.875)]
    assert history(client, run_id, "pruning/compression") == [(1, 4.0)]
    for name, value in expected_sparsity(summary).items():
        assert history(client, run_id, f"sparsity/{name}") == [(1, value)]
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"metrics.json", "config.json"} <= artifacts
    downloaded = client.download_artifacts(run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(downloaded).read_text())["theoretical_speedup"] == 4.0


def test_mlflow_defaults_to_mlruns_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    drive(start_run(tmp_path, ["mlflow"]), status="failed")
    run = only_run(mlflow_client((tmp_path / "mlruns").as_uri()))
    assert run.info.status == "FAILED"
    assert run.data.tags["shrinkbench.error"] == "RuntimeError: boom"


def test_mlflow_honours_the_environment_and_resumes_the_same_run(tmp_path, monkeypatch):
    uri = (tmp_path / "from-env").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    events = start_run(tmp_path, [{"name": "mlflow", "params": {"experiment_name": "x"}}])
    drive(events, status="interrupted")
    client = mlflow_client(uri)
    assert only_run(client, "x").info.status == "KILLED"
    drive(
        start_run(tmp_path, [{"name": "mlflow", "params": {"experiment_name": "x"}}], resumed=True)
    )
    run = only_run(client, "x")  # still one MLflow run for the experiment
    assert run.info.status == "FINISHED"


# -- Weights & Biases -----------------------------------------------------------------------------
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))


def wandb_records(run_dir: Path) -> list:
    """Every record of the offline run's ``.wandb`` file, as wandb's own protobuf messages.

    The file is wandb's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version),
    then 32 KiB blocks of chunks (crc32c, length, type full/first/middle/last), each record a
    serialized ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    [path] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            position += block - position % block if position % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def finished_wandb_records(run_dir: Path, wait: float = 60.0) -> list:
    """The records once the ``exit`` record is there: wandb's own service process writes the
    file and may still be flushing it when ``finish()`` returns."""
    deadline = time.monotonic() + wait
    while True:
        records = wandb_records(run_dir)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"no exit record after {wait} s: {len(records)} records")
        time.sleep(0.1)


def wandb_contents(run_dir: Path) -> dict:
    """The offline run's config, history rows, final summary and exit code."""
    contents: dict = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for record in finished_wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            contents["name"] = record.run.display_name
            contents["config"] = {
                item.key: json.loads(item.value_json) for item in record.run.config.update
            }
        elif kind == "history":
            contents["history"].append(
                {
                    "/".join(item.nested_key) or item.key: json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "summary":
            for item in record.summary.update:
                contents["summary"]["/".join(item.nested_key) or item.key] = json.loads(
                    item.value_json
                )
        elif kind == "exit":
            contents["exit_code"] = record.exit.exit_code
    return contents


def test_wandb_offline_run_read_back_from_its_files(tmp_path, wandb_offline):
    summary = drive(start_run(tmp_path, [{"name": "wandb", "params": {"tags": ["t1"]}}]))
    contents = wandb_contents(tmp_path / "run")
    assert contents["name"] == "digits-mlp-GlobalMagWeight-c4-s0-abc"
    assert contents["config"]["strategy"]["name"] == "GlobalMagWeight"
    dense = [row for row in contents["history"] if "dense/train_loss" in row]
    assert [(row["dense/epoch"], row["dense/train_loss"]) for row in dense] == [(1, 1.25), (2, 0.5)]
    finetune = [row for row in contents["history"] if "finetune/val_acc" in row]
    assert [row["finetune/val_acc"] for row in finetune] == [0.83, 0.9]
    [pruning] = [row for row in contents["history"] if "pruning/compression" in row]
    assert pruning["pruning/step"] == 1
    for name, value in expected_sparsity(summary).items():
        assert pruning[f"sparsity/{name}"] == pytest.approx(value)
    assert contents["summary"]["finetuned/accuracy/test_top1"] == 0.875
    assert contents["summary"]["dense/accuracy/test_top1"] == 0.9
    assert contents["summary"]["status"] == "complete"
    assert contents["exit_code"] == 0


def test_wandb_failed_run_finishes_with_a_nonzero_exit_code(tmp_path, wandb_offline):
    drive(start_run(tmp_path, ["wandb"]), status="failed")
    contents = wandb_contents(tmp_path / "run")
    assert contents["exit_code"] == 1
    assert contents["summary"]["error"] == "RuntimeError: boom"


# -- failures -------------------------------------------------------------------------------------
def warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("shrinkbench: warning:")]


def test_tracker_failing_mid_run_is_reported_once_and_the_others_keep_logging(tmp_path, capsys):
    store = tmp_path / "store"
    events = start_run(
        tmp_path, ["tensorboard", {"name": "mlflow", "params": {"tracking_uri": store.as_uri()}}]
    )

    def break_store(event: str) -> None:
        if event == "pruned":  # the store vanishes and a file takes its place
            events.manager.get_plugin("tracker:mlflow").flush()
            shutil.rmtree(store)
            store.write_text("not a directory")

    drive(events, after=break_store)
    [line] = warnings(capsys.readouterr().err)
    assert line.startswith("shrinkbench: warning: 'tracker:mlflow' failed in shrinkbench_")
    assert "disabled for this run: TrackerError: handling shrinkbench_epoch_end: " in line
    assert events.failed.keys() == {"tracker:mlflow"}
    accumulator = event_accumulator(tmp_path / "run" / "tensorboard")
    assert scalar_series(accumulator, "finetune/train_loss") == [(1, 0.75), (2, 0.25)]
    assert scalar_series(accumulator, "final/test_top1") == [(0, 0.875)]


def test_unwritable_log_dir_and_invalid_uri_fail_at_start_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    events = start_run(
        tmp_path,
        [
            {"name": "tensorboard", "params": {"log_dir": str(blocker / "tb")}},
            {"name": "mlflow", "params": {"tracking_uri": "nosuchscheme://host/x"}},
        ],
    )
    drive(events)
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 2
    assert all("TrackerError: handling shrinkbench_run_start: " in line for line in lines)
    [tensorboard] = [line for line in lines if "'tracker:tensorboard'" in line]
    assert "NotADirectoryError" in tensorboard
    [mlflow] = [line for line in lines if "'tracker:mlflow'" in line]
    assert "nosuchscheme" in mlflow
    assert {"tracker:tensorboard", "tracker:mlflow"} == events.failed.keys()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["theoretical_speedup"] == 4


# -- the worker thread ---------------------------------------------------------------------------
class Recorder:
    """A tracker whose start blocks until the test releases it, recording what it handles."""

    def __init__(self, background: bool) -> None:
        import threading

        from shrinkbench_core.trackers import Tracker

        release, handled = threading.Event(), []

        class Blocking(Tracker):
            def on_start(self, run):
                release.wait(30)
                handled.append("start")

            def on_epoch(self, run, stage, epoch, logs):
                handled.append((stage, epoch, dict(logs)))

            def on_end(self, run, status, metrics, error):
                handled.append(status)

        Blocking.background = background
        self.tracker, self.release, self.handled = Blocking(None), release, handled


def test_events_are_handled_in_order_on_a_worker_thread(tmp_path):
    recorder = Recorder(background=True)
    run = RunInfo(path=tmp_path, name="run", digest="d", config={})
    events = RunEvents(
        make_plugin_manager(load_entry_points=False), run, [("rec", recorder.tracker)]
    )
    events.emit("shrinkbench_run_start")  # returns while on_start still waits
    logs = {"epoch": 1, "train_loss": 0.5}
    events.emit("shrinkbench_epoch_end", stage="dense", epoch=1, logs=logs)
    logs["train_loss"] = 99.0  # the runner reusing its row does not change what was logged
    assert recorder.handled == []
    recorder.release.set()
    events.emit("shrinkbench_run_end", status="complete", metrics={}, error=None)
    assert recorder.handled == ["start", ("dense", 1, {"epoch": 1, "train_loss": 0.5}), "complete"]
    assert not events.failed


def test_a_tracker_may_handle_events_in_the_hook_itself(tmp_path):
    recorder = Recorder(background=False)
    recorder.release.set()
    run = RunInfo(path=tmp_path, name="run", digest="d", config={})
    events = RunEvents(
        make_plugin_manager(load_entry_points=False), run, [("rec", recorder.tracker)]
    )
    events.emit("shrinkbench_run_start")
    assert recorder.handled == ["start"]

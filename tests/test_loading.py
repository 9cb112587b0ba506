"""DataLoader defaults per device, and that they make a working DataLoader."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shrinkbench_core.experiment.loading import default_workers, loader_settings


def test_cpu_with_few_cores_loads_in_the_main_process():
    settings = loader_settings("cpu", cores=2)
    assert settings.num_workers == 0
    assert not settings.pin_memory and not settings.persistent_workers
    assert "prefetch_factor" not in settings.kwargs()


def test_cpu_with_many_cores_uses_a_few_persistent_workers():
    assert default_workers("cpu", 16) == 4
    assert default_workers("cpu", 8) == 2
    assert default_workers("cpu", 16, processes=8) == 0  # 2 cores per DDP rank
    settings = loader_settings("cpu", cores=16)
    assert settings.persistent_workers and settings.prefetch_factor == 2


def test_cuda_pins_memory_and_leaves_a_core_for_training():
    settings = loader_settings("cuda:0", cores=16)
    assert settings.pin_memory and settings.num_workers == 8 and settings.persistent_workers
    assert loader_settings("cuda", cores=16, processes=4).num_workers == 3
    assert loader_settings("cuda", cores=1).num_workers == 1


def test_explicit_workers_win_and_negative_is_rejected():
    assert loader_settings("cpu", workers=1, cores=2).kwargs() == {
        "num_workers": 1, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 2
    }
    with pytest.raises(ValueError, match="workers"):
        loader_settings("cpu", workers=-1)


def test_settings_build_a_dataloader_that_reads_every_example():
    data = TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
    loader = DataLoader(data, batch_size=4, **loader_settings("cpu", workers=1).kwargs())
    for _epoch in range(2):  # persistent workers serve a second epoch
        assert sorted(int(t) for _, targets in loader for t in targets) == list(range(10))


def _context(tmp_path, **dataset):
    from shrinkbench_core.config import build_config
    from shrinkbench_core.experiment.context import RunContext
    from shrinkbench_core.experiment.resolve import resolve_config
    from shrinkbench_core.experiment.rundir import RunDirectory
    from shrinkbench_core.registry import get_registry

    config = build_config({"dataset": dataset, "output": str(tmp_path), "device": "cpu"})
    return RunContext(resolve_config(config, get_registry()), RunDirectory(tmp_path / "run"))


def test_the_runner_builds_its_loaders_from_the_device_settings(tmp_path):
    auto = _context(tmp_path, workers="auto")
    expected = loader_settings("cpu")
    workers, options = auto.loader_options(persistent=True)
    assert workers == expected.num_workers and options["pin_memory"] == expected.pin_memory
    two = _context(tmp_path, workers=2)
    loaders = two.loaders()
    assert loaders["test"].num_workers == 2 and loaders["test"].persistent_workers
    train = two.train_loader("dense", 1)  # a new loader each epoch: its workers do not persist
    assert train.num_workers == 2 and not train.persistent_workers
    assert next(iter(loaders["test"]))[0].shape[0] > 0


@pytest.mark.parametrize("value", [-1, "many", 1.5])
def test_workers_accept_a_count_or_auto_only(value):
    from shrinkbench_core.config import build_config
    from shrinkbench_core.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset.workers"):
        build_config({"dataset": {"workers": value}})

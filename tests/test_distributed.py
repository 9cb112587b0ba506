"""Distributed helpers with 2 real gloo processes on CPU: broadcast, sampler, DDP with masks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from shrinkbench_core.errors import UserError
from shrinkbench_core.experiment.distributed import (
    DistributedContext,
    broadcast_masks,
    broadcast_object,
    check_nproc,
    context_from_env,
    destroy_distributed,
    distributed_sampler,
    init_distributed,
    is_writer,
    scored_once,
    torchrun_command,
)
from shrinkbench_core.pruning import apply_masks, hold_masks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        torch.manual_seed(rank)  # different on each rank: broadcasts must make them agree
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        masks = {name: torch.rand(p.shape) > 0.5
                 for name, p in model.named_parameters() if name.endswith("weight")}
        masks = broadcast_masks(masks if rank == 0 else None)
        state = broadcast_object({k: v.clone() for k, v in model.state_dict().items()}
                                 if rank == 0 else None)
        model.load_state_dict(state)
        calls: list[float] = []

        def pruner(compression: float) -> dict[str, torch.Tensor]:  # scores differ by rank
            calls.append(compression)
            chosen = {name: torch.rand(p.shape) > 0.5 for name, p in model.named_parameters()
                      if name.endswith("weight")}
            apply_masks(model, chosen)
            return chosen

        pruned = scored_once(pruner, model)(4.0)
        pruned_zeros = all(torch.count_nonzero(p[~pruned[n]]) == 0
                           for n, p in model.named_parameters() if n in pruned)
        model.load_state_dict(state)
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        hold_masks(model, masks, optimizer)
        data = torch.utils.data.TensorDataset(torch.randn(40, 6), torch.randint(0, 3, (40,)))
        sampler = distributed_sampler(data, seed=7, context=context)
        sampler.set_epoch(0)
        shard = list(sampler)
        loader = torch.utils.data.DataLoader(data, batch_size=5, sampler=sampler)
        for inputs, targets in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(ddp(inputs), targets).backward()
            optimizer.step()
        torch.save({"context": context, "writer": is_writer(), "masks": masks, "shard": shard,
                    "calls": calls, "pruned": pruned, "pruned_zeros": pruned_zeros,
                    "weights": {k: v.clone() for k, v in model.state_dict().items()}},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        destroy_distributed()


@pytest.mark.slow
def test_two_gloo_processes_agree_on_masks_and_keep_zeros_through_ddp_steps(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["context"] for r in ranks] == [
        DistributedContext(0, 2, 0, "gloo", True), DistributedContext(1, 2, 1, "gloo", True)
    ]
    assert [r["writer"] for r in ranks] == [True, False]
    first, second = ranks
    assert set(first["masks"]) == set(second["masks"]) == {"0.weight", "2.weight"}
    for name, mask in first["masks"].items():
        assert torch.equal(mask, second["masks"][name])
        assert torch.count_nonzero(first["weights"][name][~mask]) == 0
        assert torch.count_nonzero(second["weights"][name][~mask]) == 0
        assert torch.count_nonzero(first["weights"][name][mask]) == int(mask.sum())
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name])  # DDP kept the replicas equal
    assert sorted(first["shard"] + second["shard"]) == list(range(40))  # disjoint shards
    # scored once: rank 0 pruned, rank 1 applied rank 0's masks
    assert first["calls"] == [4.0] and second["calls"] == []
    assert all(torch.equal(first["pruned"][n], second["pruned"][n]) for n in first["pruned"])
    assert first["pruned_zeros"] and second["pruned_zeros"]


def test_single_process_helpers_are_no_ops(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # not started by torchrun
        monkeypatch.delenv(key, raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext() and not context.enabled and is_writer()
    assert broadcast_object({"a": 1}) == {"a": 1}
    masks = {"w": torch.tensor([True, False])}
    assert broadcast_masks(masks)["w"].tolist() == [True, False]
    assert context.record() == {"world_size": 1, "backend": None}


def test_sampler_order_follows_the_data_seed_and_epoch():
    data = list(range(30))
    context = DistributedContext(1, 2, 1)
    one, same, other = (distributed_sampler(data, seed, context=context) for seed in (3, 3, 4))
    assert list(one) == list(same) != list(other)
    before = list(one)
    one.set_epoch(1)
    assert list(one) != before


def test_environment_and_nproc_checks():
    assert context_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (
        DistributedContext(1, 4, 1, launched=True)
    )
    assert not context_from_env({}).launched
    with pytest.raises(UserError, match="invalid torchrun environment"):
        context_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UserError, match="must be integers"):
        context_from_env({"RANK": "x"})
    check_nproc(2, "cpu", cores=2)
    with pytest.raises(UserError, match="--nproc 3 is more than the 2 CPU cores"):
        check_nproc(3, "cpu", cores=2)
    with pytest.raises(UserError, match="at least 1"):
        check_nproc(0, "cpu", cores=2)
    command = torchrun_command(2, ["--strategy", "SNIP"])
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert command[-5:] == ["-m", "shrinkbench_core.cli", "run", "--strategy", "SNIP"]
    assert "--nproc_per_node=2" in command

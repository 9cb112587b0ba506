"""Data-parallel runs launched by ``torchrun``: process group, writer rank, broadcasts.

``torchrun --nproc_per_node N -m shrinkbench_core.cli run ...`` starts N processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`init_distributed`
joins them into one process group (``gloo`` on CPU, ``nccl`` on CUDA). Rank 0 alone
writes files (:func:`is_writer`); anything computed once (calibration scores, masks) is
computed on rank 0 and broadcast, so every rank prunes identically. Each rank reads its
own shard of the training set through a :class:`DistributedSampler` seeded by the run's
data seed (call ``set_epoch`` every epoch, as for any resumable order).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from shrinkbench_core.errors import UserError

__all__ = [
    "DistributedContext",
    "broadcast_masks",
    "broadcast_object",
    "check_nproc",
    "destroy_distributed",
    "distributed_sampler",
    "init_distributed",
    "is_writer",
    "torchrun_command",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run (world size 1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains together."""
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0

    def record(self) -> dict[str, Any]:
        """What ``config.json`` records: world size and backend."""
        return {"world_size": self.world_size, "backend": self.backend}


def context_from_env(environ: Mapping[str, str] | None = None) -> DistributedContext:
    """The ranks ``torchrun`` set in the environment (rank 0 of 1 when none are set)."""
    environ = os.environ if environ is None else environ
    try:
        rank = int(environ.get("RANK", 0))
        world_size = int(environ.get("WORLD_SIZE", 1))
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except ValueError as error:
        raise UserError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {error}") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistributedContext(rank, world_size, local_rank)


def init_distributed(device: torch.device | str = "cpu") -> DistributedContext:
    """Join the process group torchrun described (no-op for a single process).

    Uses ``nccl`` on CUDA (and selects the GPU ``LOCAL_RANK``), ``gloo`` otherwise.
    """
    context = context_from_env()
    if not context.enabled:
        return context
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(
        context.rank, context.world_size, context.local_rank, dist.get_backend()
    )


def destroy_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_writer() -> bool:
    """Whether this process writes files: rank 0, or any process outside a process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; unchanged when not distributed)."""
    if not _active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def broadcast_masks(
    masks: Mapping[str, torch.Tensor] | None, src: int = 0, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Rank ``src``'s masks on every rank (other ranks may pass ``None``).

    Names and shapes travel as one object, the masks as byte tensors (one collective per
    mask; ``gloo`` has no bool type). On CUDA (nccl) pass the rank's ``device``.
    """
    if not _active():
        if masks is None:
            raise ValueError("broadcast_masks needs masks outside a distributed run")
        return dict(masks)
    rank = dist.get_rank()
    shapes = broadcast_object(
        {name: tuple(mask.shape) for name, mask in masks.items()} if rank == src else None, src
    )
    result = {}
    for name, shape in shapes.items():
        if rank == src:
            data = masks[name].to(device=device, dtype=torch.uint8).contiguous()
        else:
            data = torch.empty(shape, dtype=torch.uint8, device=device)
        dist.broadcast(data, src=src)
        result[name] = data.bool()
    return result


def distributed_sampler(
    dataset: Dataset, seed: int, shuffle: bool = True, context: DistributedContext | None = None
) -> DistributedSampler:
    """This rank's shard of ``dataset`` in an order that depends only on ``seed`` and the epoch.

    Call ``sampler.set_epoch(epoch)`` before every epoch. The shards together cover the
    dataset once per epoch (the last few examples are repeated to make shards equal).
    """
    context = context or context_from_env()
    return DistributedSampler(
        dataset,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=False,
    )


def check_nproc(nproc: int, device: str = "cpu", cores: int | None = None) -> None:
    """Raise :class:`UserError` unless ``nproc`` processes fit the devices or cores."""
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    device_type = torch.device(device).type if device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if device_type == "cuda":
        available, what = torch.cuda.device_count(), "CUDA devices"
    else:
        from shrinkbench_core.sweep.worker import available_cores

        available, what = cores if cores is not None else available_cores(), "CPU cores"
    if nproc > available:
        raise UserError(
            f"--nproc {nproc} is more than the {available} {what} this process may use; "
            f"use --nproc {available} or fewer (one process per "
            f"{'GPU' if device_type == 'cuda' else 'core'})"
        )


def torchrun_command(nproc: int, run_args: Sequence[str]) -> list[str]:
    """The ``torchrun`` command that runs ``shrinkbench run RUN_ARGS`` on ``nproc`` processes.

    torchrun is started as ``python -m torch.distributed.run`` of this interpreter, so it
    uses the same environment; ``--standalone`` gives a single-node rendezvous.
    """
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "shrinkbench_core.cli", "run", *run_args,
    ]

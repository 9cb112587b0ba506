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
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from shrinkbench_core.errors import UserError
from shrinkbench_core.experiment.rank_failures import connect_board

__all__ = [
    "DistributedContext",
    "broadcast_masks",
    "broadcast_object",
    "check_nproc",
    "scored_once",
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
    launched: bool = False  # started by torchrun (WORLD_SIZE set), even with one process

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
    return DistributedContext(rank, world_size, local_rank, launched="WORLD_SIZE" in environ)


def init_distributed(device: torch.device | str = "cpu") -> DistributedContext:
    """Join the process group torchrun described (no-op without torchrun).

    Uses ``nccl`` on CUDA (and selects the GPU ``LOCAL_RANK``), ``gloo`` otherwise. Under
    torchrun a group is formed even for one process, so that ``--nproc_per_node 1`` reads
    its data in the same order as N processes do together (see :func:`sharded_loader`).
    """
    context = context_from_env()
    if not context.launched:
        return context
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(
        context.rank, context.world_size, context.local_rank, dist.get_backend(), True
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


def distributed_record() -> dict[str, Any]:
    """``{"world_size", "backend"}`` of this process (1 and ``None`` outside a group)."""
    if dist.is_available() and dist.is_initialized():
        return {"world_size": dist.get_world_size(), "backend": dist.get_backend()}
    return {"world_size": 1, "backend": None}


def in_process_group() -> bool:
    """Whether this process joined a process group (torchrun, any number of processes)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes training together (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sharded_loader(
    dataset: Dataset, global_batch: int, workers: int, seed: int, **options: Any
) -> torch.utils.data.DataLoader:
    """This rank's part of an epoch: ``global_batch / world_size`` examples per step.

    The order is a :class:`DistributedSampler`'s permutation seeded by ``seed``; rank r
    reads positions r, r + W, ... of it, so the W ranks' k-th batches together are the
    k-th ``global_batch`` examples of the permutation, the same global batch that one
    process (W = 1) reads.
    """
    ranks = world_size()
    if global_batch % ranks:
        raise UserError(
            f"dataset.batch_size: {global_batch} (the global batch) must be divisible by the "
            f"{ranks} processes; use a multiple of {ranks}"
        )
    sampler = distributed_sampler(dataset, seed, shuffle=True,
                                  context=DistributedContext(dist.get_rank() if ranks > 1 else 0,
                                                             ranks))
    return torch.utils.data.DataLoader(
        dataset, batch_size=global_batch // ranks, sampler=sampler, num_workers=workers, **options
    )


def join_run(resolved: Any) -> tuple[Any, bool]:
    """Join torchrun's process group for one run; return the run to execute and whether
    this process writes the results (rank 0, or no torchrun).

    Ranks other than 0 run the same experiment in lockstep (every DDP step is collective)
    but into a private temporary output folder, removed at exit, seeded with a copy of
    rank 0's run directory and dense cache entry, so that a resumed run resumes on every
    rank from the same checkpoint. Only rank 0's files are results
    (``SHRINKBENCH_RANK_OUTPUT=DIR`` keeps rank k's files in ``DIR/rank<k>``, for inspection).
    """
    import atexit
    import dataclasses
    import tempfile

    from shrinkbench_core.experiment.naming import run_name

    config = resolved.config
    device = config.device if config.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    context = init_distributed(device)
    if not context.launched:
        return resolved, True
    atexit.register(destroy_distributed)
    connect_board(context.rank, context.world_size)  # where a failing rank says why
    if context.rank != 0:
        output = Path(config.output)
        keep = os.environ.get("SHRINKBENCH_RANK_OUTPUT")  # keep the other ranks' files
        if keep:
            private = Path(keep) / f"rank{context.rank}"
            shutil.rmtree(private, ignore_errors=True)
            private.mkdir(parents=True)
        else:
            private = Path(tempfile.mkdtemp(prefix=f"shrinkbench-rank{context.rank}-"))
            atexit.register(shutil.rmtree, private, True)
        for part in (Path("runs") / run_name(resolved), Path("dense") / config.dense_digest()[:16]):
            if (output / part).is_dir():
                shutil.copytree(output / part, private / part)
        resolved = dataclasses.replace(
            resolved, config=config.model_copy(update={"output": str(private)})
        )
    dist.barrier()  # rank 0 writes nothing before the others copied its previous state
    return resolved, context.rank == 0


def run_path(resolved: Any) -> Path:
    """The run directory of a resolved experiment (as rank 0 writes it)."""
    from shrinkbench_core.experiment.naming import run_name

    return Path(resolved.config.output) / "runs" / run_name(resolved)


def launch_torchrun(
    nproc: int, device: str, run_args: Sequence[str], run_path: Path | None = None
) -> int:
    """``shrinkbench-run --nproc N ...``: run the same command under torchrun; its exit code.

    torchrun's launcher runs in this process, so Ctrl-C or SIGTERM here stops every rank
    the way torchrun does (the run is marked interrupted), and a failed rank ends in a
    short report rather than torchrun's traceback. Rank 0 records and reports a failure;
    when rank 0 itself ended without recording one (killed), this process marks the run
    in ``run_path`` failed and says which ranks ended how.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    check_nproc(nproc, device)
    try:
        run(parse_args(torchrun_command(nproc, run_args)[3:]))
    except ChildFailedError as error:
        return launch_failed(error.failures, run_path)
    except SignalException:  # every rank was stopped with the same signal; rank 0 told
        return 130
    return 0


def launch_failed(failures: Mapping[int, Any], run_path: Path | None) -> int:
    """After torchrun reported failed ranks: the exit code, and the run marked failed when
    rank 0 could not record it (``failures``: rank -> torchrun's ``ProcessFailure``)."""
    from shrinkbench_core.experiment.rank_failures import report
    from shrinkbench_core.experiment.rundir import FAILED, INTERRUPTED, RUNNING, RunDirectory

    stops = {-signal.SIGTERM, -signal.SIGINT}  # how torchrun stops the ranks left

    def ended(failure: Any) -> str:
        if failure.exitcode in stops:
            return f"was stopped with {failure.signal_name()}"
        if failure.exitcode < 0:
            return f"was killed by {failure.signal_name()}"
        return f"exited with code {failure.exitcode}"

    how = "; ".join(f"rank {rank} {ended(failure)}" for rank, failure in sorted(failures.items()))
    killed = [rank for rank, failure in sorted(failures.items())
              if failure.exitcode < 0 and failure.exitcode not in stops]
    own = {failure.exitcode for failure in failures.values() if failure.exitcode not in stops}
    code = 2 if own == {2} else 1  # 2: the ranks stopped on a user's error
    run_dir = RunDirectory(run_path) if run_path is not None else None
    status = run_dir.status().get("status") if run_dir is not None else None
    if status == INTERRUPTED:
        return 130
    if status != RUNNING:  # rank 0 recorded it (failed), or the run never started
        return code
    from shrinkbench_core.experiment.rank_failures import RunOutcome
    from shrinkbench_core.experiment.rundir import RunBusyError

    outcome = RunOutcome(FAILED, f"rank 0 ended without recording the outcome: {how}",
                         killed[0] if killed else None)
    try:
        with run_dir.lock():
            run_dir.set_status(FAILED, error=outcome.error, **outcome.details())
    except (RunBusyError, OSError):
        print(f"error: {outcome.error}", file=sys.stderr)
        return 1
    print(report(outcome, run_dir.path), file=sys.stderr)
    return 1


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """The run's command-line arguments without ``--nproc N`` (and a leading ``run``)."""
    args = list(argv)
    if args and args[0] == "run":
        args = args[1:]
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def scored_once(
    pruner: Callable[[float], dict[str, torch.Tensor]], model: torch.nn.Module,
    device: torch.device | str = "cpu",
) -> Callable[[float], dict[str, torch.Tensor]]:
    """``pruner`` (compression -> masks, applied to ``model``) run by rank 0 alone.

    In a process group of several ranks, rank 0 scores (calibration batches, gradients,
    activations) and prunes; its masks are broadcast and applied on every other rank, so
    every rank prunes identically and scoring happens once. Unchanged outside a group.
    """
    if world_size() == 1:
        return pruner

    def prune(compression: float) -> dict[str, torch.Tensor]:
        from shrinkbench_core.pruning.masks import apply_masks

        masks = pruner(compression) if dist.get_rank() == 0 else None
        masks = broadcast_masks(masks, device=device)
        if dist.get_rank() != 0:
            apply_masks(model, masks)
        return masks

    return prune

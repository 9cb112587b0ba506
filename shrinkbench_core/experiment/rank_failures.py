"""When one rank of a data-parallel run fails: every rank stops, rank 0 says which and why.

A rank that raises records its outcome (error and traceback) in the key-value store of
torchrun's rendezvous, leaves the process group and exits: a peer waiting for it in a
collective gets a connection error when its connections close (when its process ends, if
a ``DistributedDataParallel`` model still holds the group) instead of hanging. Rank 0,
stopped by that error or by torchrun's SIGTERM, reads the other ranks' outcomes and its
own and decides:

* a rank raised: the run is ``failed``, with that rank and its error (``error.txt``
  holds its traceback);
* a rank ended without recording anything (SIGKILL, the out-of-memory killer, a crash):
  ``failed``, naming that rank;
* every rank was interrupted (Ctrl-C or SIGTERM to the whole job): ``interrupted``.

Outside a process group of several ranks a run ends as it always did: ``interrupted`` on
Ctrl-C or SIGTERM, ``failed`` on any other error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist

from shrinkbench_core.errors import UserError

__all__ = ["RankFailedError", "RunOutcome", "connect_board", "run_outcome"]

FAILED, INTERRUPTED = "failed", "interrupted"
PEER_WAIT_S = 10.0  # rank 0, having lost contact, waits this long for the others' outcomes
INTERRUPT_WAIT_S = 0.5  # and this long when it was stopped by a signal
_LOST_CONTACT = ("connection closed by peer", "connection reset by peer", "broken pipe",
                 "gloo", "nccl")
_board: _Board | None = None


class RankFailedError(RuntimeError):
    """A data-parallel run stopped because a rank failed (already told on stderr)."""

    exit_code = 1

    def __init__(self, message: str, rank: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank


@dataclass
class RunOutcome:
    """How a run that did not complete ends: its status and, when failed, why."""

    status: str  # "failed" or "interrupted"
    error: str | None = None  # "Type: message" of the failure ("interrupted" otherwise)
    rank: int | None = None  # the rank that failed, in a data-parallel run
    traceback: str | None = None  # the failing rank's traceback, for error.txt
    exception: BaseException | None = None  # raised instead of the error that ended the run

    def details(self) -> dict[str, Any]:
        """Extra fields of ``status.json``."""
        return {} if self.rank is None else {"failed_rank": self.rank}


class _Board:
    """Each rank's process and outcome, in the store of torchrun's rendezvous.

    A store that cannot be reached (its host gone) reads as empty and takes nothing: the
    outcome is then decided from this rank's view alone, never lost to a second error.
    """

    def __init__(self, store: Any, rank: int, world_size: int) -> None:
        self.store, self.rank, self.world_size = store, rank, world_size

    def put(self, key: str, value: dict[str, Any]) -> None:
        with suppress(RuntimeError, OSError):
            self.store.set(key, json.dumps(value))

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            if not self.store.check([key]):
                return None
            return json.loads(self.store.get(key))
        except (RuntimeError, OSError, ValueError):
            return None


def connect_board(rank: int, world_size: int) -> None:
    """Join the outcome board of this torchrun job (every rank, after the process group).

    Uses a client of the store at ``MASTER_ADDR:MASTER_PORT`` (torchrun's agent hosts it,
    so it outlives the ranks); without one, failures are reported from rank 0's view only.
    """
    global _board
    _board = None
    if world_size < 2:
        return
    try:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                              is_master=False, timeout=timedelta(seconds=30))
        job = (f"shrinkbench/{os.environ.get('TORCHELASTIC_RUN_ID', 'job')}/"
               f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/")
        board = _Board(dist.PrefixStore(job, store), rank, world_size)
        board.put(f"process/{rank}", {"pid": os.getpid(), "host": socket.gethostname()})
    except (KeyError, ValueError, RuntimeError):
        return
    _board = board


def lost_contact(error: BaseException) -> bool:
    """Whether ``error`` says a collective lost its peers (a consequence, not a cause)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(part in text for part in _LOST_CONTACT)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def _single_process(error: BaseException) -> RunOutcome:
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return RunOutcome(INTERRUPTED, "interrupted")
    return RunOutcome(FAILED, _describe(error))


def _ignore_stop_signals() -> None:
    """Let nothing cut the record of the outcome short (torchrun sends SIGTERM to every
    rank once one has failed, and SIGKILL only after 30 s)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:  # not the main thread
            return


def _leave_group() -> None:
    """Leave the process group; its connections close once nothing else holds it (a DDP
    model does until the process ends), and peers blocked on them get an error."""
    if dist.is_available() and dist.is_initialized():
        with suppress(RuntimeError, ValueError):
            dist.destroy_process_group()


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` of this machine has ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"])


def _peer_outcomes(board: _Board, wait: float) -> dict[int, dict[str, Any]]:
    """The other ranks' outcomes: recorded, or ``gone`` for a process that ended without one.

    Stops early once a rank reports an error or every rank is accounted for.
    """
    here = socket.gethostname()
    peers = [rank for rank in range(board.world_size) if rank != board.rank]
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + wait
    while True:
        for rank in [r for r in peers if r not in found]:
            outcome = board.get(f"outcome/{rank}")
            process = board.get(f"process/{rank}") or {}
            if outcome is None and process.get("host") == here and _process_gone(process["pid"]):
                outcome = board.get(f"outcome/{rank}") or {"outcome": "gone", **process}
            if outcome is not None:
                found[rank] = outcome
        if len(found) == len(peers) or any(o["outcome"] == FAILED for o in found.values()):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _failed(error: str, rank: int | None, trace: str | None = None) -> RunOutcome:
    return RunOutcome(FAILED, error, rank, trace, RankFailedError(error, rank))


def _blame(own: BaseException, peers: dict[int, dict[str, Any]]) -> RunOutcome:
    """Rank 0's verdict when it was itself stopped (interrupted, or lost its peers)."""
    for rank, outcome in sorted(peers.items()):
        if outcome["outcome"] == FAILED:
            return _failed(f"rank {rank} failed: {outcome['error']}", rank,
                           outcome.get("traceback"))
    for rank, outcome in sorted(peers.items()):
        if outcome["outcome"] == "gone":
            return _failed(f"rank {rank} (pid {outcome['pid']}) ended without reporting an "
                           "error: it was killed (SIGKILL, the out-of-memory killer) or crashed",
                           rank)
    interrupted = isinstance(own, (KeyboardInterrupt, SystemExit))
    if interrupted or any(outcome["outcome"] == INTERRUPTED for outcome in peers.values()):
        return RunOutcome(INTERRUPTED, "interrupted",
                          exception=None if interrupted else KeyboardInterrupt("interrupted"))
    return _failed(f"lost contact with the other ranks: {_describe(own)}", None,
                   "".join(traceback.format_exception(own)))


def _decide(error: BaseException, board: _Board | None, rank: int) -> RunOutcome:
    interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
    own = _describe(error)
    if not interrupted and not lost_contact(error):  # this rank failed by itself
        trace = "".join(traceback.format_exception(error))
        if board is not None:
            board.put(f"outcome/{rank}", {"outcome": FAILED, "error": own, "traceback": trace})
        _leave_group()
        if isinstance(error, UserError):  # shown as a user's error, as in one process
            return RunOutcome(FAILED, own, rank, trace)
        return _failed(f"rank {rank} failed: {own}", rank, trace)
    if board is not None:
        board.put(f"outcome/{rank}", {"outcome": INTERRUPTED if interrupted else "lost"})
    _leave_group()  # frees peers still waiting in a collective, so that they report
    if rank != 0:  # rank 0 records and tells why the run stopped
        return RunOutcome(INTERRUPTED if interrupted else FAILED, own,
                          exception=None if interrupted else RankFailedError("", rank))
    # A rank that fails records it before it ends, and torchrun signals the others only
    # after that: stopped by a signal, the evidence is already there. Having lost contact,
    # wait for it a little (a peer may still be ending).
    wait = INTERRUPT_WAIT_S if interrupted else PEER_WAIT_S
    return _blame(error, _peer_outcomes(board, wait) if board is not None else {})


@contextmanager
def run_outcome(error: BaseException, run_path: Path) -> Iterator[RunOutcome]:
    """The outcome of a run that ``error`` stopped; record it inside the block.

    In a process group of several ranks, SIGINT and SIGTERM are ignored from here on (the
    process is about to exit), this rank's outcome goes to the other ranks, and rank 0
    decides which rank failed. When the block ends, rank 0 writes the failing rank's
    traceback to ``error.txt`` and prints a short report on stderr; another rank that failed
    by itself prints its error in one line.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield _single_process(error)
        return
    _ignore_stop_signals()
    rank = dist.get_rank()
    outcome = _decide(error, _board, rank)
    yield outcome
    if not isinstance(outcome.exception, RankFailedError) or not str(outcome.exception):
        return
    if rank != 0:
        print(f"{outcome.error.splitlines()[0][:500]} (rank 0 reports it)",
              file=sys.stderr)
        return
    from shrinkbench_core.experiment.atomic import atomic_write_text, read_json

    try:
        marked = (read_json(run_path / "status.json") or {}).get("status") == FAILED
    except (OSError, ValueError):
        marked = False
    if marked and outcome.traceback:  # not when a redo's complete run was put back
        atomic_write_text(run_path / "error.txt", outcome.traceback)
    print(report(outcome, run_path, marked), file=sys.stderr)


def report(outcome: RunOutcome, run_path: Path, marked: bool = True) -> str:
    """The one-screen error of a failed data-parallel run (``marked``: the run directory
    says failed; else a redo failed and the complete run it redid was put back)."""
    lines = [f"error: {(outcome.error or 'failed').splitlines()[0][:500]}"]
    if not marked:
        lines.append(f"the complete run it was redoing is kept in {run_path}")
        return "\n".join(lines)
    lines.append(f"the run is marked failed in {run_path}")
    if outcome.traceback:
        whose = "its" if outcome.rank is None else f"rank {outcome.rank}'s"
        lines[-1] += f" ({whose} traceback: {run_path / 'error.txt'})"
    lines.append("remove the cause, then rerun the same command: it resumes from the last "
                 "completed epoch")
    return "\n".join(lines)

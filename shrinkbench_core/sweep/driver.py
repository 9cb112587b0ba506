"""Run a sweep: plan it, skip what is complete, hand the rest to an executor, summarize.

Completed runs are recognized by their run directory (named by the config
digest) and skipped; incomplete ones are resumed by the runner. Dense
baselines are shared through the runner's locked cache, so no two workers
train the same one; runs are ordered so that concurrent workers start on
different baselines.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from shrinkbench_core.errors import UserError
from shrinkbench_core.sweep.config import (
    PlannedRun,
    SweepFile,
    aligned_columns,
    expand_sweep,
    sharing_order,
)
from shrinkbench_core.sweep.worker import (
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    OUTCOMES,
    SKIPPED,
    SUCCEEDED,
    RunOutcome,
    threads_per_run,
)

EXECUTORS = ("local", "ray")


@dataclass
class SweepSummary:
    """How a sweep went: one outcome per run."""

    output: Path
    outcomes: dict[str, RunOutcome] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Number of runs per outcome (every outcome listed, zeros included)."""
        counter = Counter(outcome.status for outcome in self.outcomes.values())
        return {status: counter.get(status, 0) for status in OUTCOMES}

    def line(self) -> str:
        """``12 runs: 8 succeeded, 1 failed, 3 skipped`` (+ interrupted / not run when any)."""
        counts = self.counts()
        parts = [f"{counts[s]} {s}" for s in (SUCCEEDED, FAILED, SKIPPED)]
        parts += [f"{counts[s]} {s}" for s in (INTERRUPTED, NOT_RUN) if counts[s]]
        return f"{len(self.outcomes)} runs: " + ", ".join(parts)

    @property
    def exit_code(self) -> int:
        """0 when every run is complete, 1 when any failed, 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.counts()[FAILED] else 0


class SweepProgress:
    """A progress bar over runs on a terminal; one line per finished run otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.bar = None
        if not quiet and total and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="run", file=self.stream,
                            dynamic_ncols=True)

    def update(self, run: PlannedRun, outcome: RunOutcome) -> None:
        """Count one finished run; failures are always shown with their error."""
        self.done += 1
        self.counts[outcome.status] += 1
        message = (
            f"[{self.done}/{self.total}] {outcome.status}: {run.name} ({outcome.seconds:.1f} s)"
        )
        if outcome.error:
            message += f"\n    {outcome.error}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(dict(self.counts), refresh=True)
            if outcome.status != SUCCEEDED:
                self.bar.write(message, file=self.stream)
        elif not self.quiet or outcome.status == FAILED:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def run_sweep(
    sweep: SweepFile,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    output: str | Path | None = None,
    registry: Any = None,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> SweepSummary:
    """Run every experiment of ``sweep`` that is not complete yet; return the summary.

    ``executor`` is ``local`` (``workers`` processes, default 1) or ``ray``
    (``address`` of a cluster, or a local Ray instance with ``workers`` CPUs,
    default all cores). ``threads`` is torch's thread count per run (default:
    cores / workers). Raises :class:`ConfigError` before anything runs when
    any experiment is invalid.
    """
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if executor == "ray":
        from shrinkbench_core.sweep.ray_executor import check_reachable, import_ray

        import_ray()  # fail before planning when Ray is missing or the cluster unreachable
        if address:
            check_reachable(address)
    if registry is None:
        from shrinkbench_core.registry import get_registry

        registry = get_registry()
    runs = expand_sweep(sweep, registry, output, check_environment=executor == "local")
    summary = SweepSummary(output=runs[0].path.parent.parent if runs else Path(sweep.output))
    started = time.perf_counter()
    pending = []
    for run in runs:
        if is_complete(run):
            summary.outcomes[run.name] = RunOutcome(run.name, SKIPPED)
        else:
            pending.append(run)
    stream = stream or sys.stderr
    if summary.outcomes and not quiet:
        print(f"skipping {len(summary.outcomes)} completed runs", file=stream)
    progress = SweepProgress(len(pending), stream, quiet)

    def report(run: PlannedRun, outcome: RunOutcome) -> None:
        summary.outcomes[run.name] = outcome
        progress.update(run, outcome)

    try:
        if pending:
            summary.interrupted = _dispatch(
                sharing_order(pending), executor, workers, address, threads, report
            )
    finally:
        progress.close()
        summary.seconds = time.perf_counter() - started
        write_record(summary, sweep, runs)
    return summary


def _dispatch(
    runs: list[PlannedRun],
    executor: str,
    workers: int | None,
    address: str | None,
    threads: int | None,
    report: Any,
) -> bool:
    if executor == "local":
        from shrinkbench_core.sweep.local import run_local

        workers = workers or 1
        threads = threads or threads_per_run(workers)
        return run_local(runs, min(workers, len(runs)), threads, report)
    from shrinkbench_core.sweep.ray_executor import run_ray

    if workers is None and not address:
        from shrinkbench_core.sweep.worker import available_cores

        workers = available_cores()
    threads = threads or (threads_per_run(workers) if workers and not address else 1)
    return run_ray(runs, workers, threads, report, address=address)


def is_complete(run: PlannedRun) -> bool:
    """Whether the run's directory holds a completed run."""
    from shrinkbench_core.experiment.rundir import RunDirectory

    return RunDirectory(run.path).is_complete


def write_record(summary: SweepSummary, sweep: SweepFile, runs: list[PlannedRun]) -> None:
    """``<output>/sweep.json``: the sweep file, the last invocation's outcomes and counts."""
    if not summary.outcomes:
        return
    from shrinkbench_core.experiment.atomic import atomic_write_json

    record = {
        "sweep": sweep.model_dump(mode="json"),
        "summary": {**summary.counts(), "interrupted": summary.interrupted,
                    "seconds": summary.seconds},
        "runs": [
            summary.outcomes.get(run.name, RunOutcome(run.name, NOT_RUN)).to_dict() for run in runs
        ],
    }
    try:
        atomic_write_json(summary.output / "sweep.json", record)
    except OSError as error:
        print(f"warning: cannot write {summary.output / 'sweep.json'}: {error}", file=sys.stderr)


def describe_plan(runs: list[PlannedRun]) -> str:
    """The expanded sweep, one run per line, with each run's current state (``--dry-run``)."""
    baselines = len({run.dense_digest for run in runs})
    complete = sum(is_complete(run) for run in runs)
    root = runs[0].path.parent.parent if runs else "-"
    lines = [
        f"{len(runs)} runs ({complete} complete, {len(runs) - complete} to run), "
        f"{baselines} dense baselines, output {root}"
    ]
    rows = [
        [str(run.index + 1).rjust(len(str(len(runs)))), *run.columns(),
         "[complete]" if is_complete(run) else "[to run]", run.name]
        for run in runs
    ]
    lines += [f"  {line}" for line in aligned_columns(rows)]
    return "\n".join(lines)

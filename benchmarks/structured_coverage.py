"""Structured shrinking of every torchvision classifier, beside Torch-Pruning.

Run: python benchmarks/structured_coverage.py [--models a,b] [--exclude c,d] [--peer]
     [--grouped channels|groups] [--readme] [--memory-gb 6] [--timeout 600] [--json FILE]

Each of ``torchvision.models.list_models(module=torchvision.models)`` (80
classifiers in torchvision 0.29) is built with random weights (all-zero tensors
such as ViT's head or RegNet's last batch-norm scales get random values, so that
the output check is not trivially met), then ShrinkBench analyses its channels,
removes half of every tied group's removal units by lowest L1 norm (the uniform
selection, as Torch-Pruning's ``pruning_ratio=0.5``) and shrinks it, verifying
that the shrunk model's output equals the masked model's. Printed per model:
parameters and multiply-adds (MACs, one image at the size used) before and
after, parameter compression, unsupported patterns left, time. With ``--peer``,
Torch-Pruning 1.6 (``MagnitudePruner``, L1 group importance, ``pruning_ratio=0.5``,
the classifier ignored; it verifies nothing, so its pruned model is only run once to
check that it still runs) runs on the same model in its own process; its parameter
compression (or how it failed) is printed beside ours, with the ratio ours / its and a
summary line: on how many models Torch-Pruning succeeds, and on how many of those ours
reaches at least 90% of its compression. ``--grouped groups`` removes whole groups of
grouped convolutions instead of as many channels from every group.

Every model runs in a child process with an address-space limit (``--memory-gb``)
and a time limit, so one that needs too much memory fails alone and the machine
stays usable. ``--readme`` rewrites the table between the coverage markers of
README.md; with ``--peer``, the comparison between the peer markers instead (the
coverage table is left alone). ``--json FILE`` keeps the raw results and resumes
from them, so a long run can be stopped and continued.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
README_BEGIN = "<!-- structured-coverage:begin -->"
README_END = "<!-- structured-coverage:end -->"
PEER_BEGIN = "<!-- structured-peer-coverage:begin -->"
PEER_END = "<!-- structured-peer-coverage:end -->"

INPUT_SIZES = {"inception_v3": 96}
"""Input side per model where 64 pixels does not work; ViT and MaxViT need 224."""


def input_size(name: str) -> int:
    if name.startswith(("vit_", "maxvit")):
        return 224
    return INPUT_SIZES.get(name, 64)


def build(name: str) -> nn.Module:
    """The torchvision classifier ``name`` with random weights and no all-zero tensor."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() and not param.any():
                fan_in = param[0].numel() if param.dim() > 1 else 1
                values = torch.rand(param.shape, generator=generator) * 0.5 + 0.5
                param.copy_(values / fan_in**0.5)
    return model


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every 5 ms."""

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def bytes(self) -> int:
        return self.peak - self.base


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def macs(model: nn.Module, example: torch.Tensor) -> int:
    from shrinkbench_core.metrics.flops import count_flops

    return count_flops(model, example).macs


def ours(name: str, share: float = 0.5, grouped: str = "channels") -> dict[str, Any]:
    """ShrinkBench on ``name``: analysis, uniform lowest-L1 selection, verified shrink
    (``grouped``: how grouped convolutions lose channels, see ``removal_plan``)."""
    from shrinkbench_core.pruning.channels.selection import lowest_norm_channels
    from shrinkbench_core.pruning.shrink import shrink_model
    from shrinkbench_core.pruning.structured import analyze_channels, mask_channels

    model = build(name)
    example = torch.randn(1, 3, input_size(name), input_size(name))
    macs_before = macs(model, example)
    start = time.perf_counter()
    with PeakMemory() as memory:
        analysis = analyze_channels(model, example)
        chosen = lowest_norm_channels(model, analysis.groups(), share, grouped=grouped)
        masks = mask_channels(model, chosen)
        result = shrink_model(model, masks, example, analysis=analysis)
    seconds = time.perf_counter() - start
    return {
        "params_before": result.params_before,
        "params_after": result.params_after,
        "macs_before": macs_before,
        "macs_after": macs(result.model, example),
        "compression": result.compression,
        "unsupported": len(result.unsupported),
        "unsupported_ops": sorted({u.operation for u in result.unsupported}),
        "max_abs_diff": result.max_abs_diff,
        "verified": result.max_abs_diff is not None,  # shrink_model raises on a mismatch
        "grouped": grouped,
        "seconds": seconds,
        "peak_bytes": memory.bytes,
        "size": input_size(name),
    }


def classifier_of(model: nn.Module) -> nn.Module | None:
    """The last Linear or Conv layer registered (torchvision's classifiers end with it)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers[-1] if layers else None


def peer(name: str, share: float = 0.5) -> dict[str, Any]:
    """Torch-Pruning 1.6 ``MagnitudePruner(pruning_ratio=share)`` on ``name`` (no verification)."""
    import torch_pruning as tp

    model = build(name)
    example = torch.randn(1, 3, input_size(name), input_size(name))
    params_before = sum(p.numel() for p in model.parameters())
    macs_before = macs(model, example)
    start = time.perf_counter()
    with PeakMemory() as memory:
        pruner = tp.pruner.MagnitudePruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=share,
            ignored_layers=[classifier_of(model)],
        )
        pruner.step()
    seconds = time.perf_counter() - start
    try:
        with torch.no_grad():
            model(example)  # a pruned model that no longer runs is a failure
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RuntimeError(f"pruned model fails ({type(error).__name__}: {message})") from error
    params_after = sum(p.numel() for p in model.parameters())
    return {
        "params_before": params_before,
        "params_after": params_after,
        "macs_before": macs_before,
        "macs_after": macs(model, example),
        "compression": params_before / max(params_after, 1),
        "verified": False,  # Torch-Pruning checks nothing
        "seconds": seconds,
        "peak_bytes": memory.bytes,
    }


def _address_space() -> int:
    """This process's virtual memory size in bytes (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(function: Any, name: str, memory_gb: float, queue: Any) -> None:
    # The limit is the whole address space, but never less than what the forked child
    # already has plus 1 GiB: a large parent (a test session) would otherwise leave the
    # child unable to start even a thread (it hangs in Thread.start).
    limit = max(int(memory_gb * 2**30), _address_space() + 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(1)
    try:
        target = globals()[function] if isinstance(function, str) else function
        queue.put(target(name))
    except MemoryError:
        queue.put({"error": f"memory limit ({memory_gb:g} GB address space)"})
    except Exception as error:  # report any failure of either tool as a result
        if "can't allocate memory" in str(error):  # torch's allocator hit the limit
            queue.put({"error": f"memory limit ({memory_gb:g} GB address space)"})
            return
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        queue.put({"error": f"{type(error).__name__}: {message}"[:200]})


def isolated(function: Any, name: str, memory_gb: float, timeout: float) -> dict[str, Any]:
    """Run ``function(name)`` (a function or its name here) in a forked child with a memory
    and a time limit."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child, args=(function, name, memory_gb, queue))
    process.start()
    deadline = time.monotonic() + timeout
    try:
        while True:  # poll, so a child that dies without a result is noticed at once
            try:
                return queue.get(timeout=1.0)
            except Exception:
                if not process.is_alive():
                    try:  # a result sent just before the child ended
                        return queue.get(timeout=0.5)
                    except Exception:
                        return {"error": f"the process died (exit code {process.exitcode})"}
                if time.monotonic() > deadline:
                    return {"error": f"no result within {timeout:g} s"}
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def table(results: dict[str, dict[str, Any]], with_peer: bool) -> str:
    """The markdown table of the README."""
    head = (
        "| model | size | params before | params after | MACs before | MACs after "
        "| compression |"
    )
    rule = "|---|---|---|---|---|---|---|"
    if with_peer:
        head += " Torch-Pruning | ours / TP |"
        rule += "---|---|"
    head += " unsupported left |"
    rule += "---|"
    lines = [head, rule]
    for name, entry in sorted(results.items()):
        mine = entry["ours"]
        if "error" in mine:
            row = f"| {name} | - | - | - | - | - | failed: {mine['error']} |"
        else:
            row = (
                f"| {name} | {mine['size']} | {mine['params_before'] / 1e6:.2f}M "
                f"| {mine['params_after'] / 1e6:.2f}M | {mine['macs_before'] / 1e9:.3f}G "
                f"| {mine['macs_after'] / 1e9:.3f}G | {mine['compression']:.2f}x |"
            )
        if with_peer:
            theirs = entry.get("peer", {})
            if "compression" in theirs and "compression" in mine:
                ratio = mine["compression"] / theirs["compression"]
                row += f" {theirs['compression']:.2f}x | {ratio:.0%} |"
            else:
                row += f" {theirs.get('error', '-')[:60]} | - |"
        unsupported = mine.get("unsupported", "-")
        if isinstance(unsupported, int) and unsupported:
            unsupported = f"{unsupported} ({', '.join(mine.get('unsupported_ops', []))})"
        row += f" {unsupported} |"
        lines.append(row)
    return "\n".join(lines)


def summary(results: dict[str, dict[str, Any]]) -> list[str]:
    done = [r["ours"] for r in results.values() if "compression" in r["ours"]]
    reached = sum(r["compression"] >= 1.5 for r in done)
    lines = [f"{reached}/{len(results)} models reach 1.5x parameter compression "
             f"({len(done)} shrunk and verified)"]  # fmt: skip
    paired = [
        (name, r["ours"]["compression"] / r["peer"]["compression"])
        for name, r in results.items()
        if "compression" in r["ours"] and "compression" in r.get("peer", {})
    ]
    peered = [r for r in results.values() if "peer" in r]
    if peered:
        succeeded = [r for r in peered if "compression" in r["peer"]]
        below = [f"{name} {ratio:.0%}" for name, ratio in paired if ratio < 0.9]
        lines.append(
            f"Torch-Pruning succeeded on {len(succeeded)}/{len(peered)}; ours >= 90% of its "
            f"parameter compression on {len(paired) - len(below)}/{len(succeeded)}"
            + (f" (below: {', '.join(below)})" if below else "")
            + (
                f"; ours / TP {min(r for _, r in paired):.0%}-{max(r for _, r in paired):.0%}"
                if paired
                else ""
            )
        )
    return lines


def peer_table(results: dict[str, dict[str, Any]]) -> str:
    """Compact comparison: ours (uniform) and Torch-Pruning's parameter compression."""
    lines = [
        "| model | ours (uniform) | Torch-Pruning | ours / TP | ours verified |",
        "|---|---|---|---|---|",
    ]
    for name, entry in sorted(results.items()):
        if "peer" not in entry:
            continue
        mine, theirs = entry["ours"], entry["peer"]
        ours_cell = f"{mine['compression']:.2f}x" if "compression" in mine else mine["error"]
        if "compression" in theirs:
            theirs_cell = f"{theirs['compression']:.2f}x"
        else:
            theirs_cell = "failed: " + theirs.get("error", "-")[:70].replace("|", "/")
        ratio = (
            f"{mine['compression'] / theirs['compression']:.0%}"
            if "compression" in mine and "compression" in theirs
            else "-"
        )
        verified = "yes" if mine.get("verified") else "no"
        lines.append(f"| {name} | {ours_cell} | {theirs_cell} | {ratio} | {verified} |")
    return "\n".join(lines)


def write_readme(text: str, begin_marker: str = README_BEGIN, end_marker: str = README_END) -> None:
    path = ROOT / "README.md"
    content = path.read_text()
    begin, end = content.index(begin_marker), content.index(end_marker)
    path.write_text(content[: begin + len(begin_marker)] + "\n" + text + "\n" + content[end:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: all classifiers)")
    parser.add_argument("--exclude", default="", help="comma-separated names to leave out")
    parser.add_argument("--peer", action="store_true", help="also run Torch-Pruning")
    parser.add_argument("--grouped", choices=("channels", "groups"), default="channels",
                        help="grouped convolutions lose as many channels per group, or whole "
                        "groups")
    parser.add_argument("--memory-gb", type=float, default=6.0,
                        help="address-space limit of each model's child process, in GB")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for each model's result")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--readme", action="store_true",
                        help="rewrite the README table (with --peer: the comparison)")
    args = parser.parse_args(argv)
    names = (
        args.models.split(",")
        if args.models
        else torchvision.models.list_models(module=torchvision.models)
    )
    known = set(torchvision.models.list_models(module=torchvision.models))
    unknown = [n for n in [*names, *filter(None, args.exclude.split(","))] if n not in known]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; see "
                     "torchvision.models.list_models(module=torchvision.models)")
    names = [n for n in names if n not in args.exclude.split(",")]
    run_ours = functools.partial(ours, grouped=args.grouped)
    # Imported once here, so every forked child runs the same code (and starts faster).
    import shrinkbench_core.metrics.flops  # noqa: F401
    import shrinkbench_core.pruning.channels.selection  # noqa: F401
    import shrinkbench_core.pruning.shrink  # noqa: F401
    if args.peer:
        import torch_pruning  # noqa: F401
    results: dict[str, dict[str, Any]] = {}
    if args.json and args.json.exists():
        results = json.loads(args.json.read_text())  # resume
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    iterator = tqdm(names, desc="models", file=sys.stderr) if tqdm else names
    for name in iterator:
        done = results.get(name, {})
        if (
            done
            and done["ours"].get("grouped", "channels") == args.grouped
            and (not args.peer or "peer" in done)
        ):
            continue
        entry = {"ours": isolated(run_ours, name, args.memory_gb, args.timeout)}
        if args.peer:
            entry["peer"] = isolated("peer", name, args.memory_gb, args.timeout)
        results[name] = entry
        mine = entry["ours"]
        note = mine.get("error") or f"{mine['compression']:.2f}x in {mine['seconds']:.1f}s"
        if args.peer:
            theirs = entry["peer"]
            note += " | TP " + (theirs.get("error") or f"{theirs['compression']:.2f}x")
        print(f"{name}: {note}", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    text = table(results, args.peer) + "\n\n" + "\n".join(summary(results))
    print(text)
    if args.readme and args.peer:
        compact = "\n".join(summary(results)[1:]) + (
            "\n\n<details><summary>per model</summary>\n\n" + peer_table(results)
            + "\n\n</details>"
        )  # fmt: skip
        write_readme(compact, PEER_BEGIN, PEER_END)
    elif args.readme:
        write_readme(text)


if __name__ == "__main__":
    main()

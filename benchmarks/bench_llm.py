"""LLM-scale pruning: one LLaMA-shaped block, and global selection on a 2^31-weight bf16 model.

1) SparseGPT and Wanda (shrinkbench-llm) on one LLaMA-7B-shaped decoder block (width 4096,
   MLP 11008, random weights), bf16 and fp32: time and peak extra memory (RSS growth over the
   block's weights and the token ids), each in a fresh process, calibrated on ``--samples``
   windows of ``--seqlen`` tokens (default 8 x 512 = 4096 tokens; the papers use 128 x 2048).
   Beside it, what the design holds on top of the weights: the block's calibration inputs
   (tokens x 4096 in the model's dtype), the masks (1 byte per weight) and, for SparseGPT,
   the block's seven fp32 Hessians. The SparseGPT solve, not the calibration, takes most of
   the time (measured once with 2 x 128 tokens on the shared 2-core VM, partly loaded: 269 s
   bf16, 609 s fp32, about 15 minutes for part 1).
2) Global magnitude masks (ShrinkBench's GlobalMagWeight on the core's streamed selection) on a
   stack of bf16 4096x4096 linear layers with 2^31 weights (``--log2-weights``), beside
   ``torch.nn.utils.prune.global_unstructured``. Each runs in a child process under an address
   space limit (``resource.setrlimit(RLIMIT_AS)``, ``--extra-gib``) so that the peer cannot
   take the machine down; how it failed is reported.

    python benchmarks/bench_llm.py                      # both parts, full size
    python benchmarks/bench_llm.py --log2-weights 28    # a smaller global-selection model
    python benchmarks/bench_llm.py --skip-block         # only part 2
    python benchmarks/bench_llm.py --skip-selection --samples 32 --seqlen 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

WIDTH, MLP = 4096, 11008


def _kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _kib("VmRSS:")


class LlamaShapedBlock(nn.Module):
    """The linear layers of a LLaMA-7B decoder block, with a forward like the real one."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        linear = {"bias": False, "dtype": dtype}
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH, **linear) for _ in range(4))
        self.gate, self.up = nn.Linear(WIDTH, MLP, **linear), nn.Linear(WIDTH, MLP, **linear)
        self.down = nn.Linear(MLP, WIDTH, **linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        shape = (batch, steps, 32, WIDTH // 32)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        attn = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attn.transpose(1, 2).reshape(batch, steps, WIDTH))
        return x + self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class OneBlockModel(nn.Module):
    """Embeddings -> one LLaMA-shaped block -> LM head (what the LM strategies expect)."""

    def __init__(self, dtype: torch.dtype, vocab: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, WIDTH, dtype=dtype)
        self.blocks = nn.ModuleList([LlamaShapedBlock(dtype)])
        self.lm_head = nn.Linear(WIDTH, vocab, bias=False, dtype=dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(x)


def block_child(method: str, dtype_name: str, samples: int, seqlen: int) -> None:
    from shrinkbench_llm.strategies import SparseGPT, WandaLM

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    torch.manual_seed(0)
    model = OneBlockModel(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    ids = torch.randint(0, 256, (samples, seqlen))
    cls = SparseGPT if method == "SparseGPT" else WandaLM
    names = [n for n, _ in model.named_parameters() if n.startswith("blocks.")]
    weights = sum(p.numel() for n, p in model.named_parameters() if n in names)
    base = _reset_peak()
    start = time.perf_counter()
    cls(model, 1.5, params={"sparsity": 0.5}, calibration=[(ids, ids)], prunable=names).apply()
    seconds = time.perf_counter() - start
    extra = (_kib("VmHWM:") - base) * 1024
    print(json.dumps({"seconds": seconds, "extra_bytes": extra, "weights": weights}))


def selection_child(method: str, log2_weights: int, extra_gib: float) -> None:
    from shrinkbench_strategies.magnitude import GlobalMagWeight
    from torch.nn.utils import prune

    layers = max(1, (1 << log2_weights) // (WIDTH * WIDTH))
    torch.manual_seed(0)
    model = nn.Sequential(
        *(nn.Linear(WIDTH, WIDTH, bias=False, dtype=torch.bfloat16) for _ in range(layers))
    )
    with torch.no_grad():
        for layer in model:
            layer.weight.normal_()
    weights = layers * WIDTH * WIDTH
    # the limit: what the process maps now (libraries, model) plus ``extra_gib``
    limit = _kib("VmSize:") * 1024 + int(extra_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        base = _reset_peak()
        start = time.perf_counter()
        if method == "ours":
            names = [f"{i}.weight" for i in range(layers)]
            GlobalMagWeight(model, 2.0, prunable=names).apply()
        else:
            pairs = [(layer, "weight") for layer in model]
            prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=0.5)
        seconds = time.perf_counter() - start
        extra = (_kib("VmHWM:") - base) * 1024
        zeros = sum(int((layer.weight == 0).sum()) for layer in model)
        print(json.dumps({"seconds": seconds, "extra_bytes": extra, "weights": weights,
                          "zeros": zeros}))  # fmt: skip
    except (MemoryError, RuntimeError) as error:
        text = str(error).strip()
        reason = text[text.find("you tried") :] if "you tried" in text else text
        print(json.dumps({"failed": f"{type(error).__name__}: {reason.splitlines()[0][:120]}"}))


def _child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        reason = f"exit code {out.returncode}"
        if out.returncode < 0:
            reason = f"killed by signal {-out.returncode}"
        tail = out.stderr.strip().splitlines()[-1:] or [""]
        return {"failed": f"{reason}: {tail[0][:160]}"}
    return json.loads(lines[-1])


def held_by_design(method: str, dtype: str, tokens: int) -> int:
    """Bytes the design holds beside the weights: block inputs, masks, SparseGPT's Hessians."""
    inputs = tokens * WIDTH * (2 if dtype == "bf16" else 4)
    masks = 4 * WIDTH * WIDTH + 3 * WIDTH * MLP  # bool, one byte per weight
    hessians = 4 * (6 * WIDTH * WIDTH + MLP * MLP) if method == "SparseGPT" else 0
    return inputs + masks + hessians


def block_part(samples: int, seqlen: int) -> None:
    print(
        f"\n1) One LLaMA-7B-shaped block (q/k/v/o {WIDTH}x{WIDTH}, gate/up/down {MLP}), 50% "
        f"unstructured, fresh process each, torch threads {torch.get_num_threads()}\n"
        f"   calibration: {samples} windows x {seqlen} tokens = {samples * seqlen} tokens "
        f"(--samples, --seqlen)"
    )
    print(f"{'':20}{'time (s)':>10}{'peak extra (MiB)':>18}{'extra / block weights':>24}"
          f"{'inputs+masks+Hessians (MiB)':>30}")  # fmt: skip
    for dtype in ("bf16", "fp32"):
        for method in ("SparseGPT", "WandaLM"):
            r = _child("block", method, dtype, str(samples), str(seqlen))
            label = f"{method} {dtype}"
            if "failed" in r:
                print(f"{label:20}failed: {r['failed']}")
                continue
            block_bytes = r["weights"] * (2 if dtype == "bf16" else 4)
            design = held_by_design(method, dtype, samples * seqlen)
            print(
                f"{label:20}{r['seconds']:>10.1f}{r['extra_bytes'] / 2**20:>18.0f}"
                f"{r['extra_bytes'] / block_bytes:>23.2f}x{design / 2**20:>30.0f}"
            )
    print("   inputs+masks+Hessians: computed, what the design holds beside the weights (working "
          "buffers come on top); peak extra: measured (RSS high-water mark)")  # fmt: skip


def selection_part(log2_weights: int, extra_gib: float) -> None:
    print(
        f"\n2) Global magnitude masks, 50% of a bf16 stack of {WIDTH}x{WIDTH} linear layers "
        f"(2^{log2_weights} weights, {2**log2_weights * 2 / 2**30:.1f} GiB), each in a child "
        f"process allowed {extra_gib:g} GiB of address space beyond the model and libraries"
    )
    results = {m: _child("select", m, str(log2_weights), str(extra_gib)) for m in ("ours", "torch")}
    print(f"{'':34}{'time (s)':>10}{'peak extra (B/param)':>22}")
    for method, label in (("ours", "ShrinkBench GlobalMagWeight"),
                          ("torch", "torch prune.global_unstructured")):  # fmt: skip
        r = results[method]
        if "failed" in r:
            print(f"{label:34}failed: {r['failed']}")
        else:
            exact = (
                " (exactly 50%)" if r["zeros"] == r["weights"] // 2 else f" ({r['zeros']} zeros)"
            )
            print(f"{label:34}{r['seconds']:>10.1f}{r['extra_bytes'] / r['weights']:>22.2f}{exact}")
    if "failed" not in results["ours"] and "failed" not in results["torch"]:
        ours, peer = results["ours"], results["torch"]
        print(
            f"ratio: {peer['seconds'] / ours['seconds']:.1f}x faster, "
            f"{peer['extra_bytes'] / max(ours['extra_bytes'], 1):.1f}x less memory"
        )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=_positive, default=8,
                        help="calibration windows (part 1; default 8)")
    parser.add_argument("--seqlen", type=_positive, default=512,
                        help="tokens per calibration window (part 1; default 512)")
    parser.add_argument("--log2-weights", type=int, default=31, help="model size (part 2)")
    parser.add_argument(
        "--extra-gib", type=float, default=None,
        help="address space each part-2 child may add (default: 2 bytes per weight + 0.5 GiB)",
    )  # fmt: skip
    parser.add_argument("--skip-block", action="store_true", help="skip part 1")
    parser.add_argument("--skip-selection", action="store_true", help="skip part 2")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "block":
            block_child(rest[0], rest[1], int(rest[2]), int(rest[3]))
        else:
            selection_child(rest[0], int(rest[1]), float(rest[2]))
        return
    torch.set_num_threads(torch.get_num_threads())
    if not args.skip_block:
        block_part(args.samples, args.seqlen)
    if not args.skip_selection:
        extra = args.extra_gib or round(2**args.log2_weights * 2 / 2**30 + 0.5, 2)
        selection_part(args.log2_weights, extra)


if __name__ == "__main__":
    main()

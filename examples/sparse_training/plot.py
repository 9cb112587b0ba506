"""Bar chart of the sparse-training findings on digits: mean +- std over seeds.

    for k in rigl set static magnitude; do
        shrinkbench sweep examples/sparse_training/$k.toml --output results/sparse-training-digits
    done
    python examples/sparse_training/plot.py results/sparse-training-digits \
        docs/sparse_training_digits.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shrinkbench_core.results import load_results  # noqa: E402

ORDER = [("rigl", "RigL"), ("set", "SET"), ("static", "static"),
         ("oneshot", "GlobalMagWeight\n(prune after training)")]


def main(folder: str, out: str) -> None:
    table = load_results(folder)
    table["kind"] = table["schedule"].str.split("(").str[0].str.strip()
    rows = []
    for kind, label in ORDER:
        runs = table[table["kind"] == kind]["finetuned_top1"]
        rows.append((label, runs.mean(), runs.std(ddof=1), len(runs)))
        values = ", ".join(f"{100 * v:.2f}" for v in runs)
        print(f"{label.splitlines()[0]:<16} {100 * runs.mean():6.2f} +- "
              f"{100 * runs.std(ddof=1):.2f}  (n={len(runs)}: {values})")
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.bar([r[0] for r in rows], [100 * r[1] for r in rows],
             yerr=[100 * r[2] for r in rows], capsize=4, color="#4C72B0")
    low = min(100 * (r[1] - r[2]) for r in rows)
    axis.set_ylim(max(0, low - 5), 100)
    axis.set_ylabel("test top-1 after training (%)")
    axis.set_title("digits / MLP, 10x compression, 20 epochs, mean ± std over 3 seeds",
                   fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

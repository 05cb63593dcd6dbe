"""Plot bench/routing/run.py's JSON: one PNG per figure, rate on the x axis.

Runs in the benchmark's own matplotlib venv (~/.cache/kubeinfer/bench/plot-venv):
    plot.py results.json docs/routing
"""

import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FIGURES = [("tok_s_load", "output tokens/s under load"), ("ttft_p90", "TTFT p90 (s)"),
           ("hit_rate", "prefix-cache hit rate")]


def main() -> None:
    with open(sys.argv[1]) as f:
        rows = [r for r in json.load(f) if r["kind"] == "shared"]
    prefix = sys.argv[2]
    series: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        series[r["target"]].append(r)
    fig, axes = plt.subplots(1, len(FIGURES), figsize=(15, 4.2))
    for ax, (key, label) in zip(axes, FIGURES, strict=True):
        for target, unsorted in sorted(series.items()):
            pts = sorted(unsorted, key=lambda p: p["rate"])
            ax.plot([p["rate"] for p in pts], [p.get(key) for p in pts], marker="o",
                    label=target, linestyle="--" if target.startswith("vllm-router") else "-")
        ax.set_xlabel("request rate (req/s)")
        ax.set_title(label)
        if key == "ttft_p90":
            ax.set_yscale("log")  # one policy's queue would flatten the others
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Shared-prefix chat workload, 8 simulated workers with a KV-cache model")
    fig.tight_layout()
    fig.savefig(f"{prefix}-quality.png", dpi=90)


if __name__ == "__main__":
    main()

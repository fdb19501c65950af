"""The Pareto plot of a pruning study's result (benchmarks/studies/pruning.py): p50 latency per call (x, ms,
with the paired 95 % interval of each pruned model scaled by the unpruned p50) against mean top-1 (y, %),
one point per model, the Pareto front (no other model both faster and more accurate) joined by a line.

    python -m benchmarks.studies.pruning_plot benchmarks/results/pruning.json benchmarks/results/pruning_pareto.svg

matplotlib (Agg) writes it; SVG with fixed metadata, so the same result gives the same file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names of the points (latency, accuracy) no other point beats on both (faster or as fast AND more or
    as accurate, better on one), in order of latency."""
    front = [n for n, (lat, acc) in points.items()
             if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for m, (l2, a2) in points.items() if m != n)]
    return sorted(front, key=lambda n: points[n][0])


def plot(result: dict[str, Any], out: str | Path) -> list[str]:
    """Write the plot to `out`; returns the Pareto front's model names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    base = models["unpruned"]["p50_ms"]
    points = {n: (m["p50_ms"], 100 * m["top1_mean"]) for n, m in models.items()}
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (lat, acc) in points.items():
        ci = models[name].get("p50_vs_unpruned_ci95")
        xerr = [[lat - ci[0] * base], [ci[1] * base - lat]] if ci else None
        ax.errorbar([lat], [acc], xerr=xerr, fmt="o", color="C0" if name in front else "C7", capsize=3)
        ax.annotate(name, (lat, acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "-", color="C0", alpha=0.5, label="Pareto front")
    ax.set_xlabel("p50 latency per call (ms), ONNX Runtime CPU; bars: 95 % interval")
    ax.set_ylabel("mean top-1 (%)")
    load = "under load" if str(result["load"]["label"]).startswith("under load") else "quiet"
    ax.set_title(f"pruning, demo {result.get('plan', '?')} plan, {len(result.get('runs') or {}) or '?'} models, "
                 f"{result.get('seeds', '?')} seed(s), timed {load}", fontsize=9)
    ax.margins(x=0.15, y=0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(out), format="svg", metadata={"Date": None})
    plt.close(fig)
    return front


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.studies.pruning_plot RESULT.json OUT.svg", file=sys.stderr)
        return 2
    front = plot(json.loads(Path(args[0]).read_text()), args[1])
    print(f"{args[1]}: Pareto front {', '.join(front)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Pareto plot of a pruning study's result (benchmarks/studies/pruning.py): p50 latency per call (x, ms,
with the paired 95 % interval of each pruned model scaled by the unpruned p50) against mean top-1 (y, %),
one point per model, the Pareto front (no other model both faster and more accurate) joined by a line.

    python -m benchmarks.studies.pruning_plot benchmarks/results/pruning.json benchmarks/results/pruning_pareto.svg

Several results (one per fine-tuning setting) in one plot, latency as a share of each run's own unpruned p50 (the
absolute milliseconds move between runs; the paired ratio does not), one marker per setting:

    python -m benchmarks.studies.pruning_plot OUT.svg "LABEL=RESULT.json" "LABEL=RESULT.json" ...

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


def _pyplot() -> Any:
    """matplotlib's pyplot on Agg, with SVG ids salted by a constant: the same result gives the same file."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "erudite-edge"
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, ax: Any, out: str | Path) -> None:
    """The grid, then the SVG without a date (with _pyplot's salt: the same figure gives the same file)."""
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(out), format="svg", metadata={"Date": None})
    plt.close(fig)


def plot(result: dict[str, Any], out: str | Path) -> list[str]:
    """Write the plot to `out`; returns the Pareto front's model names."""
    plt = _pyplot()

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
    ax.legend(fontsize=8)
    _save(plt, fig, ax, out)
    return front


def plot_many(results: dict[str, dict[str, Any]], out: str | Path) -> list[str]:
    """Every pruned model of every result (label: result) at (p50 x its run's unpruned, with the paired 95 %
    interval; mean top-1), the unpruned model at 1.0, the unpruned model trained as long (--as-long) as a dashed
    line where a result has it; the Pareto front over all of them. Write to `out`; returns the front as
    "LABEL: MODEL" names."""
    plt = _pyplot()

    points: dict[str, tuple[float, float]] = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vP*X"
    control_drawn = False
    for i, (label, result) in enumerate(results.items()):
        xs, ys, errs = [], [], []
        for name, m in result["models"].items():
            if name == "unpruned":
                points["unpruned"] = (1.0, 100 * m["top1_mean"])
                continue
            ci = m.get("p50_vs_unpruned_ci95")
            x, y = m["p50_vs_unpruned"], 100 * m["top1_mean"]
            points[f"{label}: {name}"] = (x, y)
            xs.append(x)
            ys.append(y)
            errs.append((x - ci[0], ci[1] - x) if ci else (0.0, 0.0))
            ax.annotate(name.removeprefix("pruned "), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.errorbar(xs, ys, xerr=[[e[0] for e in errs], [e[1] for e in errs]], fmt=markers[i % len(markers)],
                    color=f"C{i}", capsize=3, label=label)
        control = result.get("as_long")
        if control and not control_drawn:  # the first result's control (each result's is the same runs)
            ax.axhline(100 * control["top1_mean"], color="C7", ls="--", lw=1, label="unpruned, trained as long")
            control_drawn = True
    if "unpruned" in points:
        ax.plot([1.0], [points["unpruned"][1]], "k*", markersize=10, label="unpruned")
    front = pareto_front(points)
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "-", color="k", alpha=0.3, label="Pareto front")
    ax.axvline(0.6, color="C3", ls=":", lw=1, label="latency goal 0.6x")
    ax.set_xlabel("p50 latency, x the unpruned model's (ONNX Runtime CPU; bars: 95 % interval)")
    ax.set_ylabel("mean top-1 (%), mean over seeds")
    ax.set_title("pruning on the demo mixture: fine-tuning settings", fontsize=9)
    ax.margins(x=0.1, y=0.1)
    ax.legend(fontsize=7, loc="lower right")
    _save(plt, fig, ax, out)
    return front


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 2 and args[0].endswith(".svg") and all("=" in a for a in args[1:]):
        results = {label: json.loads(Path(path).read_text()) for label, path in (a.split("=", 1) for a in args[1:])}
        front = plot_many(results, args[0])
        print(f"{args[0]}: Pareto front {'; '.join(front)}", file=sys.stderr)
        return 0
    if len(args) != 2:
        print("usage: python -m benchmarks.studies.pruning_plot RESULT.json OUT.svg\n"
              "       python -m benchmarks.studies.pruning_plot OUT.svg LABEL=RESULT.json [LABEL=RESULT.json ...]", file=sys.stderr)
        return 2
    front = plot(json.loads(Path(args[0]).read_text()), args[1])
    print(f"{args[1]}: Pareto front {', '.join(front)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

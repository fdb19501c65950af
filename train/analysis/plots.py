"""The analysis figures (matplotlib, Agg backend, each PNG written whole or not at all):

figure2_per_class_change.png  Figure 2 at the class level: per data set, each class's accuracy change
                              against the reference, sorted, gains green and losses red
figure3_tsne.png              Figure 3: t-SNE of the test features of each data set, coloured by class,
                              one row per run compared (the analysed run, the reference)
gate_usage.png                the mean gate weight each data set's test images give each head (N x N)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from erudite_edge.core.fileio import atomic_path
from train.analysis.cluster_metrics import subsample

DEFAULT_TSNE_SAMPLES = 2000


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_size_inches()[1]))  # room for the suptitle
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def tsne_embed(x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of the rows of x (scikit-learn, PCA init, fixed seed; perplexity 30 or less for few rows)."""
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 3:
        return np.zeros((n, 2))
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(np.asarray(x, np.float64))


def tsne_panels(
    runs: Sequence[tuple[str, Any]], datasets: Sequence[tuple[int, str]], *, max_samples: int, seed: int
) -> list[dict[str, Any]]:
    """For each (run title, FeatureSet) and each (data set index, name): the 2-D embedding of that data set's
    features (at most max_samples rows, fixed seed) with their class labels."""
    panels = []
    for title, fs in runs:
        for i, name in datasets:
            rows = fs.rows(i)
            rows = rows[subsample(len(rows), max_samples, seed)]
            panels.append({"run": title, "dataset": name, "xy": tsne_embed(fs.fused[rows], seed=seed),
                           "labels": fs.joint[rows], "images": int(len(rows))})
    return panels


def plot_tsne(panels: list[dict[str, Any]], path: Path, what: str = "test features before the joint classifier") -> Path:
    plt = _pyplot()
    runs = list(dict.fromkeys(p["run"] for p in panels))
    by_run = [[p for p in panels if p["run"] == r] for r in runs]
    cols = max(len(row) for row in by_run)
    fig, axes = plt.subplots(len(runs), cols, figsize=(4.2 * cols, 4.0 * len(runs)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, p in ((axes[i, j], p) for i, row in enumerate(by_run) for j, p in enumerate(row)):
        ax.set_axis_on()
        labels = p["labels"]
        classes = np.unique(labels)
        colour = np.searchsorted(classes, labels)
        ax.scatter(p["xy"][:, 0], p["xy"][:, 1], c=colour, cmap="tab20" if len(classes) <= 20 else "hsv", s=8, alpha=0.8)
        ax.set_title(f"{p['run']} -> {p['dataset']} ({p['images']} images, {len(classes)} classes)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"t-SNE of the {what} (colour: class)", fontsize=10)
    return _save(fig, path)


def plot_per_class_change(transfer: dict[str, Any], path: Path, run_title: str, reference_title: str) -> Path:
    plt = _pyplot()
    names = list(transfer)
    width = min(12.0, 4.0 + 0.05 * max(t["classes"] for t in transfer.values()))
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        t = transfer[name]
        deltas = 100.0 * np.array(list(t["changes"].values()))
        ax.bar(np.arange(len(deltas)), deltas, color=["tab:green" if d >= 0 else "tab:red" for d in deltas], width=0.85)
        ax.scatter(np.arange(len(deltas)), deltas, s=6, color="black", zorder=3)  # unchanged classes show as dots on 0
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{name}: Positive {t['positive']}, Negative {t['negative']}, mean {100 * t['mean_change']:+.2f}", fontsize=9)
        ax.set_xlabel("classes, sorted by change")
        ax.set_ylabel("accuracy change (points)")
        ax.set_xticks([])
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"per-class test accuracy: {run_title} minus {reference_title}", fontsize=10)
    return _save(fig, path)


def plot_gate_usage(matrix: np.ndarray, rows: Sequence[str], heads: Sequence[str], path: Path) -> Path:
    """matrix[i, n]: mean gate weight the test images of data set rows[i] give head n."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(heads) + 2.5, 1.0 * len(rows) + 1.8))
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1e-6, float(matrix.max())))
    for i in range(matrix.shape[0]):
        for n in range(matrix.shape[1]):
            ax.text(n, i, f"{matrix[i, n]:.2f}", ha="center", va="center", color="white" if matrix[i, n] < 0.6 * matrix.max() else "black", fontsize=9)
    ax.set_xticks(range(len(heads)), [f"head {h}" for h in heads], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r} images" for r in rows])
    ax.set_title("mean gate weight per head", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)

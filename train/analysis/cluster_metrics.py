"""Table 1's within-data-set cluster quality of the test features, by fine class (scikit-learn):
SC Silhouette (higher better), CHI Calinski-Harabasz (higher better), DBI Davies-Bouldin (lower better).

Silhouette is O(n^2) in memory and time: above `max_samples` rows all three are computed on one
uniform random subsample drawn with a fixed seed, and the report says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

DEFAULT_MAX_SAMPLES = 5000


def subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """Indices of at most `limit` of n rows, sorted; the same for the same (n, limit, seed)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def cluster_quality(x: np.ndarray, y: np.ndarray, *, max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """SC, CHI, DBI of features `x` (n, d) clustered by labels `y` (n,). Needs 2 <= classes <= n - 1;
    otherwise the scores are None and "note" says why."""
    idx = subsample(len(x), max_samples, seed)
    xs, ys = np.asarray(x, dtype=np.float64)[idx], np.asarray(y)[idx]
    k = len(np.unique(ys))
    out: dict[str, Any] = {"images": int(len(x)), "used": int(len(idx)), "classes": int(k),
                           "subsampled": bool(len(idx) < len(x)), "seed": seed}
    if k < 2 or k > len(xs) - 1:
        out.update(sc=None, chi=None, dbi=None, note=f"{k} classes in {len(xs)} images: the scores need 2 to n-1 classes")
        return out
    out.update(sc=float(silhouette_score(xs, ys, metric="euclidean")), chi=float(calinski_harabasz_score(xs, ys)),
               dbi=float(davies_bouldin_score(xs, ys)))
    return out

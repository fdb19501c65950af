"""Maximum mean discrepancy between two data sets' features (Table 1's MMD, Gretton et al. 2012).

MMD^2_u with an RBF kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), sigma by the median heuristic (the
median pairwise distance of the pooled sample), unbiased estimator (diagonals left out), and a
permutation test of "same distribution": the labels of the pooled rows are shuffled `permutations`
times with a fixed seed, p = (1 + #{MMD^2_perm >= MMD^2}) / (1 + permutations).

Hand-written on numpy: scikit-learn has no MMD and no two-sample test; the maintained packages that do
(e.g. torch-two-sample) are unmaintained or pull in more than the formula needs. The kernel matrix is
computed once; 64 permutations at a time are one matrix product with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from train.analysis.cluster_metrics import subsample

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_PERMUTATIONS = 200


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aa, bb = (a * a).sum(1)[:, None], (b * b).sum(1)[None, :]
    return np.maximum(aa + bb - 2.0 * a @ b.T, 0.0)


def _median_sigma(d2: np.ndarray) -> float:
    iu = np.triu_indices(len(d2), k=1)
    med = float(np.sqrt(np.median(d2[iu]))) if len(iu[0]) else 0.0
    return med if med > 0 else 1.0


def median_bandwidth(z: np.ndarray) -> float:
    """sigma = median of the pairwise Euclidean distances between distinct rows of z (1.0 if all equal)."""
    return _median_sigma(sq_distances(z, z))


def _mmd2_batch(k: np.ndarray, in_x: np.ndarray) -> np.ndarray:
    """MMD^2_u for each column of the 0/1 matrix in_x (n, P) marking the rows of x (the rest are y).
    One GEMM for all P splits: sum K_xx = a^T K a with a the indicator, diagonals taken out."""
    a = in_x.astype(np.float64)
    b = 1.0 - a
    m, n = a.sum(0), b.sum(0)
    ka = k @ a
    diag = np.diag(k)
    sxx = ((a * ka).sum(0) - diag @ a) / (m * (m - 1))
    syy = ((b * (k @ b)).sum(0) - diag @ b) / (n * (n - 1))
    sxy = (b * ka).sum(0) / (m * n)
    return sxx + syy - 2.0 * sxy


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """MMD^2_u between samples x (m, d) and y (n, d), m, n >= 2, RBF kernel of width sigma."""
    z = np.concatenate([x, y]).astype(np.float64)
    k = np.exp(-sq_distances(z, z) / (2.0 * sigma * sigma))
    in_x = np.zeros((len(z), 1))
    in_x[: len(x)] = 1
    return float(_mmd2_batch(k, in_x)[0])


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """MMD^2_u of x against y with the median-heuristic bandwidth and its permutation p-value.
    Each side is subsampled to `max_samples` rows (fixed seed) first; both need 2 rows at least."""
    if len(x) < 2 or len(y) < 2:
        return {"mmd2": None, "p_value": None, "note": f"{len(x)} and {len(y)} images: MMD needs 2 on each side"}
    xs = np.asarray(x, dtype=np.float64)[subsample(len(x), max_samples, seed)]
    ys = np.asarray(y, dtype=np.float64)[subsample(len(y), max_samples, seed + 1)]
    z = np.concatenate([xs, ys])
    d2 = sq_distances(z, z)
    sigma = _median_sigma(d2)
    k = np.exp(-d2 / (2.0 * sigma * sigma))
    m = len(xs)
    first = np.zeros((len(z), 1))
    first[:m] = 1
    observed = float(_mmd2_batch(k, first)[0])
    rng = np.random.default_rng(seed)
    at_least, done = 0, 0
    while done < permutations:  # in chunks of 64 splits: one GEMM each
        p = min(64, permutations - done)
        in_x = np.zeros((len(z), p))
        for j in range(p):
            in_x[rng.permutation(len(z))[:m], j] = 1
        at_least += int((_mmd2_batch(k, in_x) >= observed - 1e-12).sum())
        done += p
    return {"mmd2": observed, "mmd": float(np.sqrt(max(observed, 0.0))), "p_value": (1 + at_least) / (1 + permutations),
            "sigma": sigma, "permutations": permutations, "used": [int(m), int(len(ys))],
            "images": [int(len(x)), int(len(y))], "seed": seed}

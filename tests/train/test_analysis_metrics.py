"""Table 1's metrics on synthetic data whose answers are known: cluster scores equal scikit-learn's,
MMD equals the textbook formula and separates distinct from identical distributions, Positive /
Negative count a hand-made per-class table as the paper defines them."""

import numpy as np
import pytest
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from train.analysis.cluster_metrics import cluster_quality, subsample
from train.analysis.mmd import median_bandwidth, mmd2_unbiased, mmd_test
from train.analysis.transfer import class_changes, positive_negative, transfer_by_dataset


def _clusters(spread: float, n_per: int = 60, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(k, 8) * 10.0
    x = np.concatenate([c + rng.normal(0, spread, (n_per, 8)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


def test_cluster_scores_equal_scikit_learn_and_rank_separation():
    tight_x, y = _clusters(0.5)
    loose_x, _ = _clusters(20.0)
    tight, loose = cluster_quality(tight_x, y), cluster_quality(loose_x, y)
    assert tight["sc"] == pytest.approx(silhouette_score(tight_x, y))
    assert tight["chi"] == pytest.approx(calinski_harabasz_score(tight_x, y))
    assert tight["dbi"] == pytest.approx(davies_bouldin_score(tight_x, y))
    assert tight["sc"] > 0.8 and abs(loose["sc"]) < 0.1
    assert tight["chi"] > 10 * loose["chi"] and tight["dbi"] < loose["dbi"]
    assert not tight["subsampled"] and tight["used"] == 180


def test_cluster_scores_subsample_with_a_fixed_seed():
    x, y = _clusters(1.0, n_per=100)
    a, b = cluster_quality(x, y, max_samples=50, seed=3), cluster_quality(x, y, max_samples=50, seed=3)
    assert a["subsampled"] and a["used"] == 50 and a["images"] == 300 and a == b
    idx = subsample(300, 50, 3)
    assert a["sc"] == pytest.approx(silhouette_score(x[idx], y[idx]))
    one = cluster_quality(x[:10], np.zeros(10, int))
    assert one["sc"] is None and "classes" in one["note"]


def _mmd2_direct(x, y, sigma):
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_equals_the_direct_formula():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (15, 4)), rng.normal(0.5, 1, (12, 4))
    sigma = median_bandwidth(np.concatenate([x, y]))
    assert mmd2_unbiased(x, y, sigma) == pytest.approx(_mmd2_direct(x, y, sigma), rel=1e-9)
    assert mmd_test(x, y, permutations=10)["mmd2"] == pytest.approx(_mmd2_direct(x, y, sigma), rel=1e-9)


def test_mmd_separates_distinct_from_identical_distributions():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (80, 6)), rng.normal(0, 1, (80, 6))
    far = rng.normal(0, 1, (80, 6)) + 3.0
    same, apart = mmd_test(a, b, permutations=200), mmd_test(a, far, permutations=200)
    assert apart["mmd2"] > 10 * abs(same["mmd2"])
    assert apart["p_value"] == pytest.approx(1 / 201)  # no permutation reaches it
    assert same["p_value"] > 0.2
    assert mmd_test(a, b, permutations=200) == same  # fixed seed


def test_positive_negative_on_a_hand_made_table():
    single = {"cub/a": 0.50, "cub/b": 0.80, "cub/c": 0.60, "cub/d": 1.00, "cars/x": 0.40, "cars/y": 0.90}
    joint = {"cub/a": 0.70, "cub/b": 0.80, "cub/c": 0.40, "cub/d": 0.90, "cars/x": 0.40, "cars/y": 0.95, "cars/z": 1.0}
    ch = class_changes(joint, single)
    assert "cars/z" not in ch and ch["cub/c"] == pytest.approx(-0.2)
    # unchanged counts as positive (paper section 3.3)
    assert positive_negative({k: v for k, v in ch.items() if k.startswith("cub/")}) == {"positive": 2, "negative": 2}
    t = transfer_by_dataset(joint, single, ["cub", "cars"])
    assert t["cars"]["positive"] == 2 and t["cars"]["negative"] == 0 and t["cars"]["classes"] == 2
    assert list(t["cub"]["changes"]) == ["cub/a", "cub/b", "cub/d", "cub/c"]  # largest gain first
    assert t["cub"]["mean_change"] == pytest.approx((0.2 + 0 - 0.2 - 0.1) / 4)

"""A held-out validation split of the training samples, to choose the best checkpoint without the test set."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from train.data.samples import Sample


def split_validation(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (train, val), stratified by label and deterministic for a seed.

    Each class gives round(fraction * n) of its n samples to validation, but always keeps at least
    one for training. Both lists keep the input order, so the result does not depend on hashing.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_label[s.label].append(i)
    rng = np.random.default_rng(abs(int(seed)))
    val_idx: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label]
        n_val = min(int(round(fraction * len(idx))), len(idx) - 1)
        if n_val > 0:
            val_idx.update(idx[j] for j in rng.permutation(len(idx))[:n_val])
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val

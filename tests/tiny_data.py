"""Tiny labelled image trees for end-to-end tests: two ImageFolder data sets whose classes differ in
colour and layout, so that a tiny model can learn them in a few steps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_mixture(root: Path, per_class: tuple[int, int] = (10, 4), size: int = 24, seed: int = 0) -> list[str]:
    """Writes root/a (3 classes) and root/b (2 classes) in ImageFolder layout; returns the --data specs."""
    rng = np.random.default_rng(seed)
    for ds, ncls in (("a", 3), ("b", 2)):
        for split, n in zip(("train", "test"), per_class):
            for c in range(ncls):
                d = root / ds / split / f"class{c}"
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
                    if ds == "a":
                        img[..., c] += 150
                    else:
                        img[: size // 2 if c == 0 else size, :, :] += 100
                    cv2.imwrite(str(d / f"{i}.png"), img)
    return [f"a={root / 'a'}", f"b={root / 'b'}"]

"""Training-time augmentation on the already resized uint8 image: random crop with zero padding and
horizontal flip (the paper's "random horizontal flips and random crops"), then the shared normalize.

Starting from the test-time resize and ending with the test-time normalize keeps training inputs
and deployed inputs on the same scale and statistics.
"""

from __future__ import annotations

import numpy as np

from erudite_edge.core.preprocess import PreprocessSpec, normalize, resize_image


def default_pad(spec: PreprocessSpec) -> int:
    """Padding for the random crop: 1/28 of the input side (8 px at 224, 16 at 448)."""
    return int(round(min(spec.input_size) / 28))


def random_crop_with_padding(img: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Pad an HxWx3 image by `pad` black pixels on each side and cut a random HxW window from it."""
    if pad <= 0:
        return img
    h, w = img.shape[:2]
    padded = np.zeros((h + 2 * pad, w + 2 * pad) + img.shape[2:], dtype=img.dtype)
    padded[pad : pad + h, pad : pad + w] = img
    top = int(rng.integers(0, 2 * pad + 1))
    left = int(rng.integers(0, 2 * pad + 1))
    return padded[top : top + h, left : left + w]


def random_hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    return img[:, ::-1] if rng.random() < p else img


def train_transform(rgb: np.ndarray, spec: PreprocessSpec, pad: int, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 image of any size -> one augmented float32 model input (layout per spec)."""
    sized = resize_image(rgb, spec)
    return normalize(random_hflip(random_crop_with_padding(sized, pad, rng), rng), spec)

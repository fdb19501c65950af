"""Attention overlays (`run --save-attention DIR`, `analyze`): the spatial attention's group masks (one
sigmoid map per channel group, paper Eq. 7) upsampled to the model's input and blended over the image in
the jet colour map; one PNG per input: the image as the model saw it, then one panel per group.

OpenCV only (no matplotlib, no torch), so it runs on the device beside `run`.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from erudite_edge.core.fileio import atomic_path
from erudite_edge.core.preprocess import PreprocessSpec, resize_image


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A mask in [0, 1] (any size) upsampled to the RGB image and blended over it in the jet colour map."""
    m = cv2.resize(mask.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(m * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (rgb.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)


def grid(rgb: np.ndarray, masks: np.ndarray, spec: PreprocessSpec, caption: str = "", panel: int = 160) -> np.ndarray:
    """One RGB row: the image resized as the model saw it, then each group's mask over it, `panel` px a side,
    each titled; `caption` (e.g. the top-1 label) above the first panel."""
    shown = resize_image(rgb, spec)
    tiles = [shown] + [overlay(shown, m) for m in masks]
    titles = [caption[:22]] + [f"group {g + 1}" for g in range(len(masks))]
    out = []
    for tile, title in zip(tiles, titles):
        t = cv2.resize(tile, (panel, panel), interpolation=cv2.INTER_NEAREST if min(tile.shape[:2]) < panel else cv2.INTER_AREA)
        head = np.full((22, panel, 3), 255, np.uint8)
        cv2.putText(head, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(np.vstack([head, t]))
    sep = np.full((panel + 22, 3, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for i, t in enumerate(out):
        row += ([sep] if i else []) + [t]
    return np.hstack(row)


def file_name(index: int, name: str) -> str:
    """`<index>_<file stem or frame>.png`, safe on any file system."""
    stem = Path(name).stem if not name.startswith("frame:") else name.replace(":", "")
    return f"{index:06d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)[:80]}.png"


def save_grid(path: Path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG, whole or not at all."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image as PNG
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.tobytes())
    return path


class AttentionWriter:
    """`run --save-attention DIR`: one overlay grid per classified input, named after it."""

    def __init__(self, folder: Path, spec: PreprocessSpec):
        self.folder = Path(folder)
        self.spec = spec
        self.written = 0

    def write(self, index: int, name: str, rgb: np.ndarray, masks: np.ndarray, caption: str = "") -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = save_grid(self.folder / file_name(index, name), grid(rgb, masks, self.spec, caption))
        self.written += 1
        return path

"""Attention maps (paper section 6.1, Figure 5): the spatial attention's group masks (Eq. 7; one sigmoid
map per channel group) over real test images, as an overlay PNG grid: one row per image, the image
itself, then each group's mask upsampled to the input and blended over it (jet colour map).

The masks are read with a forward hook on the model's attention module in its ordinary inference
forward; the model is not changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from erudite_edge.core.preprocess import PreprocessSpec, normalize, resize_image
from erudite_edge.errors import BadImageError
from erudite_edge.outputs.attention_maps import overlay
from train.data import DatasetSplits, load_sample_image


def pick_images(given: Sequence[DatasetSplits], per_dataset: int) -> list[tuple[str, str, np.ndarray]]:
    """The first `per_dataset` readable test images of each data set, each from a different class
    where there are enough: (data set, class, RGB uint8)."""
    out = []
    for s in given:
        chosen: list[tuple[str, str, np.ndarray]] = []
        seen: set[int] = set()
        for pass_ in (0, 1):  # first one image per class, then fill up
            for sample in s.test:
                if len(chosen) >= per_dataset:
                    break
                if (pass_ == 0 and sample.label in seen) or any(sample.path == c[0] for c in chosen):
                    continue
                try:
                    rgb = load_sample_image(sample.path, s.crop_bottom)
                except BadImageError:
                    continue
                chosen.append((sample.path, s.classes[sample.label], rgb))
                seen.add(sample.label)
        out += [(s.name, cls, rgb) for _, cls, rgb in chosen]
    return out


@torch.no_grad()
def attention_masks(model: nn.Module, images: Sequence[np.ndarray], spec: PreprocessSpec, device: torch.device) -> np.ndarray:
    """(B, groups, h, w) masks of the model's attention layer for the given RGB images; ValueError when
    the model has no attention layer (baseline, baseline+, a zoo)."""
    attention = getattr(model, "attention", None)
    if attention is None:
        raise ValueError("this variant has no spatial attention layer")
    got: dict[str, torch.Tensor] = {}
    handle = attention.register_forward_hook(lambda _m, _a, out: got.__setitem__("masks", out[1].detach()))
    try:
        model.eval()
        x = torch.from_numpy(np.stack([normalize(resize_image(im, spec), spec) for im in images])).to(device)
        model(x)
    finally:
        handle.remove()
    return got["masks"].float().cpu().numpy()


def plot_attention(picked: list[tuple[str, str, np.ndarray]], masks: np.ndarray, spec: PreprocessSpec, path: Path) -> Path:
    from train.analysis.plots import _pyplot, _save

    plt = _pyplot()
    groups = masks.shape[1]
    fig, axes = plt.subplots(len(picked), groups + 1, figsize=(1.5 * (groups + 1), 1.6 * len(picked)), squeeze=False)
    for r, ((ds, cls, rgb), m) in enumerate(zip(picked, masks)):
        shown = resize_image(rgb, spec)
        axes[r, 0].imshow(shown)
        axes[r, 0].set_title(f"{ds}/{cls}"[:24], fontsize=7)
        for g in range(groups):
            axes[r, g + 1].imshow(overlay(shown, m[g]))
            if r == 0:
                axes[r, g + 1].set_title(f"group {g + 1}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("spatial attention: each group's mask over the test image (red: high)", fontsize=9)
    return _save(fig, path)


def write_attention_grid(model: nn.Module, given: Sequence[DatasetSplits], spec: PreprocessSpec, device: torch.device,
                         path: Path, per_dataset: int = 4) -> dict[str, Any] | None:
    """The overlay grid for `per_dataset` test images of each data set; None when the model has no attention."""
    if getattr(model, "attention", None) is None:
        return None
    picked = pick_images(given, per_dataset)
    if not picked:
        return None
    masks = attention_masks(model, [p[2] for p in picked], spec, device)
    plot_attention(picked, masks, spec, path)
    return {"images": [f"{d}/{c}" for d, c, _ in picked], "groups": int(masks.shape[1]),
            "mask_size": list(masks.shape[2:]), "mean_mask": [float(v) for v in masks.mean(axis=(0, 2, 3))]}

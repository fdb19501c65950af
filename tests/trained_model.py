"""The tiny trained model the export, check-set and INT8 tests share: its label space, preprocessing and
photographs, how it is trained and saved, and the small helpers those tests call (the CLI in-process,
one error line, ONNX Runtime on a model file). Its fixtures (photos, real_batch, real_bytes, views,
trained) are in conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from erudite_edge.cli.app import main
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec

if TYPE_CHECKING:
    import torch

    from train.model_spec import ModelConfig

COUNTS = [3, 4]
LABELS = LabelSpace.build(["a", "b"], [["x", "y", "z"], ["p", "q", "r", "s"]])
SPEC = PreprocessSpec.square(32, resize="center_crop", crop_ratio=0.8, interpolation="area")
# the photographs standing for the seven classes, in joint order
CLASS_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry"]


def config(variant: str) -> "ModelConfig":
    from train.model_spec import ModelConfig

    return ModelConfig(variant=variant, backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16)


def save_run(run: Path, model: "torch.nn.Module", variant: str, spec: PreprocessSpec = SPEC) -> Path:
    from train.checkpoint import save_checkpoint

    save_checkpoint(run, "best", model, model_config=config(variant), labels=LABELS, preprocess=spec)
    return run


def untrained_run(root: Path, variant: str, seed: int = 0) -> Path:
    import torch

    from train.model import build_model

    torch.manual_seed(seed)
    return save_run(root / f"run-{variant}", build_model(config(variant)).eval(), variant)


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    return session(path).run(None, {"images": batch})[0]


def write_imagefolder(root: Path, photos: dict[str, np.ndarray], seed: int) -> list[str]:
    """Data sets a (x, y, z) and b (p, q, r, s), one photograph per class, random views of it."""
    rng = np.random.default_rng(seed)
    names = iter(CLASS_PHOTOS)
    for ds, classes in zip(LABELS.datasets, LABELS.classes):
        for cls in classes:
            photo = photos[next(names)]
            for split, n in (("train", 8), ("test", 4)):
                d = root / ds / split / cls
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    cv2.imwrite(str(d / f"{i}.png"), random_view(photo, rng)[..., ::-1])
    return [f"{ds}={root / ds}" for ds in LABELS.datasets]


def random_view(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = im.shape[:2]
    s = rng.uniform(0.6, 1.0)
    ch, cw = int(h * s), int(w * s)
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    view = im[top : top + ch, left : left + cw]
    return np.ascontiguousarray(view[:, ::-1] if rng.random() < 0.5 else view)


def train_steps(step, batch, steps: int = 25) -> float:
    """Run training steps; returns the last step's batch accuracy."""
    import torch

    # One thread: on a few shared cores, torch's worker threads wait on each other for whole
    # scheduler slices, and these millisecond steps then take seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            stats = step(*batch)
    finally:
        torch.set_num_threads(threads)
    return stats.correct / stats.count


def distinct_predictions(logits: np.ndarray) -> int:
    return len(set(logits.argmax(1).tolist()))



"""Tiny real ONNX models and bundles whose answers are known in advance, and the images, videos and
bad files to feed them (for runtime tests).

Each model is  images [N,3,H,W] -> GlobalAveragePool -> Flatten -> Gemm -> logits [N,K].
After the bundle's normalisation the pooled vector is the image's mean colour x (normalised), and
the Gemm computes  logit_k = T * (2 x.p_k - |p_k|^2) = T * (|x|^2 - |x - p_k|^2)  for a prototype
colour p_k per class: the arg-max is the class whose prototype colour is nearest, so a red image
is "red", a cyan one "cyan". T sharpens the softmax.

    from onnx_fixtures import COLORS, make_erudite_bundle, make_zoo_bundle, solid_image

Reusable by any test that needs a bundle runnable with onnxruntime (no torch).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from erudite_edge.core.bundle import Bundle, default_filename, fine_role
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "yellow": (255, 255, 0),
    "blue": (0, 0, 255),
    "cyan": (0, 255, 255),
}
# Two data sets whose mean colours separate them: warm (R high) and cool (B high).
DATASETS: dict[str, list[str]] = {"warm": ["red", "yellow"], "cool": ["blue", "cyan"]}
INPUT_SIZE = 16
TEMPERATURE = 0.1


def fixture_spec(size: int = INPUT_SIZE) -> PreprocessSpec:
    return PreprocessSpec.square(size)


def normalized_color(rgb: Sequence[float], spec: PreprocessSpec) -> np.ndarray:
    """What the preprocessing makes of a pixel of this colour (RGB order, channel vector)."""
    x = np.asarray(rgb, dtype=np.float64) * spec.scale
    return (x - np.asarray(spec.mean)) / np.asarray(spec.std)


def nearest_color_model(path: Path, prototypes: Sequence[Sequence[float]], spec: PreprocessSpec,
                        temperature: float = TEMPERATURE, opset: int = 17) -> Path:
    """Write a real ONNX classifier that picks the prototype colour nearest an image's mean colour."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p = np.stack([normalized_color(c, spec) for c in prototypes])  # (K, 3)
    weight = (2.0 * temperature * p).astype(np.float32)  # Gemm B with transB=1: (K, 3)
    bias = (-temperature * (p**2).sum(axis=1)).astype(np.float32)  # (K,)
    h, w = spec.input_size
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1),
        ],
        "nearest_color",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(prototypes)])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # readable by older onnxruntime builds (JetPack's)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def label_space(datasets: Mapping[str, Sequence[str]] = DATASETS) -> LabelSpace:
    return LabelSpace.build(list(datasets), [list(c) for c in datasets.values()])


def make_erudite_bundle(root: Path, datasets: Mapping[str, Sequence[str]] = DATASETS,
                        colors: Mapping[str, Sequence[int]] = COLORS, size: int = INPUT_SIZE,
                        temperature: float = TEMPERATURE) -> Bundle:
    """An erudite bundle (role "main") over the joint label space of `datasets`; class prototypes from `colors`
    (a high `temperature` spreads the logits so far that float32 probabilities underflow to 0)."""
    root.mkdir(parents=True, exist_ok=True)
    labels = label_space(datasets)
    spec = fixture_spec(size)
    bundle = Bundle.create(root, labels=labels, preprocess=spec, kind="erudite", variant="test",
                           backbone="nearest-color", opset=17)
    protos = [colors[c] for cls in datasets.values() for c in cls]
    nearest_color_model(root / default_filename("main", "fp32"), protos, spec, temperature)
    bundle.add_model("main", "fp32", default_filename("main", "fp32"))
    bundle.save()
    return bundle


def make_zoo_bundle(root: Path, datasets: Mapping[str, Sequence[str]] = DATASETS,
                    colors: Mapping[str, Sequence[int]] = COLORS, size: int = INPUT_SIZE,
                    coarse_prototypes: Mapping[str, Sequence[float]] | None = None) -> Bundle:
    """A zoo bundle: a coarse model whose prototype for each data set is the mean of its classes'
    colours (or `coarse_prototypes`, to route deliberately elsewhere), and one fine model per data set."""
    root.mkdir(parents=True, exist_ok=True)
    labels = label_space(datasets)
    spec = fixture_spec(size)
    bundle = Bundle.create(root, labels=labels, preprocess=spec, kind="zoo", variant="single",
                           backbone="nearest-color", opset=17)
    coarse = [
        (coarse_prototypes or {}).get(d) or np.mean([colors[c] for c in cls], axis=0) for d, cls in datasets.items()
    ]
    nearest_color_model(root / default_filename("coarse", "fp32"), coarse, spec)
    bundle.add_model("coarse", "fp32", default_filename("coarse", "fp32"))
    for d, cls in datasets.items():
        role = fine_role(d)
        nearest_color_model(root / default_filename(role, "fp32"), [colors[c] for c in cls], spec)
        bundle.add_model(role, "fp32", default_filename(role, "fp32"))
    bundle.save()
    return bundle


def solid_image(color: Sequence[int], h: int = 20, w: int = 24, noise: int = 0, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image of one colour (optionally with a little noise)."""
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = np.asarray(color, dtype=np.uint8)
    if noise:
        rng = np.random.default_rng(seed)
        img = np.clip(img.astype(np.int16) + rng.integers(-noise, noise + 1, img.shape), 0, 255).astype(np.uint8)
    return img


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB image with OpenCV (which wants BGR)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, path
    buf.tofile(str(path))
    return path


def write_video(path: Path, colors: Sequence[Sequence[int]], size: tuple[int, int] = (32, 24), fps: float = 10.0) -> Path:
    """A real video file (mp4v) with one solid-colour frame per entry of `colors` (stands in for a camera)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), f"this OpenCV cannot write {path}"
    for c in colors:
        writer.write(cv2.cvtColor(solid_image(c, h, w), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_bad_files(folder: Path) -> tuple[list[str], dict[str, tuple[int, int, int] | None]]:
    """Undecodable files (names) and odd-mode images (name -> colour they must decode to, or None)."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    good = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()
    (folder / "corrupt.jpg").write_bytes(good[:4] + bytes(range(256)) * 4)  # JPEG header, garbage body
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file renamed .jpg\n")

    red16 = np.zeros((12, 14, 3), np.uint16)
    red16[..., 2] = 65535  # BGR order: red
    cv2.imwrite(str(folder / "deep16.png"), red16)
    cv2.imwrite(str(folder / "gray.png"), np.full((12, 14), 90, np.uint8))
    buf = io.BytesIO()
    Image.new("CMYK", (14, 12), (0, 0, 255, 0)).save(buf, "JPEG", quality=95)  # CMYK yellow
    (folder / "cmyk.jpg").write_bytes(buf.getvalue())
    bgra = np.zeros((12, 14, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    bgra[..., 3] = 100  # mostly transparent: still classified on its colour
    cv2.imwrite(str(folder / "rgba.png"), bgra)
    bad = ["corrupt.jpg", "empty.jpg", "notes.jpg"]
    odd = {"deep16.png": COLORS["red"], "gray.png": None, "cmyk.jpg": COLORS["yellow"], "rgba.png": COLORS["blue"]}
    return bad, odd

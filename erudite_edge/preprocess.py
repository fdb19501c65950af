"""Image decoding and preprocessing: one implementation shared by training, export and every backend.

The spec is written once at export into bundle.json and read back by each runtime, so what a
deployed model sees is exactly what it saw in training (test-time transform).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from .errors import BadImageError, BundleError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULES = ("stretch", "center_crop")
_INTERP = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB uint8 image becomes the model's float32 NCHW input."""

    input_size: tuple[int, int] = (224, 224)  # (height, width)
    resize: str = "stretch"  # "stretch": resize to input_size (the paper's); "center_crop": shorter side then crop
    crop_ratio: float = 0.875  # for center_crop: input / resized shorter side
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize rule {self.resize!r} unknown; one of {RESIZE_RULES}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation {self.interpolation!r} unknown; one of {sorted(_INTERP)}")
        if self.channel_order not in ("RGB", "BGR") or self.layout not in ("NCHW", "NHWC"):
            raise ValueError("channel_order must be RGB or BGR and layout NCHW or NHWC")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        try:
            kw = dict(d)
            kw["input_size"] = tuple(int(v) for v in kw["input_size"])
            kw["mean"] = tuple(float(v) for v in kw.get("mean", IMAGENET_MEAN))
            kw["std"] = tuple(float(v) for v in kw.get("std", IMAGENET_STD))
            known = set(cls.__dataclass_fields__)
            unknown = {k: kw.pop(k) for k in list(kw) if k not in known}
            if unknown:
                kw.setdefault("extra", {}).update(unknown)
            return cls(**kw)
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"preprocessing spec is malformed: {e}") from e

    @classmethod
    def square(cls, size: int, **kw: Any) -> "PreprocessSpec":
        return cls(input_size=(int(size), int(size)), **kw)


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 HxWx3 array.

    Grayscale, alpha, 16-bit and CMYK JPEGs are converted (OpenCV's IMREAD_COLOR: 8-bit BGR, EXIF
    orientation applied). Anything that does not decode raises BadImageError naming the file.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise BadImageError(f"{name}: empty file")
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as e:  # some OpenCV builds raise instead of returning None
        raise BadImageError(f"{name}: not a decodable image ({str(e).strip().splitlines()[-1]})") from e
    if bgr is None or bgr.size == 0:
        raise BadImageError(f"{name}: not a decodable image (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read and decode one image file to RGB uint8; BadImageError for anything unreadable."""
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError as e:
        raise BadImageError(f"{path}: cannot read ({e.strerror or e})") from e
    return decode_image(data, name=os.fspath(path))


def resize_image(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply the spec's resize rule: an RGB uint8 image of exactly spec.input_size."""
    h, w = spec.input_size
    interp = _INTERP[spec.interpolation]
    if spec.resize == "stretch":
        return cv2.resize(rgb, (w, h), interpolation=interp)
    ih, iw = rgb.shape[:2]
    short = min(ih, iw)
    target_short = max(h, w) / spec.crop_ratio
    scale = target_short / short
    nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    top, left = (nh - h) // 2, (nw - w) // 2
    return resized[top : top + h, left : left + w]


def normalize(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 RGB HxWx3 (already sized) -> float32 in the spec's channel order and layout (no batch axis)."""
    x = rgb.astype(np.float32) * np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) / std
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """RGB uint8 image of any size -> one float32 model input (CHW or HWC per spec)."""
    return normalize(resize_image(rgb, spec), spec)


def preprocess_batch(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    return np.stack([preprocess(im, spec) for im in images], axis=0)

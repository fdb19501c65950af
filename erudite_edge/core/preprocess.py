"""Image decoding and preprocessing: one implementation shared by training, export and every backend.

The spec is written once at export into bundle.json and read back by each runtime, so what a
deployed model sees is exactly what it saw in training (test-time transform).

Two model inputs (`dtype` in the spec, recorded in bundle.json):
  float32  NCHW (or NHWC) normalised floats: the host resizes, scales, subtracts the mean, divides by
           the std and transposes; what every bundle exported before issue 14 takes (the default when
           bundle.json says nothing).
  uint8    NHWC RGB bytes at the model size: the host only decodes and resizes; the graph's first
           nodes (Cast, Transpose, Mul, Add: export/graph_input.py) do the rest. A quarter of the
           bytes to the device and no per-pixel float work on the CPU.

`preprocess_into` writes one image straight into a slot of a preallocated batch buffer (the
pipeline's InputRing): cv2.resize writes into the slot itself (its `dst`), so the uint8 path
allocates nothing per image beyond what the decoder returns.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import cv2
import numpy as np

from erudite_edge.core.image_header import image_size
from erudite_edge.errors import BadImageError, BundleError, ImageTooLargeError, UnreadableImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULES = ("stretch", "center_crop")
INPUT_DTYPES = ("float32", "uint8")
# OpenCV >= 4.10 decodes straight to RGB (the decoder writes the channels in that order: no second
# full-size pass for the colour conversion, same pixels); JetPack's OpenCV 4.8 converts afterwards.
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)
_INTERP = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB uint8 image becomes the model's input: float32 NCHW (normalised on the host) or,
    with dtype "uint8", NHWC RGB bytes at the model size (normalised inside the graph)."""

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
        if self.dtype not in INPUT_DTYPES:
            raise ValueError(f"input dtype {self.dtype!r} unknown; one of {INPUT_DTYPES}")
        if self.dtype == "uint8" and (self.layout != "NHWC" or self.channel_order != "RGB"):
            raise ValueError("a uint8 model input is NHWC RGB (the graph casts, normalises and transposes it)")

    # -- the model input this spec describes ---------------------------------------------------------
    @property
    def normalized_in_graph(self) -> bool:
        """True when the model takes uint8 bytes and normalises them itself."""
        return self.dtype == "uint8"

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(np.uint8 if self.dtype == "uint8" else np.float32)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """One input without the batch axis: (3, H, W) for NCHW, (H, W, 3) for NHWC."""
        h, w = self.input_size
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)

    def batch_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (int(batch), *self.sample_shape)

    @property
    def bytes_per_image(self) -> int:
        """Bytes one image takes in the model's input tensor (what is copied to a device per image)."""
        h, w = self.input_size
        return 3 * h * w * self.np_dtype.itemsize

    def as_input(self, dtype: str) -> "PreprocessSpec":
        """The same transform with the model taking `dtype`: "uint8" (NHWC RGB, normalised in the graph)
        or "float32" (NCHW, normalised on the host)."""
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"input dtype {dtype!r} unknown; one of {INPUT_DTYPES}")
        if dtype == "uint8":
            return replace(self, dtype="uint8", layout="NHWC", channel_order="RGB")
        return replace(self, dtype="float32", layout="NCHW")

    def host_float(self) -> "PreprocessSpec":
        """The float32 NCHW spec of the same transform (what the trained torch module takes)."""
        return self.as_input("float32") if self.dtype == "uint8" else self

    def random_batch(self, batch: int, seed: int = 0) -> np.ndarray:
        """A synthetic input of the model's shape and dtype: random bytes, or roughly standard normal
        floats (what normalised images look like)."""
        rng = np.random.default_rng(seed)
        if self.dtype == "uint8":
            return rng.integers(0, 256, size=self.batch_shape(batch), dtype=np.uint8)
        return rng.standard_normal(self.batch_shape(batch), dtype=np.float32)

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


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 HxWx3 array.

    Grayscale, alpha, 16-bit and CMYK JPEGs are converted (OpenCV's IMREAD_COLOR: 8-bit BGR, EXIF
    orientation applied). Anything that does not decode raises BadImageError naming the file.
    `max_pixels`: an image with more pixels raises ImageTooLargeError, from its header before decoding
    (erudite_edge.core.image_header) where the format is one read there, else once decoded; None: no limit
    here (OpenCV's own, 2^30 pixels, remains).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise BadImageError(f"{name}: empty file")
    if max_pixels is not None:
        check_pixels(image_size(np.ascontiguousarray(buf).data), max_pixels, name)
    try:
        img = cv2.imdecode(buf, _IMREAD_RGB if _IMREAD_RGB is not None else cv2.IMREAD_COLOR)
    except cv2.error as e:  # some OpenCV builds raise instead of returning None
        raise BadImageError(f"{name}: not a decodable image ({str(e).strip().splitlines()[-1]})") from e
    if img is None or img.size == 0:
        raise BadImageError(f"{name}: not a decodable image (corrupt or unsupported format)")
    if max_pixels is not None:  # a format whose header is not read here: the decoded size, before anything else
        check_pixels((int(img.shape[1]), int(img.shape[0])), max_pixels, name)
    return img if _IMREAD_RGB is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_pixels(size: tuple[int, int] | None, max_pixels: int, name: str) -> None:
    """ImageTooLargeError where an image of `size` (width, height; None: not known) has more than `max_pixels`."""
    if size is None:
        return
    w, h = size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"{name}: {w}x{h} pixels ({w * h / 1e6:.1f} MP), over the limit of {max_pixels} "
                                 f"({max_pixels / 1e6:.1f} MP); raise --max-pixels to classify it")


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Read and decode one image file to RGB uint8; BadImageError for anything unreadable, ImageTooLargeError
    (before decoding where its header says) for one of more than `max_pixels` pixels."""
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError as e:
        raise UnreadableImageError(f"{path}: cannot read ({e.strerror or e})") from e
    return decode_image(data, name=os.fspath(path), max_pixels=max_pixels)


_local = threading.local()


def _scratch(shape: tuple[int, int, int]) -> np.ndarray:
    """A uint8 buffer of `shape` owned by the calling thread, kept for the next call of the same shape."""
    buf: np.ndarray | None = getattr(_local, "scratch", None)
    if buf is None or buf.shape != shape:
        buf = np.empty(shape, dtype=np.uint8)
        _local.scratch = buf
    return buf


def _center_crop_box(ih: int, iw: int, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(resized height, resized width, top, left) of the center_crop rule for an ih x iw image."""
    h, w = spec.input_size
    short = min(ih, iw)
    target_short = max(h, w) / spec.crop_ratio
    scale = target_short / short
    nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
    return nh, nw, (nh - h) // 2, (nw - w) // 2


def resize_image(rgb: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Apply the spec's resize rule: an RGB uint8 image of exactly spec.input_size. With `out` (a
    C-contiguous uint8 HxWx3 array) the result is written there ("stretch": by cv2.resize itself)."""
    h, w = spec.input_size
    interp = _INTERP[spec.interpolation]
    if spec.resize == "stretch":
        if out is not None:
            got = cv2.resize(rgb, (w, h), dst=out, interpolation=interp)
            if got is not out and not np.shares_memory(got, out):  # an OpenCV that did not take dst
                np.copyto(out, got)
            return out
        return cv2.resize(rgb, (w, h), interpolation=interp)
    nh, nw, top, left = _center_crop_box(int(rgb.shape[0]), int(rgb.shape[1]), spec)
    if out is not None:  # the intermediate image in this thread's scratch buffer (frames of one size reuse it)
        resized = cv2.resize(rgb, (nw, nh), dst=_scratch((nh, nw, rgb.shape[2] if rgb.ndim == 3 else 1)), interpolation=interp)
    else:
        resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    crop = resized[top : top + h, left : left + w]
    if out is not None:
        np.copyto(out, crop)
        return out
    return crop


def normalize(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 RGB HxWx3 (already sized) -> float32 in the spec's channel order and layout (no batch axis).
    The host half of a float32 model input; a uint8 model does this in its graph (same formula)."""
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
    """RGB uint8 image of any size -> one model input: float32 CHW/HWC per spec, or for a uint8 model
    the resized HxWx3 uint8 image."""
    if spec.dtype == "uint8":
        return np.ascontiguousarray(resize_image(rgb, spec))
    return normalize(resize_image(rgb, spec), spec)


def preprocess_into(rgb: np.ndarray, spec: PreprocessSpec, out: np.ndarray) -> np.ndarray:
    """Like preprocess, written into `out` (one slot of a batch buffer: spec.sample_shape, spec's dtype)."""
    if spec.dtype == "uint8":
        return resize_image(rgb, spec, out)
    np.copyto(out, normalize(resize_image(rgb, spec), spec))
    return out


def preprocess_batch(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    out = np.empty(spec.batch_shape(len(images)), dtype=spec.np_dtype)
    for i, im in enumerate(images):
        preprocess_into(im, spec, out[i])
    return out

"""Where the images for parity checks, agreement reports and INT8 calibration come from.

In order of preference: real images the user names (a folder, searched recursively, or labelled data
sets given as NAME=PATH), then scikit-image's bundled sample photographs (and crops and flips of
them), and random inputs only as the last resort. Every real image goes through the bundle's own
decoding and preprocessing (erudite_edge.core.preprocess), so what is checked is what gets deployed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, load_image, normalize, preprocess_batch
from erudite_edge.errors import BadImageError, UsageError
from erudite_edge.sources.base import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)
T = TypeVar("T")
Log = Callable[[str], None]

# scikit-image's photographs that ship inside the package (no download needed).
SAMPLE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins",
    "immunohistochemistry", "hubble_deep_field", "retina", "moon", "clock",
)


@dataclass(frozen=True)
class ImageRef:
    """An image file, with the rows its data set strips from the bottom (FGVC-Aircraft's banner)."""

    path: Path
    crop_bottom: int = 0

    def load(self) -> np.ndarray:
        """RGB uint8 through the shared decoder (BadImageError when unreadable)."""
        if self.crop_bottom <= 0:
            return load_image(self.path)
        from train.data import load_sample_image

        return load_sample_image(self.path, self.crop_bottom)


@dataclass(frozen=True)
class LabelledRef:
    ref: ImageRef
    dataset: int  # index into the bundle's label table
    local: int  # class within that data set


@dataclass
class InputSet:
    """A preprocessed batch (N, C, H, W float32) and where it came from."""

    batch: np.ndarray
    source: str
    real: bool
    skipped: int = 0
    dataset_ids: np.ndarray | None = None  # labelled sets: each input's data set (label-table index)
    local_ids: np.ndarray | None = None  # and its class within that data set


def spread(items: Sequence[T], count: int | None) -> list[T]:
    """At most `count` items spread evenly over the sequence (deterministic; all when count is None or 0)."""
    items = list(items)
    if not count or count >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, num=count).round().astype(int)
    return [items[i] for i in idx]


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under `folder` (by the extensions the runtime decodes), recursively, in a stable
    order; hidden files and folders are left out."""
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder of images")
    found = sorted(
        (
            p for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
            and p.is_file()
        ),
        key=lambda p: str(p),
    )
    if not found:
        raise UsageError(f"{root}: holds no image files (looked recursively for .jpg, .png, ...)")
    return found


def load_refs(
    refs: Sequence[ImageRef], count: int | None = None, log_fn: Log | None = None
) -> tuple[list[np.ndarray], int]:
    """Decode up to `count` images spread over `refs` (all when None); unreadable ones are warned
    about, skipped, counted, and replaced by others not yet chosen where there are any."""
    first = spread(refs, count)
    chosen = set(map(id, first))
    order = first + [r for r in refs if id(r) not in chosen]
    target = len(first)
    images: list[np.ndarray] = []
    skipped = 0
    for ref in order:
        if len(images) >= target:
            break
        try:
            images.append(ref.load())
        except BadImageError as e:
            skipped += 1
            (log_fn or log.warning)(f"warning: skipping unreadable image: {e}")
    return images, skipped


def dataset_refs(
    specs: Sequence[str], split: str, labels: LabelSpace | None = None
) -> list[LabelledRef]:
    """The `split` ("train" or "test") samples of data sets given as NAME=PATH.

    With `labels`, each data set must be one of the label table's, with the same classes in the same
    order, so that its labels mean what the model's outputs mean.
    """
    from train.data import check_matches_labels, load_dataset, parse_data_spec

    out: list[LabelledRef] = []
    for i, text in enumerate(specs):
        spec = parse_data_spec(text)
        splits = load_dataset(spec)
        index = i if labels is None else check_matches_labels(splits, labels)
        samples = splits.train if split == "train" else splits.test
        out.extend(LabelledRef(ImageRef(Path(s.path), splits.crop_bottom), index, s.label) for s in samples)
    return out


def balanced(refs: Sequence[LabelledRef], count: int | None) -> list[LabelledRef]:
    """At most `count` samples, shared evenly between data sets (each spread over its own samples)."""
    by_ds: dict[int, list[LabelledRef]] = {}
    for r in refs:
        by_ds.setdefault(r.dataset, []).append(r)
    if not count:
        return list(refs)
    share, extra = divmod(count, max(1, len(by_ds)))
    out: list[LabelledRef] = []
    for k, (_, items) in enumerate(sorted(by_ds.items())):
        out.extend(spread(items, share + (1 if k < extra else 0)))
    return out


def sample_photos() -> list[np.ndarray]:
    """scikit-image's sample photographs as RGB uint8 (empty when scikit-image is not installed)."""
    try:
        import skimage.data
    except ImportError:
        return []
    photos = []
    for name in SAMPLE_PHOTOS:
        try:
            im = np.asarray(getattr(skimage.data, name)())
        except Exception as e:  # a photo this scikit-image lacks or cannot read: use the others
            log.debug("scikit-image sample %s unavailable: %s", name, e)
            continue
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(im[..., :3].astype(np.uint8)))
    return photos


def photo_variants(photos: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each photo, its mirror image, and four crops (centre, top-left, bottom-right, a tall strip):
    different views of real scenes, with real image statistics."""
    out: list[np.ndarray] = []
    for im in photos:
        h, w = im.shape[:2]
        ch, cw = int(h * 0.6), int(w * 0.6)
        out += [
            im,
            im[:, ::-1],
            im[(h - ch) // 2 : (h + ch) // 2, (w - cw) // 2 : (w + cw) // 2],
            im[:ch, :cw],
            im[h - ch :, w - cw :][:, ::-1],
            im[:, w // 4 : w // 4 + max(1, w // 3)],
        ]
    return [np.ascontiguousarray(v) for v in out]


def to_batch(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    return preprocess_batch(images, spec)


def host_float_batch(batch: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The float32 NCHW inputs a PyTorch module takes for a batch of the model's inputs: a uint8 batch
    (resized NHWC bytes) normalised on the host as a float32 bundle would; a float batch unchanged."""
    if spec.dtype != "uint8":
        return batch
    host = spec.host_float()
    return np.stack([normalize(im, host) for im in batch], axis=0) if len(batch) else np.empty((0, *host.sample_shape), np.float32)


def random_batch(spec: PreprocessSpec, count: int, seed: int = 0) -> np.ndarray:
    return spec.random_batch(count, seed)


def check_inputs(
    spec: PreprocessSpec,
    *,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    count: int = 32,
    log_fn: Log | None = None,
) -> InputSet:
    """Inputs for a parity or agreement check: the user's images (a folder or files) and/or the test
    split of data sets (NAME=PATH); else scikit-image's sample photos; else random inputs."""
    if count < 1:
        raise UsageError(f"the image count must be at least 1, not {count}")
    refs: list[ImageRef] = []
    sources: list[str] = []
    if images is not None:
        if isinstance(images, (str, os.PathLike)):
            refs += [ImageRef(p) for p in find_images(images)]
            sources.append(f"images under {images}")
        else:
            refs += [ImageRef(Path(p)) for p in images]
            sources.append(f"{len(images)} image files")
    if data:
        labelled = balanced(dataset_refs(data, "test"), count if not refs else None)
        refs += [r.ref for r in labelled]
        sources.append("test split of " + ", ".join(d.split("=", 1)[0] for d in data))
    if refs:
        loaded, skipped = load_refs(refs, count, log_fn)
        if not loaded:
            raise UsageError(f"none of the {len(refs)} images ({'; '.join(sources)}) could be read")
        return InputSet(to_batch(loaded, spec), "; ".join(sources), True, skipped)
    photos = photo_variants(sample_photos())
    if photos:
        return InputSet(to_batch(spread(photos, count), spec), "scikit-image sample photos (with crops and flips)", True)
    return InputSet(random_batch(spec, count), "random inputs (no images given, scikit-image not installed)", False)


def labelled_inputs(
    spec: PreprocessSpec,
    labels: LabelSpace,
    data: Sequence[str],
    *,
    per_dataset: int | None = 500,
    log_fn: Log | None = None,
) -> InputSet:
    """The test split of data sets (NAME=PATH, named as in training), at most `per_dataset` images of
    each (spread over its classes; all when None or 0), with their labels."""
    chosen: list[LabelledRef] = []
    by_ds: dict[int, list[LabelledRef]] = {}
    for r in dataset_refs(data, "test", labels):
        by_ds.setdefault(r.dataset, []).append(r)
    for _, refs in sorted(by_ds.items()):
        chosen += spread(refs, per_dataset)
    images, ds_ids, local_ids, skipped = [], [], [], 0
    for r in chosen:
        try:
            images.append(r.ref.load())
        except BadImageError as e:
            skipped += 1
            (log_fn or log.warning)(f"warning: skipping unreadable image: {e}")
            continue
        ds_ids.append(r.dataset)
        local_ids.append(r.local)
    if not images:
        raise UsageError(f"none of the {len(chosen)} test images of {', '.join(data)} could be read")
    names = ", ".join(d.split("=", 1)[0] for d in data)
    return InputSet(
        to_batch(images, spec), f"test images of {names}", True, skipped,
        np.asarray(ds_ids, dtype=np.int64), np.asarray(local_ids, dtype=np.int64),
    )

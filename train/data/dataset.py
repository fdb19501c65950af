"""The torch Dataset over one data set's samples, the joint ConcatDataset, and a collate that drops
unreadable images.

Test-time items are exactly erudite_edge.preprocess.preprocess of the loaded image, which is what
every deployed backend computes. An unreadable image never stops training: the item comes back
with ok=False, the collate drops it and counts it in "skipped", and the file is warned about once.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, default_collate

from erudite_edge.errors import BadImageError
from erudite_edge.labels import LabelSpace
from erudite_edge.preprocess import PreprocessSpec, load_image, preprocess

from .augment import default_pad, train_transform
from .samples import DatasetSplits, Sample

log = logging.getLogger(__name__)
_warned: set[str] = set()  # files already reported as unreadable, in this process
_ITEM_KEYS = ("image", "joint", "dataset", "local")


def load_sample_image(path: str | os.PathLike[str], crop_bottom: int = 0) -> np.ndarray:
    """Load an image as RGB uint8 (the shared decoder) and remove its data set's bottom banner rows."""
    rgb = load_image(path)
    if crop_bottom > 0:
        h = rgb.shape[0]
        if h <= crop_bottom:
            raise BadImageError(f"{os.fspath(path)}: {h} px high, too small to remove the {crop_bottom}-px bottom banner")
        rgb = rgb[: h - crop_bottom]
    return rgb


def _warn_once(path: str, message: str) -> None:
    if path not in _warned:
        _warned.add(path)
        log.warning("skipping unreadable image: %s", message)


class ImageListDataset(Dataset):
    """The samples of one data set, labelled both locally and in the joint label space.

    Items: dict(image=float32 tensor (CHW per spec), joint=int, dataset=int, local=int, ok=bool).
    Augmentation draws from a numpy Generator seeded by (seed, dataset_index, epoch) and, inside a
    DataLoader worker, that worker's seed (which torch derives from the main process's RNG). So it
    differs between epochs and workers, and a run resumed at epoch e (RNG state restored) augments
    exactly as an uninterrupted one: call `set_epoch(e)` at the start of each epoch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        dataset_index: int,
        joint_offset: int,
        spec: PreprocessSpec,
        train: bool,
        crop_bottom: int = 0,
        pad: int | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.dataset_index = int(dataset_index)
        self.joint_offset = int(joint_offset)
        self.spec = spec
        self.train = bool(train)
        self.crop_bottom = int(crop_bottom)
        self.pad = default_pad(spec) if pad is None else int(pad)
        if self.pad < 0 or self.crop_bottom < 0:
            raise ValueError(f"pad ({self.pad}) and crop_bottom ({self.crop_bottom}) must not be negative")
        self.seed = int(seed)
        h, w = spec.input_size
        self._bad_shape = (3, h, w) if spec.layout == "NCHW" else (h, w, 3)
        self.epoch = 0
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._rng = None

    def _generator(self) -> np.random.Generator:
        """A per-process generator, renewed each epoch and when a DataLoader worker takes over."""
        worker = torch.utils.data.get_worker_info()
        worker_seed = worker.seed % 2**63 if worker is not None else 0
        key = (os.getpid(), worker_seed)
        if self._rng is None or key != self._rng_key:
            entropy = [self.seed % 2**64, self.dataset_index, self.epoch, worker_seed]
            self._rng, self._rng_key = np.random.default_rng(entropy), key
        return self._rng

    def load(self, index: int) -> np.ndarray:
        """The model input for one sample (augmented when training); BadImageError if unreadable."""
        sample = self.samples[index]
        rgb = load_sample_image(sample.path, self.crop_bottom)
        if self.train:
            return train_transform(rgb, self.spec, self.pad, self._generator())
        return preprocess(rgb, self.spec)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            x, ok = self.load(index), True
        except BadImageError as e:
            _warn_once(sample.path, str(e))
            x, ok = np.zeros(self._bad_shape, dtype=np.float32), False
        return {
            "image": torch.from_numpy(x),
            "joint": self.joint_offset + sample.label,
            "dataset": self.dataset_index,
            "local": sample.label,
            "ok": ok,
        }


def collate_skip_bad(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate the readable items (image, joint, dataset, local) and count the unreadable ones in "skipped".

    For evaluation: every image is scored at most once. A batch whose every image is unreadable comes
    back with zero rows, so the caller can skip it.
    """
    return _collate(batch, [b for b in batch if b["ok"]])


def collate_fill_bad(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For training: like collate_skip_bad, but an unreadable item is replaced by a readable item of the
    same data set from the same batch, so a balanced batch keeps its composition (every data set keeps
    its row count: BatchNorm in G_n, the meta-test split and DDP all rely on it); it is dropped only
    when its data set has no readable item left."""
    readable: dict[int, dict[str, Any]] = {}
    for b in batch:
        if b["ok"]:
            readable.setdefault(int(b["dataset"]), b)
    filled = [b if b["ok"] else readable[int(b["dataset"])] for b in batch if b["ok"] or int(b["dataset"]) in readable]
    return _collate(batch, filled)


def _collate(batch: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack `rows` (items of `batch`, possibly repeated); "skipped" counts the unreadable items of `batch`."""
    if rows:
        out: dict[str, Any] = default_collate([{k: b[k] for k in _ITEM_KEYS} for b in rows])
    else:
        shape = tuple(batch[0]["image"].shape) if batch else (0,)
        out = {"image": torch.zeros((0, *shape), dtype=torch.float32)}
        out.update({k: torch.zeros(0, dtype=torch.long) for k in _ITEM_KEYS[1:]})
    out["skipped"] = sum(1 for b in batch if not b["ok"])
    return out


def make_joint_dataset(
    splits: Sequence[DatasetSplits],
    label_space: LabelSpace,
    spec: PreprocessSpec,
    train: bool,
    which: str = "train",
    *,
    samples: Sequence[Sequence[Sample]] | None = None,
    pad: int | None = None,
    seed: int = 0,
) -> tuple[ConcatDataset, list[int]]:
    """One ConcatDataset over the data sets in label-space order, and each data set's size.

    which picks each data set's "train" or "test" samples; samples, when given, replaces them (one
    list per data set, e.g. the two halves of split_validation). train picks the transform.
    Global index = sum of the sizes before a data set + its local index (what BalancedBatchSampler assumes).
    """
    names = [s.name for s in splits]
    if list(label_space.datasets) != names or label_space.sizes != [len(s.classes) for s in splits]:
        raise ValueError(f"label space {list(label_space.datasets)} does not match the data sets {names} (order and class counts)")
    if samples is None:
        if which not in ("train", "test"):
            raise ValueError(f"which must be 'train' or 'test', got {which!r}")
        samples = [getattr(s, which) for s in splits]
    elif len(samples) != len(splits):
        raise ValueError(f"{len(samples)} sample lists given for {len(splits)} data sets")
    parts = [
        ImageListDataset(
            part,
            dataset_index=i,
            joint_offset=label_space.offsets[i],
            spec=spec,
            train=train,
            crop_bottom=s.crop_bottom,
            pad=pad,
            seed=seed,
        )
        for i, (s, part) in enumerate(zip(splits, samples))
    ]
    return ConcatDataset(parts), [len(p) for p in parts]

"""The torch Dataset over one data set's samples, the joint ConcatDataset, and the collates.

Test-time items are exactly erudite_edge.core.preprocess.preprocess of the loaded image, which is what
every deployed backend computes. An unreadable image never stops training: the item comes back
with ok=False (counted in "skipped", the file warned about once). A training item then carries a
stand-in: a readable image of the same data set, drawn with a seeded generator, so every batch keeps
each data set's row count on every rank (DDP ranks all run the same steps; see `stand_in`).
Evaluation drops unreadable items (collate_skip_bad): every image is scored at most once.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, default_collate

from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, load_image, preprocess
from erudite_edge.errors import BadImageError, UsageError
from train.data.augment import default_pad, train_transform
from train.data.samples import DatasetSplits, Sample

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

    Items: dict(image=float32 tensor (CHW per spec), joint=int, dataset=int, local=int, ok=bool,
    stand_in=bool). Augmentation draws from a numpy Generator seeded by (seed, dataset_index, epoch,
    rank) and, inside a DataLoader worker, that worker's seed. So it differs between epochs, DDP ranks
    and workers, and a run resumed at epoch e augments exactly as an uninterrupted one: call
    `set_epoch(e)` at the start of each epoch (and seed the DataLoader's generator per epoch and rank,
    as the trainer does).
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
        rank: int = 0,
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
        self.rank = int(rank)
        self._unreadable: set[int] = set()  # indices found unreadable in this process
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
            entropy = [self.seed % 2**64, self.dataset_index, self.epoch, worker_seed, self.rank]
            self._rng, self._rng_key = np.random.default_rng(entropy), key
        return self._rng

    def load(self, index: int) -> np.ndarray:
        """The model input for one sample (augmented when training); BadImageError if unreadable."""
        sample = self.samples[index]
        rgb = load_sample_image(sample.path, self.crop_bottom)
        if self.train:
            return train_transform(rgb, self.spec, self.pad, self._generator())
        return preprocess(rgb, self.spec)

    def _try_load(self, index: int) -> np.ndarray | None:
        if index in self._unreadable:
            return None
        try:
            return self.load(index)
        except BadImageError as e:
            self._unreadable.add(index)
            _warn_once(self.samples[index].path, str(e))
            return None

    def stand_in(self, index: int) -> tuple[int, np.ndarray]:
        """A readable image of this data set for the unreadable item `index`: (its index, its input).

        Candidates come in an order drawn from (seed, dataset_index, epoch, rank, index), so the choice
        is reproducible and a resumed run picks the same one. A data set with no readable image at all
        is a one-line UsageError (training cannot go on without it).
        """
        order = np.random.default_rng([self.seed % 2**64, self.dataset_index, self.epoch, self.rank, index]).permutation(len(self))
        for j in order.tolist():
            if j != index:
                x = self._try_load(j)
                if x is not None:
                    return j, x
        root = os.path.dirname(self.samples[index].path) if self.samples else "?"
        raise UsageError(f"data set #{self.dataset_index}: none of its {len(self)} training images is readable "
                         f"(e.g. under {root}); fix or remove the files")

    def __getitem__(self, index: int) -> dict[str, Any]:
        x, used, ok, stand_in = self._try_load(index), index, True, False
        if x is None:
            ok = False
            if self.train:
                used, x = self.stand_in(index)
                stand_in = True
            else:
                x = np.zeros(self._bad_shape, dtype=np.float32)
        sample = self.samples[used]
        return {
            "image": torch.from_numpy(x),
            "joint": self.joint_offset + sample.label,
            "dataset": self.dataset_index,
            "local": sample.label,
            "ok": ok,
            "stand_in": stand_in,
        }


def collate_skip_bad(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate the readable items (image, joint, dataset, local) and count the unreadable ones in "skipped".

    For evaluation: every image is scored at most once. A batch whose every image is unreadable comes
    back with zero rows, so the caller can skip it.
    """
    return _collate(batch, [b for b in batch if b["ok"]])


def collate_fill_bad(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For training: every item keeps its row, so a balanced batch keeps its composition (every data set
    keeps its row count on every rank: BatchNorm in G_n, the meta-test split and DDP's gradient
    all-reduce all rely on it). An unreadable item counts in "skipped"; its row holds the stand-in the
    training dataset drew from the same data set (`ImageListDataset.stand_in`). An unreadable item
    without a stand-in (from a dataset built with train=False) is an error: dropping its row would
    let DDP ranks diverge."""
    missing = [b for b in batch if not b["ok"] and not b.get("stand_in", False)]
    if missing:
        raise ValueError("collate_fill_bad: an unreadable item has no stand-in; build the dataset with train=True "
                         "(or use collate_skip_bad for evaluation)")
    return _collate(batch, list(batch))


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
    rank: int = 0,
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
            rank=rank,
        )
        for i, (s, part) in enumerate(zip(splits, samples))
    ]
    return ConcatDataset(parts), [len(p) for p in parts]

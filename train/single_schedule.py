"""Single's schedule: how many epochs each of its separately trained parts runs (train.single).

A fair Single sees as much data as the joint run it is compared with (the same --epochs, batch and
--steps-per-epoch over all the data sets):

- each fine model at least as many images of its data set as the joint run draws of that data set: the
  joint run's balanced batches cycle a small data set many times per epoch (an epoch is as many batches as
  the largest data set fills), while a run on that data set alone has short epochs, so it takes more of them;
- the coarse model (balanced batches over all the data sets, as the joint run) at least as many images in
  total as the joint run, which is the same epochs where its splits match the joint run's.

`parts_epochs` (`--parts-epochs coarse=2,faces=13`) sets a part's epochs by hand; the parts it does not name
keep the fair value. The schedule in effect is written to the run's config (parts_epochs) and, with the
images each part trains on, to run.json (schedule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from erudite_edge.errors import UsageError
from train.config import TrainConfig
from train.data.samples import DatasetSplits
from train.data.split import split_validation
from train.sampler import BalancedBatchSampler


@dataclass(frozen=True)
class PartSchedule:
    epochs: int
    steps_per_epoch: int
    images: int  # images the part trains on, over all its epochs and data sets
    joint_images: int  # what the joint run trains on of the same data (its data set's share; for coarse, all)
    rule: str  # "fair" (computed) | "given" (parts_epochs)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "images": self.images,
                "joint_images": self.joint_images, "rule": self.rule}


def train_sizes(splits: Sequence[DatasetSplits], cfg: TrainConfig) -> list[int]:
    """The training images of each data set once the validation split is carved out, as train.loop.Trainer does."""
    if cfg.val_fraction <= 0:
        return [len(s.train) for s in splits]
    return [len(split_validation(s.train, cfg.val_fraction, cfg.seed)[0]) for s in splits]


def steps_per_epoch(sizes: Sequence[int], cfg: TrainConfig) -> int:
    """One epoch's steps of a run over data sets of these sizes (the balanced sampler's length, capped)."""
    n = len(BalancedBatchSampler(sizes, cfg.batch_per_dataset))
    return n if cfg.steps_per_epoch is None else min(n, cfg.steps_per_epoch)


def fair_schedule(cfg: TrainConfig, splits: Sequence[DatasetSplits], coarse: Sequence[DatasetSplits]) -> dict[str, PartSchedule]:
    """Each part's epochs ("coarse", then each data set's name): the fair value, or parts_epochs where it names the part."""
    given = dict(cfg.parts_epochs or {})
    names = ["coarse", *(s.name for s in splits)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"--parts-epochs {', '.join(unknown)}: no such part; the parts are {', '.join(names)}")
    sizes = train_sizes(splits, cfg)
    joint_per_dataset = cfg.epochs * steps_per_epoch(sizes, cfg) * cfg.batch_per_dataset
    plan = {"coarse": (train_sizes(coarse, cfg), joint_per_dataset * len(splits))}
    plan.update({s.name: ([n], joint_per_dataset) for s, n in zip(splits, sizes)})
    out: dict[str, PartSchedule] = {}
    for name in names:
        part_sizes, need = plan[name]
        steps = steps_per_epoch(part_sizes, cfg)
        per_epoch = steps * cfg.batch_per_dataset * len(part_sizes)
        epochs = given[name] if name in given else max(cfg.epochs, math.ceil(need / per_epoch))
        out[name] = PartSchedule(epochs, steps, epochs * per_epoch, need, "given" if name in given else "fair")
    return out


def schedule_line(schedule: dict[str, PartSchedule]) -> str:
    """One line for the log: each part's epochs and images against the joint run's."""
    parts = [f"{name} {p.epochs} epoch(s) x {p.steps_per_epoch} steps = {p.images} images (joint run: {p.joint_images}"
             f"{', given' if p.rule == 'given' else ''})" for name, p in schedule.items()]
    return "single: schedule " + "; ".join(parts)

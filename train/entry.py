"""`train()`: the entry point of a training run (`erudite-edge train`, the demo, the measurements). It owns the
choice between the two ways a run trains: `--variant single` trains separate runs (train.single.train_single,
each part an ordinary train.loop.Trainer run) and every other variant one Trainer run, torchrun's DDP included.

It sits above train.loop and train.single so that they import one way: single builds on loop's Trainer, and
neither imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

from erudite_edge.errors import UsageError
from train.config import TrainConfig
from train.loop import Trainer
from train.single import train_single
from train.variants import VARIANTS


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, resume_from: str | None = None) -> Path:
    if cfg.variant in VARIANTS and VARIANTS[cfg.variant].separate:
        if resume_from is not None:
            raise UsageError(f"--resume-from: a --variant {cfg.variant} run resumes each of its parts from its last "
                             "checkpoint; use --resume")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError(f"--variant {cfg.variant} trains its models one after the other in one process; "
                             "run it without torchrun (or use --variant single-joint)")
        return train_single(cfg, resume=resume, progress=progress)
    trainer = Trainer(cfg, resume=resume, progress=progress, resume_from=resume_from)
    try:
        return trainer.run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

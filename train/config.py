"""The training run's configuration: command-line options and `--config FILE.yaml` hold the same keys."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from erudite_edge.errors import UsageError


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # NAME=PATH or NAME=FORMAT:PATH, in joint-label order
    out: str = "runs/erudite"
    variant: str = "ours"
    backbone: str = "resnet50"
    pretrained: bool = True
    epochs: int = 100
    batch_per_dataset: int = 16
    input_size: int = 224
    embed_dim: int = 512
    gate: str = "channel"
    classifier: str = "mlp"
    hidden: int = 512
    lr: float = 0.1
    backbone_lr: float = 0.01
    theta_lr: float | None = None
    alpha: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_fraction: float = 0.1  # carved from training data to choose the best epoch (never the test set)
    workers: int = 4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler)
    steps_per_epoch: int | None = None  # cap, for smoke runs
    eval_batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"{p}: config file not found") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(d, dict):
        raise UsageError(f"{p}: expected a mapping of option: value")
    return {k.replace("-", "_"): v for k, v in d.items()}

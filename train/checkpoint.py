"""Checkpoints: weights in safetensors, facts in JSON, optimiser state for resuming.

    RUN/
      last.safetensors  last.json  last.state.pt     written every epoch (state: optimisers, schedulers, RNG)
      best.safetensors  best.json                    the epoch with the best validation accuracy
      run.json                                       the run's config (written once at start)

The JSON holds the model config, the label table (joint names + which data set each class belongs
to), the preprocessing spec, the variant, epoch and metrics: everything export needs. Every file is
written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from erudite_edge.errors import UsageError
from erudite_edge.fileio import atomic_path, write_json_atomic
from erudite_edge.labels import LabelSpace
from erudite_edge.preprocess import PreprocessSpec

from .model import ModelConfig, build_model

CHECKPOINT_FORMAT = "erudite-edge-checkpoint"


class CheckpointError(UsageError):
    """A checkpoint that is missing, truncated or not ours."""


@dataclass
class Checkpoint:
    path: Path  # the .safetensors file
    meta: dict[str, Any]
    model_config: ModelConfig
    labels: LabelSpace
    preprocess: PreprocessSpec

    @property
    def variant(self) -> str:
        return self.model_config.variant

    @property
    def is_zoo(self) -> bool:
        return self.model_config.variant == "single"

    def build_model(self, map_location: str = "cpu") -> nn.Module:
        cfg = ModelConfig.from_dict({**self.model_config.to_dict(), "pretrained": False})
        model = build_model(cfg)
        try:
            state = load_file(str(self.path), device=map_location)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{self.path}: cannot read the weights ({e}); the file is truncated or not safetensors") from e
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{self.path}: weights do not fit a {cfg.variant}/{cfg.backbone} model "
                f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})"
            )
        return model.eval()


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    tag: str,
    model: nn.Module,
    *,
    model_config: ModelConfig,
    labels: LabelSpace,
    preprocess: PreprocessSpec,
    extra: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    net = getattr(model, "module", model)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    weights = run_dir / f"{tag}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT, "variant": model_config.variant})
    if train_state is not None:
        with atomic_path(run_dir / f"{tag}.state.pt") as tmp:
            torch.save(train_state, tmp)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "weights": weights.name,
        "model": model_config.to_dict(),
        "labels": labels.to_dict(),
        "preprocess": preprocess.to_dict(),
        **(extra or {}),
    }
    write_json_atomic(run_dir / f"{tag}.json", meta)
    return weights


def resolve(path: str | os.PathLike[str], prefer: str = "best") -> Path:
    """A run directory (its best checkpoint, else its last), a .safetensors file, or its .json."""
    p = Path(path)
    if p.is_dir():
        for tag in (prefer, "last", "best"):
            if (p / f"{tag}.safetensors").is_file():
                return p / f"{tag}.safetensors"
        raise CheckpointError(f"{p}: no best.safetensors or last.safetensors in this run directory")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found (pass a run directory or a .safetensors file)")
    return p


def load_checkpoint(path: str | os.PathLike[str], prefer: str = "best") -> Checkpoint:
    weights = resolve(path, prefer)
    meta_path = weights.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; a checkpoint is a .safetensors file with its .json beside it") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e}); the file is truncated") from e
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{meta_path}: not an erudite-edge checkpoint (format field missing or foreign)")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        labels = LabelSpace.from_dict(meta["labels"])
        preprocess = PreprocessSpec.from_dict(meta["preprocess"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path}: lacks {e}") from e
    if cfg.class_counts != labels.sizes:
        raise CheckpointError(f"{meta_path}: model class counts {cfg.class_counts} disagree with the label table {labels.sizes}")
    return Checkpoint(weights, meta, cfg, labels, preprocess)

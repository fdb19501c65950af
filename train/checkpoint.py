"""Checkpoints: weights in safetensors, facts in JSON, optimiser state for resuming; each one whole or absent.

    RUN/
      last/        model.safetensors  checkpoint.json  state.pt  manifest.json    written every epoch
      last.prev/   the previous complete `last` (the fallback when `last` is damaged)
      best/        the epoch with the best validation accuracy (hard links to that epoch's `last` files)
      run.json     the run's config (written once at start); history.jsonl, one line per epoch

A checkpoint directory is written under a temporary name (`.last.tmp-PID`): every file written and
fsynced, then manifest.json (epoch, size and sha256 of every file) written last, then the directory is
renamed into place (the previous one first moved to `last.prev`). A process killed at any point leaves
the last complete checkpoint: a directory without a manifest, or whose files do not match it, is never
taken. checkpoint.json holds the model config, the label table, the preprocessing spec, the variant,
epoch and metrics: everything export needs.

Runs written by erudite-edge 0.1 before this layout (RUN/last.safetensors + last.json + last.state.pt,
no manifest) still load; they are not verified.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from erudite_edge.core.fileio import (
    fsync_dir,
    os_error_line,
    sha256_file,
    stop_signals_deferred,
    write_bytes_synced,
)
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import UsageError
from train.model import build_model
from train.model_spec import ModelConfig

CHECKPOINT_FORMAT = "erudite-edge-checkpoint"
MANIFEST_FORMAT = "erudite-edge-checkpoint-manifest"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
TAGS = ("best", "last")
Warn = Callable[[str], None]


class CheckpointError(UsageError):
    """A checkpoint that is missing, truncated, damaged or not ours."""


class NoCheckpoint(CheckpointError):
    """No checkpoint of that name at all (as opposed to a damaged one)."""


class CheckpointWriteError(UsageError):
    """A checkpoint that could not be written (disk full, read-only, permission denied)."""


@dataclass
class Checkpoint:
    path: Path  # the weights file (.safetensors)
    meta: dict[str, Any]
    model_config: ModelConfig
    labels: LabelSpace
    preprocess: PreprocessSpec
    state_path: Path | None = None  # optimiser/scheduler/RNG state, when the checkpoint can be resumed
    verified: bool = False  # its manifest was checked (False only for runs of the older layout)

    @property
    def variant(self) -> str:
        return self.model_config.variant

    @property
    def is_zoo(self) -> bool:
        from train.variants import VARIANTS

        v = VARIANTS.get(self.model_config.variant)
        return v is not None and v.zoo

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", -1))

    def weights(self, map_location: str = "cpu") -> dict[str, torch.Tensor]:
        try:
            return load_file(str(self.path), device=map_location)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{self.path}: cannot read the weights ({e}); the file is truncated or not safetensors") from e

    def train_state(self) -> dict[str, Any]:
        if self.state_path is None or not self.state_path.is_file():
            raise CheckpointError(f"{self.path.parent}: this checkpoint holds no training state (state.pt); "
                                  "it can be exported or evaluated but not resumed")
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... on a damaged file
            raise CheckpointError(f"{self.state_path}: cannot read the training state ({type(e).__name__}); "
                                  "the file is truncated or damaged") from e

    def build_model(self, map_location: str = "cpu") -> nn.Module:
        cfg = ModelConfig.from_dict({**self.model_config.to_dict(), "pretrained": False})
        model = build_model(cfg)
        state = self.weights(map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{self.path}: weights do not fit a {cfg.variant}/{cfg.backbone} model "
                f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})"
            )
        return model.eval()


# -- writing --------------------------------------------------------------------------------------

def _manifest(epoch: int, folder: Path, names: list[str]) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "epoch": epoch,
        "files": {n: {"size": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in names},
    }


def _commit(tmp: Path, target: Path, keep_previous: bool) -> None:
    """Rename the complete `tmp` to `target`; the old `target` goes to `target.prev` (or away)."""
    prev = target.with_name(target.name + ".prev")
    if target.exists() and prev.exists():
        shutil.rmtree(prev)
    with stop_signals_deferred():  # a SIGTERM between the renames would leave no `target` (only `.prev`)
        if target.exists():
            os.replace(target, prev)
        os.replace(tmp, target)
    fsync_dir(target.parent)
    if not keep_previous and prev.exists():
        shutil.rmtree(prev, ignore_errors=True)


def _write_checkpoint_dir(run_dir: Path, tag: str, files: dict[str, bytes | Path], epoch: int, keep_previous: bool) -> Path:
    """Write `files` (bytes to write, or a Path to hard-link) as checkpoint `tag`; the manifest last."""
    tmp = run_dir / f".{tag}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            for name, content in files.items():
                if isinstance(content, Path):
                    try:
                        os.link(content, tmp / name)
                    except OSError:
                        shutil.copyfile(content, tmp / name)
                else:
                    write_bytes_synced(tmp / name, content)
            manifest = json.dumps(_manifest(epoch, tmp, list(files)), indent=2).encode() + b"\n"
            write_bytes_synced(tmp / MANIFEST_FILE, manifest)
            fsync_dir(tmp)
            _commit(tmp, run_dir / tag, keep_previous)
        except OSError as e:
            raise CheckpointWriteError(
                os_error_line(e, run_dir / tag, "cannot write the checkpoint") + "; the previous complete checkpoint is kept"
            ) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return run_dir / tag / WEIGHTS_FILE


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
    keep_previous: bool | None = None,
) -> Path:
    """Write checkpoint `tag` (a directory RUN/tag) whole or not at all; returns its weights file."""
    run_dir = Path(run_dir)
    net = getattr(model, "module", model)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "weights": WEIGHTS_FILE,
        "model": model_config.to_dict(),
        "labels": labels.to_dict(),
        "preprocess": preprocess.to_dict(),
        **(extra or {}),
    }
    files: dict[str, bytes | Path] = {
        WEIGHTS_FILE: save_safetensors_bytes(state, metadata={"format": CHECKPOINT_FORMAT, "variant": model_config.variant}),
        META_FILE: (json.dumps(meta, indent=2) + "\n").encode(),
    }
    if train_state is not None:
        buf = io.BytesIO()
        torch.save(train_state, buf)
        files[STATE_FILE] = buf.getvalue()
    keep = (tag == "last") if keep_previous is None else keep_previous
    return _write_checkpoint_dir(run_dir, tag, files, int(meta.get("epoch", -1)), keep)


def copy_checkpoint(run_dir: str | os.PathLike[str], source_tag: str, tag: str) -> Path:
    """Checkpoint `tag` as a copy of `source_tag` (hard links: checkpoint files are never modified)."""
    run_dir = Path(run_dir)
    src = run_dir / source_tag
    manifest = verify_checkpoint_dir(src)
    files: dict[str, bytes | Path] = {name: src / name for name in manifest["files"]}
    return _write_checkpoint_dir(run_dir, tag, files, int(manifest["epoch"]), keep_previous=False)


# -- verifying and finding ------------------------------------------------------------------------

def verify_checkpoint_dir(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a complete checkpoint directory; CheckpointError naming the first bad file."""
    folder = Path(folder)
    mpath = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not found")
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: incomplete checkpoint (no {MANIFEST_FILE}; the writer was stopped)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest ({e})") from e
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != MANIFEST_FORMAT or WEIGHTS_FILE not in files:
        raise CheckpointError(f"{mpath}: not an erudite-edge checkpoint manifest")
    for name, fact in files.items():
        p = folder / name
        if not p.is_file():
            raise CheckpointError(f"{p}: listed in {MANIFEST_FILE} but missing")
        if p.stat().st_size != fact.get("size") or sha256_file(p) != fact.get("sha256"):
            raise CheckpointError(f"{p}: does not match the sha256 in {MANIFEST_FILE} (changed, truncated or damaged)")
    return manifest


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST_FILE).exists()


def _legacy_weights(run_dir: Path, tag: str) -> Path | None:
    p = run_dir / f"{tag}.safetensors"
    return p if p.is_file() else None


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a run directory already holds a checkpoint of either layout (complete or not)."""
    run_dir = Path(run_dir)
    return any((run_dir / t).exists() or (run_dir / f"{t}.prev").exists() or (run_dir / f"{t}.safetensors").exists()
               for t in TAGS)


def find_checkpoint(run_dir: str | os.PathLike[str], tag: str, warn: Warn | None = None) -> Path:
    """The directory (or, for an older run, the .safetensors file) of the newest complete checkpoint `tag`:
    RUN/tag, else RUN/tag.prev with a warning naming what was wrong with RUN/tag."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    for candidate in (run_dir / tag, run_dir / f"{tag}.prev"):
        if not candidate.exists():
            continue
        try:
            verify_checkpoint_dir(candidate)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems and warn is not None:
            warn(f"{problems[0]}; using the previous complete checkpoint {candidate}")
        return candidate
    legacy = _legacy_weights(run_dir, tag)
    if legacy is not None and not problems:
        return legacy
    if problems:
        raise CheckpointError(problems[0] + "; and no previous complete checkpoint")
    raise NoCheckpoint(f"{run_dir}: no {tag} checkpoint in this run directory")


def resolve(path: str | os.PathLike[str], prefer: str = "best", warn: Warn | None = None) -> Path:
    """A checkpoint directory, a run directory (its `prefer` checkpoint, else the other), a .safetensors
    file or its .json -> a checkpoint directory (verified) or an older-layout .safetensors file."""
    p = Path(path)
    if is_checkpoint_dir(p) or (p.is_dir() and (p / WEIGHTS_FILE).exists()):
        verify_checkpoint_dir(p)
        return p
    if p.is_dir():
        damaged: list[CheckpointError] = []
        for tag in dict.fromkeys((prefer, *TAGS)):
            try:
                found = find_checkpoint(p, tag, warn)
            except NoCheckpoint:
                continue
            except CheckpointError as e:
                damaged.append(e)
                continue
            if damaged and warn is not None:
                warn(f"{damaged[0]}; using {found}")
            return found
        if damaged:
            raise damaged[0]
        raise NoCheckpoint(f"{p}: no best or last checkpoint in this run directory")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors") if p.name != META_FILE else p.parent / WEIGHTS_FILE
    if p.name == WEIGHTS_FILE and is_checkpoint_dir(p.parent):
        verify_checkpoint_dir(p.parent)
        return p.parent
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found (pass a run directory, a checkpoint directory or a .safetensors file)")
    if not p.is_file() or p.suffix != ".safetensors":
        raise CheckpointError(f"{p}: not a checkpoint (pass a run directory, a checkpoint directory or a .safetensors file)")
    return p


def _warn_on_stderr(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)


def load_checkpoint(path: str | os.PathLike[str], prefer: str = "best", warn: Warn | None = _warn_on_stderr) -> Checkpoint:
    """The checkpoint at `path`; a damaged one is passed over for the next complete one, with `warn`."""
    found = resolve(path, prefer, warn)
    if found.is_dir():
        weights, meta_path, state = found / WEIGHTS_FILE, found / META_FILE, found / STATE_FILE
        verified = True
    else:  # the older flat layout: RUN/tag.safetensors + RUN/tag.json (+ RUN/last.state.pt)
        weights, meta_path, state = found, found.with_suffix(".json"), found.with_name(found.stem + ".state.pt")
        verified = False
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; a checkpoint is a .safetensors file with its .json beside it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e}); the file is truncated") from e
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{meta_path}: not an erudite-edge checkpoint (format field missing or foreign)")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        labels = LabelSpace.from_dict(meta["labels"])
        preprocess = PreprocessSpec.from_dict(meta["preprocess"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path}: lacks {e}") from e
    if cfg.class_counts != labels.sizes:
        raise CheckpointError(f"{meta_path}: model class counts {cfg.class_counts} disagree with the label table {labels.sizes}")
    return Checkpoint(weights, meta, cfg, labels, preprocess, state if state.is_file() else None, verified)


def resume_checkpoint(run_dir: str | os.PathLike[str], resume_from: str = "last", warn: Warn | None = None) -> Checkpoint:
    """The checkpoint a resumed run starts from: `last` (falling back to `last.prev`, then to an older-layout
    run's files), `best`, or a path to a checkpoint directory."""
    run_dir = Path(run_dir)
    if resume_from in TAGS:
        ckpt = load_checkpoint(find_checkpoint(run_dir, resume_from, warn))
    else:
        ckpt = load_checkpoint(resume_from, prefer="last", warn=warn)
    if ckpt.state_path is None:
        raise CheckpointError(f"{ckpt.path.parent if ckpt.verified else ckpt.path}: holds no training state (state.pt); "
                              "resume from `last` or retrain")
    if not ckpt.verified:  # older layout: its three files were written one by one
        st_epoch = ckpt.train_state().get("epoch")
        if st_epoch is None or int(st_epoch) != ckpt.epoch:
            raise CheckpointError(f"{run_dir}: {ckpt.path.name} (epoch {ckpt.epoch}) and {ckpt.state_path.name} "
                                  f"(epoch {st_epoch}) disagree; the run was stopped while saving. Resume from best, or retrain")
    return ckpt

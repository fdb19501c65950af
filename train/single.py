"""The paper's Single, as the paper trains it: "each dataset is trained separately", plus a coarse-grained
classifier that picks the data set (Section 5.2.2).

    RUN/
      parts/coarse/          a `baseline` run over the N data sets, each relabelled as one class (its name):
                             the joint label space is then the data sets, so the balanced sampler, the
                             schedule, validation and checkpoints of an ordinary run train the coarse model
      parts/fine.<name>/     a `baseline` run on data set <name> alone: its own sampler, epoch length and
                             cosine schedule, its own validation split and best epoch
      best/, last/           the zoo (checkpoint variant "single"), assembled from each part's `best`
                             (its own selection rule: --select), exported by `export zoo` as before
      run.json, config.yaml  the zoo run's options, with each part's epochs (parts_epochs): by default the fair
                             schedule of train/single_schedule.py (each fine model sees at least as many images
                             of its data set as the joint run of --epochs, the coarse model as many in total)

Every part is an ordinary run (train.loop.Trainer): it is checkpointed every epoch and `--resume` continues
each part where it stopped (finished parts are kept as they are), then assembles the zoo again.
`single-joint` (train.two_stage.ZooStep) keeps the older form: the N+1 models stepped together on the
balanced batches of one run.

This module owns the separate runs and the zoo's assembly; it builds on train.loop (never the reverse), and
train.entry.train hands `--variant single` to train_single.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from erudite_edge.core.fileio import write_json_atomic
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import UsageError
from train.checkpoint import copy_checkpoint, has_checkpoint, load_checkpoint, save_checkpoint
from train.config import TrainConfig, write_effective_config
from train.data import build_label_space, load_datasets
from train.data.samples import DatasetSplits, Sample
from train.loop import Trainer
from train.model import build_model
from train.model_spec import ModelConfig
from train.single_schedule import fair_schedule, schedule_line

log = logging.getLogger("erudite_edge.train")

COARSE = "coarse"


def coarse_splits(splits: list[DatasetSplits]) -> list[DatasetSplits]:
    """Each data set as a one-class data set named after it: the joint label space over these is the
    coarse task (which data set an image comes from), and balanced batches keep the data sets even."""
    return [dataclasses.replace(s, classes=[s.name], train=[Sample(x.path, 0) for x in s.train],
                                test=[Sample(x.path, 0) for x in s.test]) for s in splits]


def part_dirs(out: Path, splits: list[DatasetSplits]) -> dict[str, Path]:
    return {COARSE: out / "parts" / COARSE, **{s.name: out / "parts" / f"fine.{s.name}" for s in splits}}


def _part_config(cfg: TrainConfig, out: Path, data: list[str], epochs: int, finetune: Path | None = None) -> TrainConfig:
    return dataclasses.replace(cfg, variant="baseline", out=str(out), data=data, epochs=epochs, parts_epochs=None,
                               finetune=None if finetune is None else str(finetune), distill=None)


def train_single(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train the coarse model and the N fine models one after the other, then write the zoo checkpoint."""
    out = Path(cfg.out)
    if has_checkpoint(out) and not resume:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (out / "run.json").is_file():
        raise UsageError(f"--resume: {out / 'run.json'} not found; nothing to resume in {out}")
    if len(cfg.data) < 2:
        raise UsageError("--variant single needs two or more data sets (a coarse model picks one of them)")
    cfg.validate()
    splits = load_datasets(cfg.data)
    labels = build_label_space(splits)
    dirs = part_dirs(out, splits)
    coarse = coarse_splits(splits)
    schedule = fair_schedule(cfg, splits, coarse)
    out.mkdir(parents=True, exist_ok=True)
    # the schedule in effect is the run's config: config.yaml and run.json hold every part's epochs (a resumed run
    # keeps them), written before any part trains
    cfg = dataclasses.replace(cfg, parts_epochs={name: p.epochs for name, p in schedule.items()})
    print(schedule_line(schedule), file=sys.stderr)
    run_record = {"train_config": cfg.to_dict(), "labels": labels.to_dict(), "world_size": 1,
                  "parts": {k: str(v) for k, v in dirs.items()}, "schedule": {k: p.to_dict() for k, p in schedule.items()}}
    write_json_atomic(out / "run.json", run_record)
    write_effective_config(out, cfg)

    trainers: dict[str, Trainer] = {}
    plan = [(COARSE, cfg.data, coarse)] + [(s.name, [spec], [s]) for s, spec in zip(splits, cfg.data)]
    starts: dict[str, Path] = {}
    if cfg.finetune:  # a pruned zoo: each part fine-tunes from its share of it (train.single_finetune)
        from train.single_finetune import part_starts

        prefixes = [f"{COARSE}."] + [f"fine.{i}." for i in range(len(splits))]
        starts = part_starts(cfg, out, [(name, prefix, build_label_space(ps)) for (name, _, ps), prefix in zip(plan, prefixes)])
    for name, data, part_splits in plan:
        part_out = dirs[name]
        print(f"single: training {'the coarse model' if name == COARSE else 'the model of ' + name} in {part_out} "
              f"({schedule[name].epochs} epoch(s))", file=sys.stderr)
        t = Trainer(_part_config(cfg, part_out, data, schedule[name].epochs, starts.get(name)), resume=resume and has_checkpoint(part_out),
                    progress=progress, splits=part_splits)
        t.run()
        trainers[name] = t

    spec = trainers[COARSE].spec
    write_json_atomic(out / "run.json", {**run_record, "preprocess": spec.to_dict()})
    return assemble_zoo(cfg, out, dirs, splits, labels, spec, trainers[COARSE].model_config)


def assemble_zoo(cfg: TrainConfig, out: Path, dirs: dict[str, Path], splits: list[DatasetSplits], labels: LabelSpace,
                 spec: PreprocessSpec, coarse_config: ModelConfig) -> Path:
    """RUN/last and RUN/best: the ZooModel holding each part's `best` weights (coarse -> .coarse, fine n -> .fine.n)."""
    state: dict[str, torch.Tensor] = {}
    parts_meta: dict[str, dict[str, Any]] = {}
    part_metrics: dict[str, dict[str, Any]] = {}
    pruned: dict[str, dict[str, int]] = {}  # a fine-tuned pruned zoo: each part's widths under its prefix
    sparse: list[str] = []
    for i, name in enumerate([COARSE, *labels.datasets]):
        ckpt = load_checkpoint(dirs[name], prefer="best")
        prefix = "coarse." if name == COARSE else f"fine.{i - 1}."
        state.update({prefix + k: v for k, v in ckpt.weights().items()})
        pruned.update({prefix + k: v for k, v in (ckpt.model_config.pruned or {}).items()})
        sparse += [prefix + k for k in (ckpt.meta.get("sparsity") or {}).get("layers", [])]
        m = ckpt.meta.get("metrics") or {}
        parts_meta[name] = {"run": str(dirs[name]), "epoch": ckpt.epoch, "metrics": m}
        part_metrics[name] = {"epoch": ckpt.epoch + 1, "val_mean_top1": m.get("val_mean_top1"), "train_top1": m.get("train_top1")}
    zoo_cfg = dataclasses.replace(coarse_config, variant="single", class_counts=list(labels.sizes), pretrained=False,
                                  pruned=pruned or None)
    zoo = build_model(zoo_cfg)
    zoo.load_state_dict(state, strict=True)
    metrics = {"parts": part_metrics}
    extra: dict[str, Any] = {"epoch": cfg.epochs - 1, "metrics": metrics, "train_config": cfg.to_dict(), "parts": parts_meta,
                             "data": [{"name": s.name, "format": s.format, "root": str(s.root)} for s in splits]}
    if sparse:
        extra["sparsity"] = {**load_checkpoint(dirs[COARSE], prefer="best").meta["sparsity"], "layers": sparse}
    save_checkpoint(out, "last", zoo, model_config=zoo_cfg, labels=labels, preprocess=spec, extra=extra)
    copy_checkpoint(out, "last", "best")
    log.info("single: zoo assembled in %s", out)
    return out

"""The training loop of one run (Trainer): balanced batches, the variant's step, cosine schedules, validation on a
split carved from the training data, last/best checkpoints, resume, DDP through torchrun, AMP on CUDA.

train.single builds its separate runs on Trainer; train.entry.train, above both, picks between them."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from erudite_edge.core.fileio import remove_stale_temporaries, write_json_atomic, write_text_atomic
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import UsageError
from train.checkpoint import (
    Checkpoint,
    copy_checkpoint,
    has_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from train.config import TrainConfig, write_effective_config
from train.data import build_label_space, collate_fill_bad, collate_skip_bad, load_datasets, make_joint_dataset, split_validation
from train.data.samples import DatasetSplits
from train.evaluate import evaluate
from train.model import EruditeNet, ZooModel, build_model
from train.model_spec import ModelConfig
from train.optim import OptimConfig, build_optimizers, cosine_schedulers
from train.sampler import BalancedBatchSampler
from train.two_stage import PMGStep, TwoStageStep, ZooStep
from train.variants import VARIANTS

log = logging.getLogger("erudite_edge.train")


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistInfo:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (NCCL on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        idx = dist_info.local_rank if dist_info.world_size > 1 else (int(name.split(":")[1]) if ":" in name else 0)
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return torch.device(name)


def amp_settings(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """bf16 on GPUs that compute it natively (Ampere and later); fp16 with a GradScaler elsewhere (T4, V100).
    `including_emulation=False`: this torch's default counts emulated bf16 as supported, which is slow."""
    if not enabled or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def use_sync_bn(requested: bool | None, device: torch.device, world_size: int) -> bool:
    """SyncBatchNorm when training on several CUDA processes (default on there). torch's SyncBatchNorm runs
    on GPUs only: elsewhere (gloo on CPU) every process normalises over its own rows, with a warning
    when it was asked for."""
    if world_size <= 1 or requested is False:
        return False
    if device.type != "cuda":
        if requested:
            log.warning("--sync-bn: SyncBatchNorm runs on CUDA only; on %s each process normalises over its own rows",
                        device.type)
        return False
    return True


def loader_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """The DataLoader's generator for one epoch of one rank: worker seeds differ between ranks and epochs,
    and depend on nothing else, so a resumed run loads exactly as an uninterrupted one."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed % 2**32, rank, epoch]).generate_state(1, np.uint64)[0] >> 1))


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def model_config_for(cfg: TrainConfig, labels: LabelSpace, pretrained: bool) -> ModelConfig:
    """The network a run of `cfg` over `labels` builds (unpruned)."""
    return ModelConfig(
        variant=cfg.variant, backbone=cfg.backbone, class_counts=labels.sizes, embed_dim=cfg.embed_dim,
        gate=cfg.gate, classifier=cfg.classifier, hidden=cfg.hidden, pretrained=pretrained, weights=cfg.weights,
        head_bn_momentum=cfg.head_bn_momentum,
    )


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True, resume_from: str | None = None,
                 splits: list[DatasetSplits] | None = None):
        """`splits`: the data sets already loaded (train.single hands down relabelled ones); default: read cfg.data."""
        if cfg.variant in VARIANTS and VARIANTS[cfg.variant].separate:
            raise UsageError(f"--variant {cfg.variant} trains separate runs: use train.entry.train (train.single)")
        if not cfg.data:
            raise UsageError("no data: pass --data NAME=PATH once per data set (at least one)")
        if len(cfg.data) < 2 and cfg.variant not in ("baseline",):
            log.warning("only one data set: the erudite head and the meta step are made for two or more")
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out)
        self.dist = setup_distributed(cfg.device)
        cfg.validate(self.dist.world_size)
        self.device = resolve_device(cfg.device, self.dist)
        resume = resume or resume_from is not None
        source: Checkpoint | None = None
        if cfg.qat and resume:  # before its checkpoint is read: a QAT checkpoint holds no training state
            raise UsageError(f"{self.out} is a QAT run: it cannot be resumed; start it again with --qat {cfg.qat} "
                             "and a new --out (it is a few epochs)")
        if resume:
            if self.dist.is_main:
                remove_stale_temporaries(self.out)
            if resume_from is None and not has_checkpoint(self.out):
                raise UsageError(f"--resume: no checkpoint in {self.out}; nothing to resume")
            source = resume_checkpoint(self.out, resume_from or "last", warn=self._warn)
        elif has_checkpoint(self.out):
            raise UsageError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        self.splits = splits if splits is not None else load_datasets(cfg.data)
        self.labels = build_label_space(self.splits)
        self.model_config = model_config_for(cfg, self.labels, pretrained=cfg.pretrained and cfg.weights != "none" and not resume)
        # a pruned network's widths: from the checkpoint resumed, else from the pruned run fine-tuned
        finetune = self._finetune_source(cfg.finetune) if cfg.finetune and source is None else None
        pruned = (source or finetune).model_config.pruned if (source or finetune) is not None else None
        if cfg.qat and source is None:  # QAT of a pruned run: its widths
            from train.checkpoint import load_checkpoint

            pruned = load_checkpoint(cfg.qat, warn=self._warn).model_config.pruned
        self.model_config.pruned = pruned
        self.model = build_model(self.model_config)
        if finetune is not None:
            self.model.load_state_dict(finetune.weights())
        # 2:4 sparse layers (prune --sparsity) stay 2:4: their zeros are put back after every step
        self.sparsity: dict[str, Any] | None = (source or finetune).meta.get("sparsity") if (source or finetune) is not None else None
        self.sparse_masks = None
        trunk = self.model.coarse.backbone if isinstance(self.model, ZooModel) else self.model.backbone
        self.spec = PreprocessSpec.square(cfg.input_size, mean=tuple(trunk.pretrained_mean), std=tuple(trunk.pretrained_std))
        self.model.to(self.device)
        self.sync_bn = use_sync_bn(cfg.sync_bn, self.device, self.dist.world_size)
        if self.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)

        # data: validation carved from each data set's training split
        train_parts, val_parts = [], []
        for s in self.splits:
            if cfg.val_fraction > 0:
                tr, va = split_validation(s.train, cfg.val_fraction, cfg.seed)
            else:
                tr, va = list(s.train), []
            train_parts.append(tr)
            val_parts.append(va)
        self.train_set, sizes = make_joint_dataset(self.splits, self.labels, self.spec, True, samples=train_parts, seed=cfg.seed,
                                                   rank=self.dist.rank, pad=cfg.crop_pad)
        self.val_set, val_sizes = make_joint_dataset(self.splits, self.labels, self.spec, False, samples=val_parts)
        self.has_val = sum(val_sizes) > 0
        self.sampler = BalancedBatchSampler(sizes, cfg.batch_per_dataset, seed=cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        pin = self.device.type == "cuda"
        self.loader_generator = loader_generator(cfg.seed, self.dist.rank, 0)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate_fill_bad,
                                 num_workers=cfg.workers, pin_memory=pin, generator=self.loader_generator)
        # validation: each rank scores every world_size-th image (each image once), the predictions are gathered
        val_shard = range(self.dist.rank, len(self.val_set), self.dist.world_size)
        self.val_loader = DataLoader(self.val_set, batch_size=cfg.eval_batch_size, sampler=val_shard, collate_fn=collate_skip_bad,
                                     num_workers=cfg.workers, pin_memory=pin, persistent_workers=pin and cfg.workers > 0)
        self.steps_per_epoch = len(self.sampler) if cfg.steps_per_epoch is None else min(len(self.sampler), cfg.steps_per_epoch)
        self.qat: dict[str, Any] | None = self._prepare_qat(cfg.qat) if cfg.qat else None

        # optimisation
        ocfg = OptimConfig(lr=cfg.lr, backbone_lr=cfg.backbone_lr, theta_lr=cfg.theta_lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, theta_momentum=cfg.theta_momentum,
                           theta_weight_decay=cfg.theta_weight_decay, meta_alpha=cfg.meta_alpha)
        self.main_opt, self.theta_opt = build_optimizers(self.model, ocfg)
        self.schedulers = cosine_schedulers([self.main_opt, self.theta_opt], cfg.epochs * self.steps_per_epoch)
        wrapped = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        amp_dtype, scaler = amp_settings(self.device, cfg.amp)
        self.amp_dtype = amp_dtype
        pmg = VARIANTS[cfg.variant].pmg
        if pmg and self.dist.world_size > 1:
            raise UsageError(f"--variant {cfg.variant} trains in one process (its four sub-steps per batch are not "
                             "set up for DDP); run it without torchrun")
        if cfg.distill and (pmg or not isinstance(self.model, EruditeNet)):
            raise UsageError(f"--distill: distillation is added to the erudite step; --variant {cfg.variant} trains "
                             "otherwise (fine-tune it without --distill)")
        if pmg:
            self.step = PMGStep(wrapped, self.main_opt, self.theta_opt, ocfg.alpha_value, meta_features=cfg.meta_features, meta_bn=cfg.meta_bn,
                                amp_dtype=amp_dtype, scaler=scaler, seed=cfg.seed)
        elif isinstance(self.model, EruditeNet):
            distill = self._distillation(cfg.distill) if cfg.distill else None
            # Stage II differentiates through BatchNorm twice, which SyncBatchNorm cannot: there it
            # normalises over each rank's own rows (a one-process group per rank; every rank creates all).
            local = [dist.new_group([r]) for r in range(self.dist.world_size)] if self.sync_bn else None
            self.step = TwoStageStep(wrapped, self.main_opt, self.theta_opt, ocfg.alpha_value, meta_features=cfg.meta_features, meta_bn=cfg.meta_bn,
                                     amp_dtype=amp_dtype,
                                     scaler=scaler, seed=cfg.seed, local_bn_group=local[self.dist.rank] if local else None,
                                     distill=distill)
        else:
            self.step = ZooStep(wrapped, self.main_opt, amp_dtype=amp_dtype, scaler=scaler)
        self.start_epoch, self.best = 0, -1.0
        if source is not None:
            self._resume(source)
        if self.sparsity:
            from train.sparsity import Masks

            self.sparse_masks = Masks(self.model, self.sparsity["layers"])

    def _finetune_source(self, source: str) -> Checkpoint:
        """--finetune: the pruned checkpoint, whose widths and weights this run starts from."""
        from train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(source, warn=self._warn)
        if not ckpt.model_config.pruned and not ckpt.meta.get("sparsity"):
            raise UsageError(f"--finetune {source}: not a pruned checkpoint (prune it first with `erudite-edge prune`)")
        mine = self.model_config.to_dict() | {"pretrained": False, "pruned": None}
        if ckpt.model_config.to_dict() | {"pretrained": False, "pruned": None} != mine:
            raise UsageError(f"--finetune {source}: its model ({ckpt.variant}/{ckpt.model_config.backbone}) is not the one "
                             "these options build; give no model options (they are read from its run.json)")
        if ckpt.labels.to_dict() != self.labels.to_dict():
            raise UsageError(f"--finetune {source}: its label table differs from the --data given; use the run's data sets")
        return ckpt

    def _distillation(self, source: str) -> Any:
        """--distill RUN: that run's network (the unpruned teacher) on this device, frozen, in eval mode."""
        from train.checkpoint import load_checkpoint
        from train.distill import Distillation

        ckpt = load_checkpoint(source, warn=self._warn)
        if ckpt.labels.to_dict() != self.labels.to_dict():
            raise UsageError(f"--distill {source}: its label table differs from this run's; the teacher must predict the same joint labels")
        teacher = ckpt.build_model().to(self.device)
        return Distillation(teacher, self.cfg.distill_temperature, self.cfg.distill_weight)

    def _prepare_qat(self, source: str) -> dict[str, Any]:
        """QAT: the FP32 checkpoint's weights, fake quantizers in TensorRT's layout (train/qat.py), their
        input ranges calibrated on the first `qat_calib_batches` training batches, then fixed."""
        from train import qat
        from train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(source, warn=self._warn)
        if ckpt.model_config.to_dict() | {"pretrained": False} != self.model_config.to_dict() | {"pretrained": False}:
            raise UsageError(f"--qat {source}: its model ({ckpt.variant}/{ckpt.model_config.backbone}) is not the one these "
                             "options build; give the FP32 run's own --data and model options (or none: they are read "
                             "from its run.json)")
        if ckpt.labels.to_dict() != self.labels.to_dict():
            raise UsageError(f"--qat {source}: its label table differs from the --data given; use the FP32 run's data sets")
        self.model.load_state_dict(ckpt.weights(str(self.device)))
        batches = []
        for i, batch in enumerate(self.loader):
            if i >= self.cfg.qat_calib_batches:
                break
            batches.append(batch["image"].to(self.device))
        layers = qat.prepare(self.model, lambda m: [m(x) for x in batches])
        return {"from": str(ckpt.path), "layout": qat.LAYOUT, "layers": layers,
                "calibration": f"{sum(len(b) for b in batches)} training images ({len(batches)} batches, seed {self.cfg.seed})"}

    # -- state ------------------------------------------------------------------------------------
    def _train_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "best": self.best,
            "main_opt": self.main_opt.state_dict(),
            "theta_opt": self.theta_opt.state_dict() if self.theta_opt else None,
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.step.scaler.state_dict() if self.step.scaler else None,
            "step_generator": self.step.generator.get_state() if hasattr(self.step, "generator") else None,
            "rng": _rng_state(),
        }

    def _warn(self, message: str) -> None:
        if self.dist.is_main:
            print(f"warning: {message}", file=sys.stderr)

    def _resume(self, ckpt: Checkpoint) -> None:
        """Model, optimisers, schedulers, scaler and RNG exactly as they were after the checkpoint's epoch."""
        try:
            self.model.load_state_dict(ckpt.weights(str(self.device)))
        except RuntimeError:
            raise UsageError(f"{ckpt.path}: its weights do not fit a {self.cfg.variant}/{self.cfg.backbone} model; "
                             "resume with the run's own options") from None
        st = ckpt.train_state()
        self.main_opt.load_state_dict(st["main_opt"])
        if self.theta_opt is not None and st["theta_opt"] is not None:
            self.theta_opt.load_state_dict(st["theta_opt"])
        for s, sd in zip(self.schedulers, st["schedulers"]):
            s.load_state_dict(sd)
            s.T_max = max(1, self.cfg.epochs * self.steps_per_epoch)  # --epochs may grow on resume
        if st.get("scaler") and self.step.scaler:
            self.step.scaler.load_state_dict(st["scaler"])
        if st.get("step_generator") is not None and hasattr(self.step, "generator"):
            self.step.generator.set_state(st["step_generator"])
        _set_rng_state(st["rng"])
        self.start_epoch, self.best = int(st["epoch"]) + 1, float(st["best"])
        if self.dist.is_main:
            self._truncate_history(self.start_epoch)
            self._catch_up_best(ckpt)
            where = ckpt.path.parent if ckpt.verified else ckpt.path
            print(f"resuming {self.out} at epoch {self.start_epoch + 1}/{self.cfg.epochs} from {where}", file=sys.stderr)

    def _catch_up_best(self, ckpt: Checkpoint) -> None:
        """A run stopped between writing `last` and copying it to `best` left `best` one improvement behind."""
        metrics = ckpt.meta.get("metrics") or {}
        score = metrics.get("val_mean_top1", metrics.get("train_top1"))
        if not ckpt.verified or ckpt.path.parent.parent != self.out or score is None or score != metrics.get("best_score"):
            return
        try:
            best_epoch = json.loads((self.out / "best" / "manifest.json").read_text()).get("epoch")
        except (OSError, ValueError):
            best_epoch = None
        if best_epoch != ckpt.epoch:
            copy_checkpoint(self.out, ckpt.path.parent.name, "best")

    def _truncate_history(self, epochs_done: int) -> None:
        """history.jsonl keeps the epochs up to the checkpoint resumed from (later ones are trained again)."""
        path = self.out / "history.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["epoch"]) <= epochs_done:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        write_text_atomic(path, "".join(k + "\n" for k in kept))

    def _save(self, tag: str, epoch: int, metrics: dict[str, Any], with_state: bool) -> None:
        model, extra = self.model, {}
        if self.qat is not None:  # the float weights under their plain names, and the int8 input ranges
            from train import qat

            model = build_model(ModelConfig.from_dict({**self.model_config.to_dict(), "pretrained": False}))
            model.load_state_dict(qat.float_state_dict(self.model))
            extra = {"qat": {**self.qat, "amax": qat.input_ranges(self.model)}}
        save_checkpoint(
            self.out, tag, model, model_config=self.model_config, labels=self.labels, preprocess=self.spec,
            extra={"epoch": epoch, "metrics": metrics, "train_config": self.cfg.to_dict(),
                   **({"sparsity": self.sparsity} if self.sparsity else {}),
                   "data": [{"name": s.name, "format": s.format, "root": str(s.root)} for s in self.splits], **extra},
            train_state=self._train_state(epoch) if with_state and self.qat is None else None,
        )

    # -- loop -------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        self.sampler.set_epoch(epoch)
        self.loader_generator.set_state(loader_generator(self.cfg.seed, self.dist.rank, epoch).get_state())
        for part in self.train_set.datasets:
            part.set_epoch(epoch)
        loss_sum, correct, count, skipped, meta_sum, meta_n = 0.0, 0, 0, 0, 0.0, 0
        bar = None
        if self.progress and self.dist.is_main and sys.stderr.isatty():  # a log gets one line per epoch
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="step", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
        t0 = time.perf_counter()
        for i, batch in enumerate(self.loader):
            if i >= self.steps_per_epoch:
                break
            skipped += int(batch["skipped"])
            if batch["image"].shape[0] > 1:
                x = batch["image"].to(self.device, non_blocking=True)
                if self.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                ids, joint, local = (batch[k].to(self.device, non_blocking=True) for k in ("dataset", "joint", "local"))
                stats = self.step(x, ids, joint, local)
                if self.sparse_masks is not None:
                    self.sparse_masks.apply()
                loss_sum += stats.loss * stats.count
                correct += stats.correct
                count += stats.count
                if stats.meta_loss is not None:
                    meta_sum += stats.meta_loss
                    meta_n += 1
            for s in self.schedulers:
                s.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / max(count, 1):.3f}", acc=f"{100 * correct / max(count, 1):.1f}%")
        if bar is not None:
            bar.close()
        # every rank's rows count: sums over the ranks (float64 keeps the counts exact)
        totals = torch.tensor([loss_sum, correct, count, skipped, meta_sum, meta_n], dtype=torch.float64)
        if self.dist.world_size > 1:
            totals = totals.to(self.device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        loss_sum, correct, count, skipped, meta_sum, meta_n = totals.tolist()
        return {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(count, 1),
            "train_top1": correct / max(count, 1),
            "meta_loss": meta_sum / meta_n if meta_n else None,
            "skipped_images": int(skipped),
            "seconds": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def precise_bn(self, batches: int, epoch: int) -> int:
        """Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; detectron2's PreciseBN hook): every
        BatchNorm's running statistics recomputed as the plain mean over the epoch's first `batches` training
        batches (the same images, augmented the same way as in training: a resumed run recomputes the same), through
        the final weights, in place of the moving averages gathered while the weights moved (hand-written:
        torch.optim.swa_utils.update_bn feeds the model bare tensors; our batches are dicts and the heads need the
        data set ids). Returns the images used."""
        model = self.model
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or not isinstance(model, (EruditeNet, ZooModel)):
            return 0
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative (plain) mean over the batches
        model.train()
        self.loader_generator.set_state(loader_generator(self.cfg.seed, self.dist.rank, epoch).get_state())
        for part in self.train_set.datasets:
            part.set_epoch(epoch)
        images = 0
        try:
            for i, batch in enumerate(self.loader):
                if i >= batches:
                    break
                if batch["image"].shape[0] > 1:
                    model(batch["image"].to(self.device), batch["dataset"].to(self.device))
                    images += batch["image"].shape[0]
        finally:
            for m, mom in zip(norms, momenta):
                m.momentum = mom
        return images

    def check_ranks_agree(self) -> None:
        """Every rank must hold the same parameters after a step; a divergence (a bug, or a rank that
        skipped work) stops the run with a clear message instead of training on silently."""
        if self.dist.world_size <= 1:
            return
        flat = torch.cat([p.detach().reshape(-1).double() for p in self.model.parameters()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device).remainder_(977).add_(1)
        digest = torch.stack([flat.sum(), (flat * weights).sum()])
        gathered = [torch.zeros_like(digest) for _ in range(self.dist.world_size)]
        dist.all_gather(gathered, digest)
        if not all(torch.equal(gathered[0], g) for g in gathered):
            raise RuntimeError(f"DDP ranks hold different weights after epoch (digests {[g.tolist() for g in gathered]}); "
                               "please report this with the command line")

    def run(self, until_epoch: int | None = None) -> Path:
        """Train to the configured epoch count (or stop after `until_epoch` epochs, as an interruption would)."""
        if self.dist.is_main:
            write_json_atomic(self.out / "run.json", {"train_config": self.cfg.to_dict(), "labels": self.labels.to_dict(),
                                                      "preprocess": self.spec.to_dict(), "world_size": self.dist.world_size})
            write_effective_config(self.out, self.cfg)
        for epoch in range(self.start_epoch, min(self.cfg.epochs, until_epoch or self.cfg.epochs)):
            metrics = self.train_epoch(epoch)
            self.check_ranks_agree()
            if self.cfg.precise_bn_batches and self.qat is None:
                metrics["precise_bn_images"] = self.precise_bn(self.cfg.precise_bn_batches, epoch)
            if self.has_val:  # every rank scores its shard; all get the gathered metrics, so all agree on "best"
                val = evaluate(self.model, self.val_loader, self.labels, self.device, amp_dtype=self.amp_dtype,
                               sharded=self.dist.world_size > 1)
                metrics["val_mean_top1"] = val["mean_top1"]
                metrics["val"] = {k: v["top1"] for k, v in val["datasets"].items()}
                score = val["mean_top1"]
            else:
                score = metrics["train_top1"]
            improved = score > self.best or self.cfg.select == "last"  # "last": RUN/best follows the last epoch
            if improved:
                self.best = score
            metrics["best_score"] = self.best
            if self.dist.is_main:
                # history first: a kill between the two leaves history one epoch ahead of the checkpoint,
                # which --resume cuts back; the other order would lose the epoch's line for good
                self._append_history(metrics)
                self._save("last", epoch, metrics, with_state=True)
                if improved:
                    copy_checkpoint(self.out, "last", "best")
                self._report(metrics)
        return self.out

    def _append_history(self, m: dict[str, Any]) -> None:
        with open(self.out / "history.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")

    def _report(self, m: dict[str, Any]) -> None:
        val = f" val mean top-1 {100 * m['val_mean_top1']:.2f}%" if "val_mean_top1" in m else ""
        skipped = f" | {m['skipped_images']} unreadable images skipped" if m["skipped_images"] else ""
        print(
            f"epoch {m['epoch']}/{self.cfg.epochs}: loss {m['train_loss']:.4f} train top-1 {100 * m['train_top1']:.2f}%{val}"
            f" ({m['seconds']:.1f}s){skipped}",
            file=sys.stderr,
        )


"""The training run's configuration: command-line options and `--config FILE.yaml` hold the same keys."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from erudite_edge.errors import UsageError


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # NAME=PATH or NAME=FORMAT:PATH, in joint-label order
    out: str = "runs/erudite"
    variant: str = "ours"
    backbone: str = "resnet50"
    pretrained: bool = True
    weights: str = "imagenet-v1"  # which ImageNet weights when pretrained (train.backbones.WEIGHTS); V1: the paper's era
    epochs: int = 100
    batch_per_dataset: int = 16
    input_size: int = 224
    embed_dim: int = 512
    gate: str = "channel"
    classifier: str = "mlp"
    hidden: int = 512
    lr: float = 0.1
    backbone_lr: float = 0.01
    theta_lr: float | None = None  # the attention parameters theta; None: lr
    theta_momentum: float | None = None  # None: momentum
    theta_weight_decay: float | None = None  # None: weight_decay
    meta_alpha: float | Literal["lr"] = "lr"  # inner meta step: "lr" follows theta's scheduled lr, a number is constant
    meta_features: str = "fresh"  # stage II's backbone features: fresh (the stepped network) | reuse (stage I's)
    meta_bn: str = "train"  # the head's BatchNorm in stage II's passes: train (own rows' batch stats) | eval | frozen (train/meta_bn.py)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_bn_momentum: float = 0.1  # BatchNorm momentum of the projection heads m_n (released code: 0.01)
    # Precise BN: after each epoch, every BatchNorm's statistics recomputed as the plain mean over this many
    # training batches with the epoch's final weights (0: off, the running averages as trained). For short
    # fine-tunings: EfficientNet-Lite's momentum 0.01 keeps most of ImageNet's statistics for hundreds of steps.
    precise_bn_batches: int = 0
    crop_pad: int | None = None  # random-crop padding in px; None: input_size / 28 (8 at 224)
    val_fraction: float = 0.1  # carved from training data to choose the best epoch (never the test set)
    select: str = "best"  # RUN/best holds: best (the best-scoring epoch) | last (the last epoch, as the paper reports)
    recipe: str | None = None  # the recipe the run started from (train/recipes/NAME.yaml or a file), for the record
    workers: int = 4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler)
    sync_bn: bool | None = None  # SyncBatchNorm across processes; None: on for multi-GPU (CUDA only)
    steps_per_epoch: int | None = None  # cap, for smoke runs
    # --variant single: epochs of each separately trained part, by part ("coarse" or a data set's name). Parts not
    # named take the fair schedule (train/single_schedule.py: each fine model sees at least as many images of its
    # data set as the joint run of `epochs`, the coarse model as many in total); the run's config holds every part's.
    parts_epochs: dict[str, int] | None = None
    eval_batch_size: int = 64
    qat: str | None = None  # quantization-aware fine-tuning from this FP32 run (its best checkpoint) or checkpoint
    qat_calib_batches: int = 16  # training batches that calibrate the int8 input ranges before QAT
    finetune: str | None = None  # fine-tune this pruned run (`erudite-edge prune`'s RUN_PRUNED): its widths and weights
    distill: str | None = None  # distil from this run's joint logits (the unpruned teacher): KL at a temperature
    distill_temperature: float = 4.0
    distill_weight: float = 0.5  # the KL term's weight (times temperature^2) beside Loss_all

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, world_size: int = 1) -> "TrainConfig":
        """Names and sizes checked before any work, each a one-line UsageError."""
        from train.backbones import WEIGHTS, list_backbones
        from train.meta_bn import META_BN
        from train.modules import GATES
        from train.two_stage import META_FEATURES
        from train.variants import VARIANTS

        checks = [
            (self.variant in VARIANTS, f"--variant {self.variant}: one of {', '.join(VARIANTS)}"),
            (self.backbone in list_backbones(), f"--backbone {self.backbone}: one of {', '.join(list_backbones())}"),
            (self.gate in GATES, f"--gate {self.gate}: one of {', '.join(GATES)}"),
            (self.classifier in ("mlp", "linear"), f"--classifier {self.classifier}: mlp or linear"),
            (self.weights in WEIGHTS, f"--weights {self.weights}: one of {', '.join(WEIGHTS)}"),
            (self.meta_features in META_FEATURES, f"--meta-features {self.meta_features}: one of {', '.join(META_FEATURES)}"),
            (self.meta_bn in META_BN, f"--meta-bn {self.meta_bn}: one of {', '.join(META_BN)}"),
            (self.meta_alpha == "lr" or float(self.meta_alpha) > 0, f"--meta-alpha {self.meta_alpha}: lr or a number above 0"),
            (0 <= self.head_bn_momentum <= 1, f"--head-bn-momentum {self.head_bn_momentum}: from 0 to 1"),
            (self.precise_bn_batches >= 0, f"precise_bn_batches {self.precise_bn_batches}: 0 (off) or more batches"),
            (self.crop_pad is None or self.crop_pad >= 0, f"--crop-pad {self.crop_pad}: 0 or more pixels"),
            (self.select in ("best", "last"), f"--select {self.select}: best or last"),
            (not (self.variant in VARIANTS and VARIANTS[self.variant].pmg) or self.input_size % 8 == 0,
             f"--input-size {self.input_size}: --variant {self.variant} cuts images into 8 x 8 jigsaw patches; use a multiple of 8"),
            (self.epochs >= 1 and self.input_size >= 16, "--epochs must be >= 1 and --input-size >= 16"),
            (not self.parts_epochs or (self.variant in VARIANTS and VARIANTS[self.variant].separate),
             f"--parts-epochs is for --variant single (its separately trained parts), not --variant {self.variant}"),
            (all(e >= 1 for e in (self.parts_epochs or {}).values()), "--parts-epochs: every part's epochs must be 1 or more"),
            (self.qat_calib_batches >= 1, f"--qat-calib-batches must be at least 1, not {self.qat_calib_batches}"),
            (self.distill_temperature > 0, f"--distill-temperature {self.distill_temperature}: above 0"),
            (self.distill_weight >= 0, f"--distill-weight {self.distill_weight}: 0 or more"),
            (not (self.qat and self.finetune), "--qat and --finetune: fine-tune the pruned run first, then --qat the result"),
            (0 <= self.val_fraction < 1, f"--val-fraction {self.val_fraction}: from 0 up to (not including) 1"),
            (self.batch_per_dataset % world_size == 0,
             f"--batch-per-dataset {self.batch_per_dataset} must divide by the {world_size} processes"),
            (self.batch_per_dataset // world_size >= 2,
             f"--batch-per-dataset {self.batch_per_dataset} over {world_size} process(es) leaves fewer than 2 images of a "
             f"data set per process (BatchNorm needs 2): use {2 * world_size} or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "training options") -> "TrainConfig":
        """Each value checked against the field's type (erudite_edge.core.schema): a wrong one is a UsageError
        naming the key, e.g. `run.yaml: epochs: expected a valid integer, ..., got 'ten'`."""
        from erudite_edge.core.schema import check

        unknown = set(d) - set(cls.__dataclass_fields__) - {"alpha"}
        if unknown:
            raise UsageError(f"{where}: unknown training option(s): {', '.join(sorted(map(str, unknown)))}")
        if isinstance(d.get("data"), str):  # one data set written as a plain string
            d = {**d, "data": [d["data"]]}
        if "alpha" in d and "meta_alpha" not in d:  # the key's older name (run.json of earlier runs)
            d = {k: v for k, v in d.items() if k != "alpha"} | {"meta_alpha": "lr" if d["alpha"] is None else d["alpha"]}
        return check(cls, d, where, UsageError)


# Options that fix the model's shape or the data: a resumed run must keep them.
FIXED_ON_RESUME = ("data", "variant", "backbone", "embed_dim", "gate", "classifier", "hidden", "input_size", "batch_per_dataset")


def resume_values(out: str | os.PathLike[str], given: dict[str, Any]) -> dict[str, Any]:
    """The run's own options from RUN/run.json, with the options given now on top; a changed option
    that fixes the model's shape or data is refused."""
    import json

    path = Path(out) / "run.json"
    try:
        saved = json.loads(path.read_text())["train_config"]
    except FileNotFoundError:
        raise UsageError(f"--resume: {path} not found; nothing to resume in {out}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"--resume: {path} is not a run's config ({e})") from e
    changed = [k for k in FIXED_ON_RESUME if k in given and given[k] != saved.get(k)]
    if changed:
        raise UsageError(f"--resume: {', '.join(changed)} differ from the run in {out}; a resumed run keeps them")
    return {**saved, **given}


QAT_EPOCHS = 2  # default length of a QAT fine-tuning
QAT_LR_FACTOR = 0.1  # QAT's learning rates: the FP32 run's times this, unless given


def qat_values(source: str | os.PathLike[str], given: dict[str, Any]) -> dict[str, Any]:
    """`train --qat RUN`: the FP32 run's own options (RUN/run.json; RUN may be a checkpoint folder in
    it) with the options given now on top; by default QAT_EPOCHS epochs at QAT_LR_FACTOR times the
    run's learning rates, into RUN-qat."""
    import json

    src = Path(source)
    run = next((p for p in (src, src.parent, src.parent.parent) if (p / "run.json").is_file()), None)
    if run is None:
        raise UsageError(f"--qat {source}: no run.json in it or above it; give the FP32 run directory (from `erudite-edge train`)")
    try:
        saved = dict(json.loads((run / "run.json").read_text())["train_config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"--qat: {run / 'run.json'} is not a run's config ({e})") from e
    if saved.get("qat"):
        raise UsageError(f"--qat {source} is itself a QAT run; give the FP32 run it started from ({saved['qat']})")
    changed = [k for k in FIXED_ON_RESUME if k in given and k != "batch_per_dataset" and given[k] != saved.get(k)]
    if changed:
        raise UsageError(f"--qat: {', '.join(changed)} differ from the FP32 run in {run}; QAT keeps its model and data")
    values = {**saved, "epochs": QAT_EPOCHS, "pretrained": False, "out": f"{run}-qat",
              "lr": saved.get("lr", 0.1) * QAT_LR_FACTOR, "backbone_lr": saved.get("backbone_lr", 0.01) * QAT_LR_FACTOR,
              "theta_lr": None if saved.get("theta_lr") is None else saved["theta_lr"] * QAT_LR_FACTOR,
              "finetune": None, "distill": None}  # a fine-tuned pruned run's widths come from its checkpoint
    return {**values, **given, "qat": str(source)}


FINETUNE_EPOCH_FRACTION = 0.25  # default length of a fine-tuning after pruning: this share of the run's epochs (>= 1)
FINETUNE_LR_FACTOR = 0.1  # its learning rates: the run's times this, unless given


def default_finetune_epochs(epochs: int) -> int:
    """`train --finetune`'s default length for a run of `epochs` epochs: FINETUNE_EPOCH_FRACTION of them, at least 1."""
    return max(1, round(epochs * FINETUNE_EPOCH_FRACTION))


def finetune_values(source: str | os.PathLike[str], given: dict[str, Any], lr_factor: float = FINETUNE_LR_FACTOR) -> dict[str, Any]:
    """`train --finetune RUN_PRUNED`: the pruned run's options (RUN_PRUNED/run.json: the unpruned run's, which
    `prune` copied) with the options given now on top; by default FINETUNE_EPOCH_FRACTION of its epochs at
    `lr_factor` (FINETUNE_LR_FACTOR) times its learning rates, the same two-stage method, into RUN_PRUNED-ft."""
    import json

    src = Path(source)
    run = next((p for p in (src, src.parent, src.parent.parent) if (p / "run.json").is_file()), None)
    if run is None:
        raise UsageError(f"--finetune {source}: no run.json in it or above it; give the run directory `erudite-edge prune` wrote")
    try:
        record = json.loads((run / "run.json").read_text())
        saved = dict(record["train_config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"--finetune: {run / 'run.json'} is not a run's config ({e})") from e
    if "pruned_from" not in record:
        raise UsageError(f"--finetune {source}: not a pruned run (prune it first: erudite-edge prune --checkpoint RUN --ratio R --out RUN_PRUNED)")
    changed = [k for k in FIXED_ON_RESUME if k in given and k != "batch_per_dataset" and given[k] != saved.get(k)]
    if changed:
        raise UsageError(f"--finetune: {', '.join(changed)} differ from the pruned run in {run}; fine-tuning keeps its model and data")
    if not (isinstance(lr_factor, (int, float)) and 0 < lr_factor <= 10):
        raise UsageError(f"--finetune-lr-factor {lr_factor}: a number in (0, 10] (the pruned run's learning rates times it)")
    f = lr_factor
    values = {**saved, "epochs": default_finetune_epochs(saved.get("epochs", 100)), "pretrained": False,
              "out": f"{run}-ft", "lr": saved.get("lr", 0.1) * f, "backbone_lr": saved.get("backbone_lr", 0.01) * f,
              "theta_lr": None if saved.get("theta_lr") is None else saved["theta_lr"] * f, "qat": None}
    if saved.get("parts_epochs"):  # a Single run's parts: each a share of its own epochs
        values["parts_epochs"] = {k: default_finetune_epochs(v) for k, v in saved["parts_epochs"].items()}
    return {**values, **given, "finetune": str(source)}


def parse_parts_epochs(text: str) -> dict[str, int]:
    """`--parts-epochs coarse=2,faces=13` as {"coarse": 2, "faces": 13}."""
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise UsageError(f"--parts-epochs {text}: expected PART=EPOCHS[,PART=EPOCHS...] (parts: coarse and each "
                             "data set's name), e.g. coarse=2,faces=13")
        out[name.strip()] = int(value)
    if not out:
        raise UsageError("--parts-epochs: empty; give PART=EPOCHS[,PART=EPOCHS...], e.g. coarse=2,faces=13")
    return out


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
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def write_effective_config(out: str | os.PathLike[str], cfg: TrainConfig) -> Path:
    """RUN/config.yaml: every option the run trains with (recipe, file and flags resolved), loadable again
    with `train --config`. Written atomically; run.json keeps the same values for the tools."""
    from erudite_edge.core.fileio import write_text_atomic

    header = (f"# The effective training configuration of this run{f' (recipe: {cfg.recipe})' if cfg.recipe else ''}:\n"
              "# every option after the recipe, --config file and command-line flags were applied.\n")
    path = Path(out) / "config.yaml"
    write_text_atomic(path, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


RECIPES_DIR = Path(__file__).parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """A recipe's options: a name in train/recipes/ (paper, released-code) or a YAML file; `recipe` records it."""
    text = str(name_or_path)
    path = RECIPES_DIR / f"{text}.yaml"
    if not path.is_file():
        path = Path(text)
        if not path.is_file():
            raise UsageError(f"--recipe {text}: no such recipe ({', '.join(list_recipes())}) and no such file")
    values = load_yaml(path)
    values["recipe"] = text
    return values

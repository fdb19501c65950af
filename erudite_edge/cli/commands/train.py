"""`erudite-edge train` and `erudite-edge eval` (need torch: `pip install 'erudite-edge[train]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from erudite_edge.cli.interruptible import terminate_as_interrupt
from erudite_edge.core.fileio import write_json_atomic
from erudite_edge.errors import BackendUnavailable, UsageError

try:  # every variant of the registry (plain Python, no torch), so the help cannot drift from what `--variant` takes
    from train.variants import VARIANTS

    VARIANT_HELP = " | ".join(VARIANTS) + " (default ours; docs/training.md: Training options)"
except ImportError:  # a device install without the trainer: `run`, `check`, ... must still start
    VARIANT_HELP = "a variant of train/variants.py (default ours; needs the trainer: pip install 'erudite-edge[train]')"


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BackendUnavailable("training needs torch: `pip install 'erudite-edge[train]'`") from None


def train_command(
    data: Optional[list[str]] = typer.Option(None, "--data", help="NAME=PATH or NAME=FORMAT:PATH, once per data set, in joint-label order."),
    recipe: Optional[str] = typer.Option(
        None, "--recipe", help="paper | released-code | PATH.yaml: a recipe of options (train/recipes/); --config and flags win over it."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file holding the same options (command-line values win)."),
    variant: Optional[str] = typer.Option(None, help=VARIANT_HELP),
    backbone: Optional[str] = typer.Option(None, help="resnet50 (default) | resnet18 | resnet34 | resnet101 | mobilenet_v3_large | efficientnet_lite0 | tiny"),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="ImageNet weights for the backbone (default on)."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="imagenet-v1 (default: torchvision IMAGENET1K_V1, the paper's era) | imagenet-v2 (IMAGENET1K_V2) | none."),
    epochs: Optional[int] = typer.Option(None),
    batch_per_dataset: Optional[int] = typer.Option(None, help="Images of each data set per batch (default 16)."),
    input_size: Optional[int] = typer.Option(None, help="Square input size (224 default; 448 is common in FGVC)."),
    embed_dim: Optional[int] = typer.Option(None, help="Width E of each dataset-specific projection (default 512)."),
    gate: Optional[str] = typer.Option(None, help="channel (paper Eq. 4, default) | dense (released code; what Table 3 counts, --recipe paper)."),
    classifier: Optional[str] = typer.Option(None, help="mlp (released code's BN-Linear-BN-ELU-Linear, default) | linear."),
    hidden: Optional[int] = typer.Option(None, help="Hidden width of the mlp classifiers (512)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of new modules (0.1)."),
    backbone_lr: Optional[float] = typer.Option(None, help="Learning rate of the backbone (0.01)."),
    theta_lr: Optional[float] = typer.Option(None, "--theta-lr", help="Learning rate of the attention parameters theta (default: --lr)."),
    theta_momentum: Optional[float] = typer.Option(None, "--theta-momentum", help="SGD momentum of theta (default: --momentum, 0.9)."),
    theta_wd: Optional[float] = typer.Option(None, "--theta-wd", help="Weight decay of theta (default: --weight-decay, 5e-4)."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum (0.9)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="SGD weight decay (5e-4)."),
    meta_alpha: Optional[str] = typer.Option(
        None, "--meta-alpha", help="Meta inner step size: lr (default: theta's learning rate as its schedule anneals it) | a constant."),
    meta_features: Optional[str] = typer.Option(
        None, "--meta-features", help="Stage II's backbone features: fresh (default: the network after stage I's step) | reuse (stage I's, cheaper)."),
    meta_bn: Optional[str] = typer.Option(
        None, "--meta-bn", help="The head's BatchNorm in stage II's meta passes: train (default: each pass's own rows' batch "
                                "statistics) | eval (running statistics) | frozen (the whole batch's statistics, fixed)."),
    head_bn_momentum: Optional[float] = typer.Option(None, "--head-bn-momentum", help="BatchNorm momentum of the projection heads (0.1; released code 0.01)."),
    crop_pad: Optional[int] = typer.Option(None, "--crop-pad", help="Random-crop padding in pixels (default: input size / 28, 8 at 224; released code 4)."),
    select: Optional[str] = typer.Option(None, "--select", help="What RUN/best holds: best (best validation epoch, default) | last (the last epoch, as the paper reports)."),
    val_fraction: Optional[float] = typer.Option(None, help="Share of each training split held out to pick the best epoch (0.1)."),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers (4)."),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA (default on)."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn", help="SyncBatchNorm across GPUs (default on with several CUDA processes)."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Cap the steps of each epoch (smoke runs)."),
    parts_epochs: Optional[str] = typer.Option(
        None, "--parts-epochs", help="--variant single: epochs of its parts, e.g. coarse=2,faces=13. Parts not named take the "
                                     "fair schedule: each data set's model sees at least as many images of it as the joint "
                                     "run of --epochs does, the coarse model as many in total (written to RUN/config.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (checkpoints, history)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last complete checkpoint."),
    resume_from: Optional[str] = typer.Option(
        None, "--resume-from", help="best | last | PATH of a checkpoint directory: continue the run in --out from it (implies --resume)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    qat: Optional[Path] = typer.Option(
        None, "--qat", help="Quantization-aware fine-tuning from this FP32 run (or checkpoint): a few epochs with int8 "
                            "fake quantization in TensorRT's layout; export with `export int8 --qat RUN`. Its options are "
                            "the run's own (2 epochs, 0.1x its learning rates, into RUN-qat) unless given."),
    qat_calib_batches: Optional[int] = typer.Option(None, help="QAT: training batches that calibrate the int8 input ranges (16)."),
    finetune: Optional[Path] = typer.Option(
        None, "--finetune", help="Fine-tune a pruned run (from `erudite-edge prune`) with the same two-stage method. Its "
                                 "options are the run's own (a quarter of its epochs, at least 1, at 0.1x its learning "
                                 "rates, into RUN_PRUNED-ft) unless given. Too little for a short schedule: on the "
                                 "demo's 2-epoch runs, --epochs 4 --finetune-lr-factor 1 --distill RUN recovered ratio 0.4."),
    finetune_lr_factor: Optional[float] = typer.Option(
        None, "--finetune-lr-factor", help="--finetune: the pruned run's learning rates times this (0.1); 1 retrains at the "
                                           "run's own rates, as TAO's retrain does (see docs: what recovered the accuracy)."),
    distill: Optional[Path] = typer.Option(
        None, "--distill", help="Distil from this run's joint logits (e.g. the unpruned run): KL at --distill-temperature "
                                "added to the loss with --distill-weight (erudite variants)."),
    distill_temperature: Optional[float] = typer.Option(None, help="Distillation temperature (4)."),
    distill_weight: Optional[float] = typer.Option(None, help="Weight of the distillation term, times temperature^2 (0.5)."),
) -> None:
    """Train an erudite model (or, with --variant single, the two-stage zoo) on several data sets jointly."""
    _require_torch()
    from train.config import TrainConfig, load_recipe, load_yaml, parse_parts_epochs
    from train.entry import train

    values: dict[str, Any] = load_recipe(recipe) if recipe else {}
    values.update(load_yaml(config) if config else {})
    if weights is not None and pretrained is None:  # --weights none is --no-pretrained; a named set turns weights on
        pretrained = weights != "none"
    given = dict(data=data or None, variant=variant, backbone=backbone, pretrained=pretrained, weights=weights, epochs=epochs,
                 batch_per_dataset=batch_per_dataset, input_size=input_size, embed_dim=embed_dim, gate=gate, classifier=classifier,
                 hidden=hidden, lr=lr,
                 backbone_lr=backbone_lr, theta_lr=theta_lr, theta_momentum=theta_momentum, theta_weight_decay=theta_wd,
                 momentum=momentum, weight_decay=weight_decay, meta_alpha=meta_alpha, meta_features=meta_features, meta_bn=meta_bn,
                 head_bn_momentum=head_bn_momentum, crop_pad=crop_pad, select=select,
                 val_fraction=val_fraction, workers=workers, seed=seed, device=device,
                 amp=amp, sync_bn=sync_bn, steps_per_epoch=steps_per_epoch, out=str(out) if out else None,
                 parts_epochs=parse_parts_epochs(parts_epochs) if parts_epochs is not None else None)
    values.update({k: v for k, v in given.items() if v is not None})
    if qat_calib_batches is not None:
        values["qat_calib_batches"] = qat_calib_batches
    extra = dict(distill=str(distill) if distill else None, distill_temperature=distill_temperature, distill_weight=distill_weight)
    values.update({k: v for k, v in extra.items() if v is not None})
    resume = resume or resume_from is not None
    if finetune is not None:
        from train.config import finetune_values

        if resume or qat is not None:
            raise UsageError("--finetune starts a new run from a pruned run; it cannot be combined with --resume or --qat "
                             "(resume the fine-tuning with --resume --out RUN_PRUNED-ft)")
        values = finetune_values(finetune, values, **({} if finetune_lr_factor is None else {"lr_factor": finetune_lr_factor}))
    elif finetune_lr_factor is not None:
        raise UsageError("--finetune-lr-factor needs --finetune RUN_PRUNED (it scales the pruned run's learning rates)")
    if qat is not None:
        from train.config import qat_values

        if resume:
            raise UsageError("--qat starts a new QAT run from an FP32 run; it cannot be combined with --resume")
        values = qat_values(qat, values)
    if resume:
        from train.config import resume_values

        if "out" not in values:
            raise UsageError("--resume needs --out RUN (the run to continue)")
        values = resume_values(values["out"], values)
    cfg = TrainConfig.from_dict(values, where=str(config) if config else "training options")
    try:
        with terminate_as_interrupt():
            run = train(cfg, resume=resume, progress=progress, resume_from=resume_from)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; {cfg.out} keeps its last complete checkpoint (continue with --resume)", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"run saved in {run} (best/, last/)", err=True)


def eval_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Run directory (its best checkpoint) or a .safetensors file."),
    data: list[str] = typer.Option(..., "--data", help="NAME=PATH for each data set to test (names as in training)."),
    split: str = typer.Option("test", help="test | train"),
    batch_size: int = typer.Option(64),
    workers: int = typer.Option(4),
    device: str = typer.Option("auto"),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON file for the metrics (default: RUN/eval.json)."),
) -> None:
    """Top-1 per data set in the joint label space, their mean, per-class accuracy, cross-data-set errors.
    A zoo run routes each image through its coarse model, as the paper's Single."""
    _require_torch()
    from rich.console import Console

    from train.evaluate_run import evaluate_run

    metrics, table = evaluate_run(checkpoint, data, split=split, batch_size=batch_size, workers=workers, device=device)
    Console(stderr=False).print(table)
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if (run_dir / "manifest.json").exists():  # a checkpoint directory (RUN/best): its files are never added to
        run_dir = run_dir.parent
    target = out or (run_dir / "eval.json")
    write_json_atomic(target, metrics)
    typer.echo(f"metrics written to {target}", err=True)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("eval")(eval_command)

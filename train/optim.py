"""Optimisers as the paper: SGD, momentum 0.9, weight decay 5e-4; lr 0.1 for new modules and 0.01 for
the pretrained backbone; cosine annealing to 0 over the run (stepped per iteration)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from train.model import EruditeNet, ZooModel


@dataclass
class OptimConfig:
    lr: float = 0.1  # new modules
    backbone_lr: float = 0.01
    theta_lr: float | None = None  # attention parameters; default: lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    theta_momentum: float | None = None  # default: momentum
    theta_weight_decay: float | None = None  # default: weight_decay
    # The inner (meta-train) step size of theta' = theta - alpha grad: "lr" (the paper: "alpha is the learning
    # rate") follows theta's learning rate as its schedule anneals it, a number holds it constant.
    meta_alpha: float | str = "lr"

    @property
    def theta_lr_value(self) -> float:
        return self.lr if self.theta_lr is None else self.theta_lr

    def theta_group(self, theta: list) -> dict:
        """theta's parameter group: its own lr, momentum and weight decay (each defaulting to the others')."""
        return {"params": theta, "lr": self.theta_lr_value,
                "momentum": self.momentum if self.theta_momentum is None else self.theta_momentum,
                "weight_decay": self.weight_decay if self.theta_weight_decay is None else self.theta_weight_decay}

    @property
    def alpha_value(self) -> float | None:
        """The constant alpha, or None where alpha follows theta's scheduled learning rate."""
        return None if self.meta_alpha == "lr" else float(self.meta_alpha)


def _sgd(groups: list[dict], cfg: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """(main optimiser, theta optimiser). Stage I steps the main one, which holds every parameter except
    theta -- unless the variant trains theta with the ordinary loss (baseline++), where theta joins it.
    Stage II steps the theta optimiser (meta or PCGrad variants only)."""
    if isinstance(model, ZooModel):
        backbone = [p for m in [model.coarse, *model.fine] for p in m.backbone.parameters()]
        rest = [p for m in [model.coarse, *model.fine] for p in m.classifier.parameters()]
        return _sgd([{"params": backbone, "lr": cfg.backbone_lr}, {"params": rest, "lr": cfg.lr}], cfg), None
    assert isinstance(model, EruditeNet) or getattr(model.variant, "pmg", False)  # type: ignore[union-attr]
    theta = model.attention_parameters()
    theta_ids = {id(p) for p in theta}
    backbone = list(model.backbone.parameters())
    backbone_ids = {id(p) for p in backbone}
    new = [p for p in model.parameters() if id(p) not in backbone_ids and id(p) not in theta_ids]
    groups = [{"params": backbone, "lr": cfg.backbone_lr}, {"params": new, "lr": cfg.lr}]
    mode = model.variant.theta_training
    if mode == "joint":
        groups.append(cfg.theta_group(theta))
        return _sgd(groups, cfg), None
    theta_opt = _sgd([cfg.theta_group(theta)], cfg) if mode in ("meta", "pcgrad") else None
    return _sgd(groups, cfg), theta_opt


def cosine_schedulers(optimizers: list[torch.optim.Optimizer | None], total_steps: int) -> list[torch.optim.lr_scheduler.LRScheduler]:
    return [
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=0.0)
        for opt in optimizers
        if opt is not None
    ]

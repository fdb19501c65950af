"""What every network of the zoo is built from and what its training forward returns: ModelConfig (everything
needed to rebuild a model; stored in every checkpoint) and HeadOutput (the joint logits, the auxiliary G_n
logits and what stage II needs).

The networks (train.model: EruditeNet, ZooModel, build_model; train.pmg: PMGNet), the losses (train.losses)
and the steps (train.two_stage) build on these two types; this module imports nothing of train/, so the
imports among those modules run one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored in every checkpoint)."""

    variant: str = "ours"
    backbone: str = "resnet50"
    class_counts: list[int] = field(default_factory=list)
    embed_dim: int = 512
    gate: str = "channel"
    classifier: str = "mlp"
    hidden: int = 512
    attention_groups: int = 8
    pretrained: bool = False
    weights: str = "imagenet-v1"  # which ImageNet weights when pretrained (train.backbones.WEIGHTS)
    head_bn_momentum: float = 0.1  # BatchNorm momentum of the projection heads m_n
    # a pruned network's widths: {layer name: its shape}, the layers that differ from the unpruned network
    # (train.layer_shapes; written by `erudite-edge prune`); None for an unpruned network
    pruned: dict[str, dict[str, int]] | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class HeadOutput:
    logits: torch.Tensor  # (B, K) joint logits
    aux: list[tuple[int, torch.Tensor, torch.Tensor]]  # (data set n, row indices, G_n logits on those rows)
    masks: torch.Tensor | None = None  # (B, groups, H, W)
    gate_weights: torch.Tensor | None = None  # (B, N, E)
    features: torch.Tensor | None = None  # backbone map F(x), for the stage-II reuse

"""The erudite network (paper Fig. 4), the Single zoo it replaces, and build_model, which builds any
variant's network from a ModelConfig (train.model_spec) -- Ours_PMG's from train.pmg.

Training path: backbone F -> [attention] -> [projections m_n -> gate] -> joint classifier G, plus the
auxiliary classifiers G_n on each data set's own samples. Inference path (`inference_graph`):
the same without G_n, returning joint logits only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from train.backbones import create_backbone
from train.layer_shapes import apply_layer_shapes
from train.model_spec import HeadOutput, ModelConfig
from train.modules import GATES, DatasetProjections, GroupSpatialAttention, make_classifier
from train.pmg import PMGNet
from train.variants import Variant, get_variant


class EruditeNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if len(cfg.class_counts) < 1:
            raise ValueError("class_counts must list the class count of every data set")
        self.cfg = cfg
        self.variant: Variant = get_variant(cfg.variant)
        if self.variant.zoo:
            raise ValueError("the 'single' variant is a ZooModel, not an EruditeNet")
        n = len(cfg.class_counts)
        self.backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights)
        c = self.backbone.out_channels
        self.attention = GroupSpatialAttention(c, cfg.attention_groups) if self.variant.attention else None
        if self.variant.heads:
            self.projections: DatasetProjections | None = DatasetProjections(c, cfg.embed_dim, n, cfg.head_bn_momentum)
            self.gate: nn.Module | None = GATES[cfg.gate](cfg.embed_dim, n)
            feat_dim = cfg.embed_dim
            self.aux_classifiers = nn.ModuleList(
                make_classifier(cfg.embed_dim, k, cfg.classifier, cfg.hidden) for k in cfg.class_counts
            )
        else:
            self.projections, self.gate = None, None
            self.pool = nn.AdaptiveMaxPool2d(1)
            feat_dim = c
            self.aux_classifiers = nn.ModuleList()
        self.classifier = make_classifier(feat_dim, sum(cfg.class_counts), cfg.classifier, cfg.hidden)

    @property
    def num_datasets(self) -> int:
        return len(self.cfg.class_counts)

    def attention_parameters(self) -> list[nn.Parameter]:
        """theta: the parameters stage II (meta / PCGrad) trains."""
        return list(self.attention.parameters()) if self.attention is not None else []

    def head(
        self,
        feat: torch.Tensor,
        dataset_ids: torch.Tensor | None = None,
        theta: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> HeadOutput:
        """Everything after the backbone. With `dataset_ids`, also the auxiliary logits G_n(f*_n) on the
        rows of data set n. `theta` replaces the attention parameters (stage II's adapted theta')."""
        masks = None
        if self.attention is not None:
            feat, masks = self.attention(feat, theta)
        weights = None
        if self.projections is not None:
            f_star = self.projections(feat)  # (B, N, E)
            fused, weights = self.gate(f_star)  # type: ignore[misc]
        else:
            fused = self.pool(feat).flatten(1)
        logits = self.classifier(fused)
        aux: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        if dataset_ids is not None and self.projections is not None:
            for n, g_n in enumerate(self.aux_classifiers):
                rows = (dataset_ids == n).nonzero(as_tuple=True)[0]
                # BatchNorm in G_n needs two rows in training (a batch that lost images may have fewer)
                if rows.numel() > (1 if self.training else 0):
                    aux.append((n, rows, g_n(f_star[rows, n])))
        return HeadOutput(logits, aux, masks, weights)

    def forward(self, x: torch.Tensor, dataset_ids: torch.Tensor | None = None) -> torch.Tensor | HeadOutput:
        """Without `dataset_ids`: joint logits (the inference path). With them: the HeadOutput the
        training step needs, the backbone features included."""
        feat = self.backbone(x)
        if dataset_ids is None:
            return self.head(feat).logits
        out = self.head(feat, dataset_ids)
        out.features = feat
        return out

    def meta_input(self, images: torch.Tensor) -> torch.Tensor:
        """The map stage II's meta step runs on: the backbone's."""
        return self.backbone(images)

    def inference_graph(self, with_attention: bool = False) -> "EruditeInference":
        return EruditeInference(self, with_attention)


class EruditeInference(nn.Module):
    """The deployed graph: backbone, attention, projections, gate, joint classifier. No G_n.
    `with_attention`: forward returns (logits, the attention's group masks (B, groups, h, w))."""

    def __init__(self, net: EruditeNet, with_attention: bool = False):
        super().__init__()
        if with_attention and net.attention is None:
            raise ValueError(f"the {net.cfg.variant!r} variant has no spatial attention layer")
        self.with_attention = with_attention
        self.backbone = net.backbone
        self.attention = net.attention
        self.projections = net.projections
        self.gate = net.gate
        self.pool = getattr(net, "pool", None)
        self.classifier = net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feat = self.backbone(x)
        masks = None
        if self.attention is not None:
            feat, masks = self.attention(feat)
        if self.projections is not None:
            fused, _ = self.gate(self.projections(feat))  # type: ignore[misc]
        else:
            fused = self.pool(feat).flatten(1)  # type: ignore[misc]
        logits = self.classifier(fused)
        return (logits, masks) if self.with_attention else logits


class PlainClassifier(nn.Module):
    """Backbone, global max pooling, classifier: the Single zoo's coarse and fine models."""

    def __init__(self, backbone: str, num_classes: int, classifier: str, hidden: int, pretrained: bool,
                 weights: str = "imagenet-v1"):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, weights=weights)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = make_classifier(self.backbone.out_channels, num_classes, classifier, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.backbone(x)).flatten(1))


class ZooModel(nn.Module):
    """The paper's Single: a coarse classifier picks the data set, then that data set's own model runs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        mk = lambda k: PlainClassifier(cfg.backbone, k, cfg.classifier, cfg.hidden, cfg.pretrained, cfg.weights)  # noqa: E731
        self.coarse = mk(len(cfg.class_counts))
        self.fine = nn.ModuleList(mk(k) for k in cfg.class_counts)

    @property
    def num_datasets(self) -> int:
        return len(self.cfg.class_counts)

    def forward(
        self, x: torch.Tensor, dataset_ids: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, list[tuple[int, torch.Tensor, torch.Tensor]]]:
        """Without `dataset_ids`: joint-space scores of the two-stage pipeline (the picked data set's fine
        softmax, zeros elsewhere). With them (training): coarse logits on every row, and each fine
        model's logits on its own data set's rows only -- each model learns from its own data."""
        if dataset_ids is not None:
            fine_out = []
            for n, fine in enumerate(self.fine):
                rows = (dataset_ids == n).nonzero(as_tuple=True)[0]
                if rows.numel():
                    fine_out.append((n, rows, fine(x[rows])))
            return self.coarse(x), fine_out
        picked = self.coarse(x).argmax(1)
        out = x.new_zeros(x.shape[0], sum(self.cfg.class_counts))
        offset = 0
        for n, (fine, k) in enumerate(zip(self.fine, self.cfg.class_counts)):
            rows = (picked == n).nonzero(as_tuple=True)[0]
            if rows.numel():
                out[rows, offset : offset + k] = torch.softmax(fine(x[rows]), dim=1)
            offset += k
        return out


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network `cfg` describes; a pruned one (cfg.pruned) with its recorded widths."""
    v = get_variant(cfg.variant)
    model = PMGNet(cfg) if v.pmg else ZooModel(cfg) if v.zoo else EruditeNet(cfg)
    return apply_layer_shapes(model, cfg.pruned) if cfg.pruned else model


def count_parameters(module: nn.Module, names: Sequence[str] | None = None) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if names is None or any(n.startswith(s) for s in names))

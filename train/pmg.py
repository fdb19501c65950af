"""Ours_PMG (the paper's best row of Table 2): PMG, progressive multi-granularity training (Du et al.,
ECCV 2020), with the erudite modules on its final stage.

PMG taps the backbone's last three stages (ResNet: layer2, layer3, layer4); each tap gets a conv block
(1x1 then 3x3 conv, BN, ReLU) to `embed_dim` channels, global max pooling and a classifier, and a fourth
classifier takes the three pooled vectors concatenated. Every batch is trained in four sub-steps, each
its own backward and optimiser step: stage 1 on the images cut into 8 x 8 jigsaw patches shuffled
(classifier 1), stage 2 on 4 x 4 patches (classifier 2), stage 3 on 2 x 2 patches (classifier 3), then the
whole images through the concatenated classifier. Here stage 3 is the erudite head: its conv block's map
goes through the dataset-agnostic spatial attention (theta), the dataset-specific projections m_n and the
gate, and the fused vector feeds the joint classifier and the auxiliary G_n (Loss_all); the concatenated
classifier takes that fused vector in place of stage 3's plain pooling. Stage II (train.two_stage) then
steps theta by the second-order meta step on stage 3's map of the whole images.

The deployed graph (`inference_graph`) returns the concatenated classifier's joint logits (PMG's
"concat" output); it exports to ONNX like every variant. The jigsaw is PMG's: one permutation of the
n x n patches per sub-step, the same for every image of the batch, drawn from a seeded generator.
The image side must divide by 8 (224 and 448 do); PMG itself trains at 448 px.

This module owns the network (PMGNet, PMGInference) and the jigsaw; the sub-steps' losses are
train.losses.pmg_losses, the step train.two_stage.PMGStep, and train.model.build_model builds it.
"""

from __future__ import annotations

import torch
from torch import nn

from erudite_edge.errors import UsageError
from train.backbones import create_backbone
from train.model_spec import HeadOutput, ModelConfig
from train.modules import GATES, DatasetProjections, GroupSpatialAttention, make_classifier
from train.variants import Variant, get_variant

JIGSAW = (8, 4, 2)  # patches per side for stages 1, 2, 3; stage 4 is the whole image


def jigsaw(images: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The images cut into n x n patches, the patches put back in one random order (the same for the batch)."""
    if n <= 1:
        return images
    b, c, h, w = images.shape
    if h % n or w % n:
        raise ValueError(f"a {h}x{w} image does not cut into {n}x{n} patches; use an input size divisible by {n}")
    ph, pw = h // n, w // n
    patches = images.reshape(b, c, n, ph, n, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, ph, pw)
    order = torch.randperm(n * n, generator=generator).to(images.device)
    shuffled = patches[:, order].reshape(b, n, n, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return shuffled.reshape(b, c, h, w)


def _stage_ends(trunk: nn.Sequential) -> list[int]:
    """Indices of the modules whose outputs are the trunk's last three stages (where the spatial size last halves)."""
    x = torch.zeros(1, 3, 64, 64)
    sizes = []
    with torch.no_grad():
        was = trunk.training
        trunk.eval()
        for m in trunk:
            x = m(x)
            sizes.append((x.shape[1], x.shape[-1]))
        trunk.train(was)
    # the last module of each spatial resolution ends a stage
    ends = [i for i in range(len(sizes)) if i == len(sizes) - 1 or sizes[i + 1][1] != sizes[i][1]]
    if len(ends) < 3:
        raise ValueError("the backbone has fewer than three stages to tap")
    return ends[-3:]


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, width: int):
        super().__init__(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


class PMGNet(nn.Module):
    """PMG with the erudite head on stage 3. `forward(x)` gives the concatenated classifier's joint logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.variant: Variant = get_variant(cfg.variant)
        n, k, e = len(cfg.class_counts), sum(cfg.class_counts), cfg.embed_dim
        backbone = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights)
        if not isinstance(backbone, nn.Sequential):
            raise UsageError(f"--variant {cfg.variant} taps the stages of a layered backbone (resnet*, mobilenet_v3_large, "
                             f"tiny); {cfg.backbone} is not one")
        self.backbone: nn.Sequential = backbone
        self.taps = _stage_ends(self.backbone)
        channels = self._tap_channels()
        self.blocks = nn.ModuleList(ConvBlock(c, e) for c in channels)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.stage_classifiers = nn.ModuleList(make_classifier(e, k, cfg.classifier, cfg.hidden) for _ in range(2))
        # stage 3: the erudite head
        self.attention = GroupSpatialAttention(e, cfg.attention_groups)
        self.projections = DatasetProjections(e, e, n, cfg.head_bn_momentum)
        self.gate = GATES[cfg.gate](e, n)
        self.classifier = make_classifier(e, k, cfg.classifier, cfg.hidden)  # G, the joint classifier of stage 3
        self.aux_classifiers = nn.ModuleList(make_classifier(e, kn, cfg.classifier, cfg.hidden) for kn in cfg.class_counts)
        self.concat_classifier = make_classifier(3 * e, k, cfg.classifier, cfg.hidden)

    def _tap_channels(self) -> list[int]:
        with torch.no_grad():
            was = self.backbone.training
            self.backbone.eval()
            maps = self.taps_of(torch.zeros(1, 3, 64, 64))
            self.backbone.train(was)
        return [m.shape[1] for m in maps]

    @property
    def num_datasets(self) -> int:
        return len(self.cfg.class_counts)

    def attention_parameters(self) -> list[nn.Parameter]:
        return list(self.attention.parameters())

    def taps_of(self, x: torch.Tensor, upto: int = 2) -> list[torch.Tensor]:
        """The backbone maps at the taps 0..upto (the backbone is run only as far as needed)."""
        out = []
        for i, m in enumerate(self.backbone):
            x = m(x)
            if i in self.taps:
                out.append(x)
                if len(out) > upto:
                    break
        return out

    def meta_input(self, images: torch.Tensor) -> torch.Tensor:
        """Stage 3's map of the images: what stage II's meta step (the erudite head) runs on."""
        return self.blocks[2](self.taps_of(images)[2])

    def head(self, feat: torch.Tensor, dataset_ids: torch.Tensor | None = None,
             theta: tuple[torch.Tensor, torch.Tensor] | None = None) -> HeadOutput:
        """The erudite head on stage 3's map: attention, projections, gate, G (+ G_n on each data set's rows)."""
        feat, masks = self.attention(feat, theta)
        f_star = self.projections(feat)
        fused, weights = self.gate(f_star)
        aux = []
        if dataset_ids is not None:
            for n, g_n in enumerate(self.aux_classifiers):
                rows = (dataset_ids == n).nonzero(as_tuple=True)[0]
                if rows.numel() > (1 if self.training else 0):
                    aux.append((n, rows, g_n(f_star[rows, n])))
        out = HeadOutput(self.classifier(fused), aux, masks, weights)
        out.fused = fused  # type: ignore[attr-defined]
        return out

    def stage(self, x: torch.Tensor, index: int, dataset_ids: torch.Tensor) -> HeadOutput:
        """Training sub-step `index` (0, 1: a plain PMG stage; 2: the erudite stage; 3: the concatenation)."""
        if index < 2:
            feat = self.pool(self.blocks[index](self.taps_of(x, upto=index)[index])).flatten(1)
            return HeadOutput(self.stage_classifiers[index](feat), [])
        maps = self.taps_of(x)
        third = self.blocks[2](maps[2])
        out = self.head(third, dataset_ids)
        out.features = third
        if index == 3:
            pooled = [self.pool(self.blocks[i](maps[i])).flatten(1) for i in range(2)]
            return HeadOutput(self.concat_classifier(torch.cat([*pooled, out.fused], 1)), [], features=third)  # type: ignore[attr-defined]
        return out

    def forward(self, x: torch.Tensor, dataset_ids: torch.Tensor | None = None) -> torch.Tensor | HeadOutput:
        out = self.stage(x, 3, dataset_ids if dataset_ids is not None else torch.zeros(0, dtype=torch.long, device=x.device))
        return out if dataset_ids is not None else out.logits

    def inference_graph(self, with_attention: bool = False) -> nn.Module:
        if with_attention:
            raise UsageError("--with-attention: not available for the ours-pmg variant yet (its attention sits on "
                             "the third stage's taps); export it without --with-attention")
        return PMGInference(self)


class PMGInference(nn.Module):
    """The deployed graph: the backbone to its last tap, the three blocks, the erudite head of stage 3 (no G,
    no G_n) and the concatenated classifier; nothing else (stage classifiers 1 and 2 only train)."""

    def __init__(self, net: PMGNet):
        super().__init__()
        self.backbone: nn.Sequential = net.backbone
        self.taps = list(net.taps)
        self.blocks, self.pool = net.blocks, net.pool
        self.attention, self.projections, self.gate = net.attention, net.projections, net.gate
        self.concat_classifier = net.concat_classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for i, m in enumerate(self.backbone):
            x = m(x)
            if i in self.taps:
                maps.append(x)
        feat, _ = self.attention(self.blocks[2](maps[2]))
        fused, _ = self.gate(self.projections(feat))
        pooled = [self.pool(self.blocks[i](maps[i])).flatten(1) for i in range(2)]
        return self.concat_classifier(torch.cat([*pooled, fused], 1))


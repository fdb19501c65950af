"""The Single zoo (checkpoint variant "single") as one bundle of kind "zoo": coarse.onnx (role "coarse",
logits over data sets) and fine.<dataset>.onnx (role "fine:<dataset>", logits over that data set's
own classes), each exported and parity-checked like an erudite model."""

from __future__ import annotations

import os
from typing import Sequence

from erudite_edge.bundle import Bundle, fine_role
from erudite_edge.errors import UsageError

from .onnx_export import DEFAULT_OPSET, Log, build_checkpoint_model, bundle_kwargs_for, check_opset, check_out, export_roles


def export_zoo(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    parity_count: int = 32,
    overwrite: bool = False,
    log: Log | None = None,
) -> Bundle:
    from train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    if not ckpt.is_zoo:
        raise UsageError(
            f"{ckpt.path} is a {ckpt.variant!r} checkpoint, not a Single zoo; export it with `erudite-edge export onnx`"
        )
    check_opset(opset)
    check_out(out_dir, overwrite, ckpt.path)
    zoo = build_checkpoint_model(ckpt)
    graphs = [("coarse", zoo.coarse.eval())]
    graphs += [(fine_role(ds), fine.eval()) for ds, fine in zip(ckpt.labels.datasets, zoo.fine)]
    return export_roles(
        out_dir,
        graphs,
        bundle_kwargs=bundle_kwargs_for(ckpt, "zoo"),
        opset=opset,
        images=images,
        data=data,
        parity_count=parity_count,
        overwrite=overwrite,
        log=log,
    )

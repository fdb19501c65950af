"""`erudite-edge prune`: a trained run (or checkpoint) pruned into a new run directory. The channel pruning
itself is train/prune.py; a target (MACs, latency) is searched with train/prune_search.py and Taylor's
gradients come from train/prune_taylor.py, so this module, which composes them, stands above all three."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from erudite_edge.errors import UsageError
from train.model_spec import ModelConfig
from train.prune import PruneOptions, network_parts, prune_model


def prune_run(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], opts: PruneOptions, *,
              latency: Callable[[list[nn.Module], Any], float] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prune the run (or checkpoint) `checkpoint` into a new run directory `out`: RUN_PRUNED/best and /last
    (the pruned weights, no training state: fine-tune with `train --finetune`), and run.json (the source
    run's options, for the fine-tuning). A target (--target-macs, --target-latency-ms: `latency` times the
    deployed networks) is searched first (train.prune_search). Nothing is written unless all of it is;
    returns the summary."""
    from erudite_edge.core.fileio import atomic_directory, write_json_atomic
    from train.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
    from train.layer_shapes import layer_shapes
    from train.model import build_model

    opts.check()
    out = Path(out)
    if out.exists():
        raise UsageError(f"--out {out} already exists; choose a new run directory (prune never replaces one)")
    ckpt = load_checkpoint(checkpoint)
    if ckpt.model_config.pruned or ckpt.meta.get("sparsity"):
        raise UsageError(f"{checkpoint}: already pruned; prune the unpruned run again (with a larger --ratio)")
    try:
        model = ckpt.build_model()
    except ValueError as e:  # unknown variant or backbone: a layout this code does not know
        raise UsageError(f"{checkpoint}: cannot build its model ({e}); it is not a run of a layout this version knows") from e
    original = build_model(ModelConfig.from_dict({**ckpt.model_config.to_dict(), "pretrained": False}))
    before = _count(model)
    source_run = _run_dir_of(Path(checkpoint))
    size = tuple(ckpt.preprocess.input_size)
    gradients = None
    if opts.importance == "taylor" and opts.amount_flags:
        from train.prune_taylor import taylor_gradients

        data = json.loads((source_run / "run.json").read_text()).get("train_config", {}).get("data") if source_run else None
        gradients = taylor_gradients(data or [], ckpt.labels, ckpt.preprocess, opts.taylor_batches,
                                     source=str(source_run or checkpoint))
    found = None
    if opts.target_macs is not None or opts.target_latency_ms is not None:
        from train.prune_search import search_ratio

        found = search_ratio(model, ckpt.preprocess, opts, latency=latency, gradients=gradients, log=log)
        opts = opts.at_ratio(found.ratio)
    groups = prune_model(model, size, opts, gradients) if opts.ratio is not None else 0
    cfg = ModelConfig.from_dict({**ckpt.model_config.to_dict(), "pruned": layer_shapes(model, original) or None})
    summary: dict[str, Any] = {
        "from": str(ckpt.path.parent if ckpt.verified else ckpt.path), "ratio": opts.ratio, "importance": opts.importance,
        "scope": opts.scope, "steps": opts.steps, "round_to": opts.round_to, "min_channels": opts.min_channels,
        "groups_pruned": groups, "params_before": before, "params_after": _count(model)}
    if opts.importance == "taylor":
        summary["taylor_batches"] = opts.taylor_batches
    if found is not None:
        summary["target"] = found.to_dict()
    extra: dict[str, Any] = {}
    if opts.sparsity is not None:
        from train.sparsity import sparsify_2_4

        trunks = [part.graph.backbone for part in network_parts(model)]
        extra["sparsity"] = {"pattern": opts.sparsity, "layers": sparsify_2_4(model, trunks)}
        summary["sparse_layers"] = len(extra["sparsity"]["layers"])
    with atomic_directory(out) as tmp:
        save_checkpoint(tmp, "last", model, model_config=cfg, labels=ckpt.labels, preprocess=ckpt.preprocess,
                        extra={"epoch": ckpt.epoch, "metrics": {}, "pruned_from": summary, **extra}, keep_previous=False)
        copy_checkpoint(tmp, "last", "best")
        if source_run is not None:
            run = json.loads((source_run / "run.json").read_text())
            run["pruned_from"] = summary
            write_json_atomic(tmp / "run.json", run)
    return summary


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _run_dir_of(path: Path) -> Path | None:
    return next((p for p in (path, path.parent, path.parent.parent) if (p / "run.json").is_file()), None)

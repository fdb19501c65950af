"""`train --finetune RUN_PRUNED` of a pruned `--variant single` run (the paper's Single, trained as separate
runs): the pruned zoo is split back into its parts, each a pruned `baseline` checkpoint

    RUN_PRUNED-ft/parts-start/coarse, parts-start/fine.<name>

holding that network's pruned widths (its share of ModelConfig.pruned) and weights, and each part's run
(train.single) fine-tunes from its start checkpoint as any pruned run does (train.loop.Trainer's --finetune);
the zoo is then assembled from the fine-tuned parts as after training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from erudite_edge.core.labels import LabelSpace
from erudite_edge.errors import UsageError
from train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.loop import model_config_for
from train.model import build_model

START = "parts-start"


def part_starts(cfg: TrainConfig, out: Path, parts: list[tuple[str, str, LabelSpace]]) -> dict[str, Path]:
    """Each part's start checkpoint (written once; a resumed fine-tuning reuses it): `parts` are (name,
    the zoo's prefix "coarse." / "fine.<i>.", the part's label space)."""
    if cfg.distill:
        raise UsageError("--distill: a pruned --variant single run fine-tunes each of its models alone; distillation "
                         "from the zoo is not supported (leave --distill out)")
    zoo = load_checkpoint(str(cfg.finetune))
    if zoo.variant != "single" or not (zoo.model_config.pruned or zoo.meta.get("sparsity")):
        raise UsageError(f"--finetune {cfg.finetune}: not a pruned --variant single run (prune it first with `erudite-edge prune`)")
    weights = zoo.weights()
    shapes = zoo.model_config.pruned or {}
    starts: dict[str, Path] = {}
    for name, prefix, labels in parts:
        start = out / START / name
        starts[name] = start
        if has_checkpoint(start):
            continue
        part_cfg = model_config_for(dataclasses.replace(cfg, variant="baseline"), labels, pretrained=False)
        part_cfg.pruned = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)} or None
        model = build_model(part_cfg)
        model.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
        extra = {"epoch": 0, "metrics": {}, "pruned_from": zoo.meta.get("pruned_from", {})}
        if zoo.meta.get("sparsity"):
            layers = [k[len(prefix):] for k in zoo.meta["sparsity"]["layers"] if k.startswith(prefix)]
            extra["sparsity"] = {**zoo.meta["sparsity"], "layers": layers}
        save_checkpoint(start, "best", model, model_config=part_cfg, labels=labels, preprocess=zoo.preprocess, extra=extra,
                        keep_previous=False)
    return starts

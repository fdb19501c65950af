"""Structured channel pruning of a trained network through Torch-Pruning's dependency graph.

Torch-Pruning traces the deployed graph and groups every channel with the layers that must lose it
together (a conv's output with its BatchNorm and the next conv's input; the residual adds of ResNet and
EfficientNet-Lite as one coupled group; a depthwise conv's input with its output). We pick, per group,
how many channels stay and which (lowest L1 or L2 weight magnitude first) and Torch-Pruning removes them.

The model's own constraints:
* the attention (`GroupSpatialAttention`, a grouped 1x1 conv applied with `F.conv2d` so that stage II can
  swap theta) is registered with the graph as one layer with its own pruner (`AttentionPruner`): it keeps
  its channels in/out coupled and loses the same count from each of its 8 groups, so the reshape into
  groups stays true;
* the classifiers (the joint G, the auxiliary G_n, PMG's stage and concat classifiers), the projections
  m_n and the gate are never pruned; they lose only the input channels the backbone lost;
* every pruned width is a multiple of `round_to` (8) and at least `min_channels` (16): odd widths are slow
  on tensor cores (TAO rounds the same way).
A Single run (ZooModel) prunes each of its N+1 networks the same way.

The pruned widths are recorded in ModelConfig.pruned (`layer_shapes`), so `build_model` builds the pruned
architecture from the config alone (`apply_layer_shapes`) -- the checkpoint loads, resumes, evaluates and
exports without the original.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from erudite_edge.errors import UsageError
from train.model_spec import ModelConfig
from train.modules import GroupSpatialAttention

IMPORTANCES = ("l1", "l2")
MAX_RATIO = 0.95


@dataclass(frozen=True)
class PruneOptions:
    """What `erudite-edge prune` does (the CLI parses its flags into this)."""

    ratio: float | None  # share of each prunable group's channels removed, in (0, MAX_RATIO]; None: no channel pruning
    importance: str = "l1"  # l1 | l2: weight magnitude of the whole coupled group
    round_to: int = 8
    min_channels: int = 16
    sparsity: str | None = None  # "2:4": then the backbones' weights 2:4 sparse (train.sparsity); None: dense

    def check(self) -> None:
        from train.sparsity import PATTERNS

        if self.sparsity is not None and self.sparsity not in PATTERNS:
            raise UsageError(f"--sparsity {self.sparsity}: {' or '.join(PATTERNS)} (or leave it out: dense weights)")
        if self.ratio is None:
            if self.sparsity is None:
                raise UsageError("prune needs --ratio R (channels) or --sparsity 2:4 (weights), or both")
            return
        if not 0 < self.ratio <= MAX_RATIO:
            raise UsageError(f"--ratio {self.ratio}: must be in (0, {MAX_RATIO}] (the share of channels removed)")
        if self.importance not in IMPORTANCES:
            raise UsageError(f"--importance {self.importance}: one of {', '.join(IMPORTANCES)}")


def _import_torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise UsageError("pruning needs Torch-Pruning: `pip install 'erudite-edge[train]'`") from None
    return torch_pruning


def _attention_pruner_class(tp: Any) -> type:
    class AttentionPruner(tp.pruner.function.BasePruningFunc):
        """The attention as one layer: channels in == channels out (x times its group's mask); removing
        channel i removes column i % (C / groups) of its group's row of the grouped 1x1 weight."""

        TARGET_MODULES = GroupSpatialAttention

        def prune_out_channels(self, layer: GroupSpatialAttention, idxs: list[int]) -> GroupSpatialAttention:
            conv = layer.conv
            groups, per = layer.groups, conv.in_channels // layer.groups
            drop = set(int(i) for i in idxs)
            counts = [sum(1 for i in drop if i // per == g) for g in range(groups)]
            if len(set(counts)) != 1:
                raise ValueError(f"the attention's {groups} groups must lose the same number of channels, not {counts}")
            keep = [i for i in range(conv.in_channels) if i not in drop]  # group-major, as the weight's rows
            w = conv.weight.data  # (groups, per, 1, 1)
            new_w = torch.stack([w[i // per, i % per] for i in keep]).reshape(groups, len(keep) // groups, 1, 1)
            conv.weight = nn.Parameter(new_w.contiguous())
            conv.in_channels = len(keep)
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: GroupSpatialAttention) -> int:
            return layer.conv.in_channels

        get_in_channels = get_out_channels

        def get_in_channel_groups(self, layer: GroupSpatialAttention) -> int:
            return layer.groups

        get_out_channel_groups = get_in_channel_groups

    return AttentionPruner


# -- which networks, which layers -----------------------------------------------------------------

_NEVER_PRUNED = ("classifier", "aux_classifiers", "stage_classifiers", "concat_classifier", "projections", "gate")


@dataclass
class Part:
    """One network the graph is traced on: its deployed module, the layers it must leave alone."""

    name: str  # "" for an erudite network; "coarse", "fine.0", ... for a zoo's networks
    graph: nn.Module
    ignored: list[nn.Module]


def network_parts(model: nn.Module) -> list[Part]:
    from train.model import PlainClassifier, ZooModel

    def ignored(net: nn.Module) -> list[nn.Module]:
        return [getattr(net, n) for n in _NEVER_PRUNED if getattr(net, n, None) is not None]

    if isinstance(model, ZooModel):
        nets: list[tuple[str, PlainClassifier]] = [("coarse", model.coarse)]
        nets += [(f"fine.{i}", f) for i, f in enumerate(model.fine)]
        return [Part(name, net, ignored(net)) for name, net in nets]
    return [Part("", model.inference_graph(), ignored(model))]


# -- planning and pruning -------------------------------------------------------------------------

def _kept(channels: int, ratio: float, round_to: int, min_channels: int, groups: int) -> int:
    """Channels that stay of `channels`: (1 - ratio) of them rounded to a multiple of round_to (and of
    the attention's groups), at least min_channels, never more than there are."""
    step = round_to * groups // _gcd(round_to, groups)
    keep = int(round(channels * (1 - ratio) / step)) * step
    keep = max(keep, -(-min_channels // step) * step)
    return min(keep, channels)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _channel_groups(group: Any) -> int:
    return max([dep.target.module.groups for dep, _ in group if isinstance(dep.target.module, GroupSpatialAttention)] or [1])


def _pick(imp: torch.Tensor, n_drop: int, groups: int) -> list[int]:
    """The n_drop least important channels; with channel groups, the same positions in every group
    (importance summed over the groups), so each group loses the same count."""
    if groups == 1:
        return sorted(int(i) for i in torch.argsort(imp)[:n_drop])
    per = imp.numel() // groups
    pos = torch.argsort(imp.reshape(groups, per).sum(0))[: n_drop // groups]
    return sorted(int(p) + g * per for g in range(groups) for p in pos)


def prune_part(part: Part, example: torch.Tensor, opts: PruneOptions) -> int:
    """Prune one network in place; returns how many channel groups lost channels."""
    tp = _import_torch_pruning()
    norm = 1 if opts.importance == "l1" else 2
    importance = tp.importance.GroupMagnitudeImportance(p=norm)
    graph = tp.DependencyGraph()
    graph.register_customized_layer(GroupSpatialAttention, _attention_pruner_class(tp)())
    part.graph.eval()
    graph.build_dependency(part.graph, example_inputs=example)
    # their convs and linears are never a root, so no group that changes their outputs is pruned; a BatchNorm
    # at a classifier's input still follows the features it normalises
    ignored = [m for layer in part.ignored for m in layer.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    plans = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        channels = graph.get_out_channels(root)
        groups = _channel_groups(group)
        keep = _kept(channels, opts.ratio, opts.round_to, opts.min_channels, groups)
        if keep < channels:
            imp = importance(group)
            plans.append((root, group[0].dep.handler, _pick(imp, channels - keep, groups)))
    for root, handler, idxs in plans:  # rank every group first, then cut: importance of the unpruned model
        graph.get_pruning_group(root, handler, idxs).prune()
    trunk = getattr(part.graph, "backbone", None)
    if isinstance(getattr(trunk, "out_channels", None), int):  # the trunk's stated width follows its last layer
        with torch.no_grad():
            trunk.out_channels = int(trunk(example).shape[1])  # type: ignore[union-attr,misc]
    return len(plans)


def example_input(input_size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *input_size)


def prune_model(model: nn.Module, input_size: tuple[int, int], opts: PruneOptions) -> int:
    """Prune every network of `model` in place (pretrained=False built, weights loaded, eval mode)."""
    opts.check()
    model.eval()
    total = sum(prune_part(part, example_input(input_size), opts) for part in network_parts(model))  # traced by autograd
    if total == 0:
        raise UsageError(f"--ratio {opts.ratio}: removes no channel (every width rounds back to itself at multiples of "
                         f"{opts.round_to}, at least {opts.min_channels}); give a larger ratio")
    return total


# -- a pruned run ---------------------------------------------------------------------------------

def prune_run(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], opts: PruneOptions) -> dict[str, Any]:
    """Prune the run (or checkpoint) `checkpoint` into a new run directory `out`: RUN_PRUNED/best and /last
    (the pruned weights, no training state: fine-tune with `train --finetune`), and run.json (the source
    run's options, for the fine-tuning). Nothing is written unless all of it is; returns the summary."""
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
    groups = prune_model(model, tuple(ckpt.preprocess.input_size), opts) if opts.ratio is not None else 0
    cfg = ModelConfig.from_dict({**ckpt.model_config.to_dict(), "pruned": layer_shapes(model, original) or None})
    summary: dict[str, Any] = {
        "from": str(ckpt.path.parent if ckpt.verified else ckpt.path), "ratio": opts.ratio, "importance": opts.importance,
        "round_to": opts.round_to, "min_channels": opts.min_channels, "groups_pruned": groups,
        "params_before": before, "params_after": _count(model)}
    extra: dict[str, Any] = {}
    if opts.sparsity is not None:
        from train.sparsity import sparsify_2_4

        trunks = [part.graph.backbone for part in network_parts(model)]
        extra["sparsity"] = {"pattern": opts.sparsity, "layers": sparsify_2_4(model, trunks)}
        summary["sparse_layers"] = len(extra["sparsity"]["layers"])
    source_run = _run_dir_of(Path(checkpoint))
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

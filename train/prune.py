"""Structured channel pruning of a trained network through Torch-Pruning's dependency graph.

Torch-Pruning traces the deployed graph and groups every channel with the layers that must lose it
together (a conv's output with its BatchNorm and the next conv's input; the residual adds of ResNet and
EfficientNet-Lite as one coupled group; a depthwise conv's input with its output). We pick, per group,
how many channels stay and which (lowest importance first: L1 or L2 weight magnitude, or Taylor's
|weight x gradient| over batches of the run's own data, train/prune_taylor.py) and Torch-Pruning removes
them. `scope` uniform: every group keeps (1 - ratio) of its width; global: one ranking over every group
(MetaPruner's global_pruning). `steps` K: ratio k/K at step k, re-ranked each step (MetaPruner's
iterative_steps). A target (MACs, latency) instead of a ratio is searched in train/prune_search.py.

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

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from erudite_edge.errors import UsageError
from train.modules import GroupSpatialAttention

IMPORTANCES = ("l1", "l2", "taylor")
SCOPES = ("uniform", "global")
MAX_RATIO = 0.95
MAX_STEPS = 20
TAYLOR_BATCHES = 4  # batches of the run's training data whose loss gradients rank channels (--importance taylor)


@dataclass(frozen=True)
class PruneOptions:
    """What `erudite-edge prune` does (the CLI parses its flags into this).

    How much: exactly one of `ratio` (the share of channels removed), `target_macs` (a fraction of the
    unpruned model's MACs, e.g. 0.5: the smallest ratio whose pruned model has at most half the MACs) or
    `target_latency_ms` (the smallest ratio whose pruned model runs in at most this many ms, timed on
    ONNX Runtime by the caller's latency probe), or none of them with `sparsity` alone."""

    ratio: float | None = None  # share of the prunable channels removed, in (0, MAX_RATIO]; None: no channel pruning
    importance: str = "l1"  # l1 | l2: weight magnitude of the whole coupled group; taylor: |weight x loss gradient|
    round_to: int = 8
    min_channels: int = 16
    sparsity: str | None = None  # "2:4": then the backbones' weights 2:4 sparse (train.sparsity); None: dense
    target_macs: float | None = None  # fraction of the unpruned MACs, in (0, 1)
    target_latency_ms: float | None = None  # p50 ms per call on the latency probe's backend
    scope: str = "uniform"  # uniform: every group loses `ratio` of its channels; global: one ranking over all groups
    steps: int = 1  # prune in `steps` steps (ratio k/steps at step k), re-ranking the channels after each
    taylor_batches: int = TAYLOR_BATCHES

    @property
    def amount_flags(self) -> list[str]:
        given = {"--ratio": self.ratio, "--target-macs": self.target_macs, "--target-latency-ms": self.target_latency_ms}
        return [flag for flag, value in given.items() if value is not None]

    def at_ratio(self, ratio: float) -> "PruneOptions":
        """These options with the amount fixed at `ratio` (what a target's search tries)."""
        return replace(self, ratio=ratio, target_macs=None, target_latency_ms=None)

    def check(self) -> None:
        from train.sparsity import PATTERNS

        if self.sparsity is not None and self.sparsity not in PATTERNS:
            raise UsageError(f"--sparsity {self.sparsity}: {' or '.join(PATTERNS)} (or leave it out: dense weights)")
        flags = self.amount_flags
        if len(flags) > 1:
            raise UsageError(f"{' and '.join(flags)}: give exactly one of --ratio, --target-macs, --target-latency-ms")
        if not flags:
            if self.sparsity is None:
                raise UsageError("prune needs --ratio R, --target-macs F or --target-latency-ms T (channels) or "
                                 "--sparsity 2:4 (weights), or both")
            return
        if self.ratio is not None and not 0 < self.ratio <= MAX_RATIO:
            raise UsageError(f"--ratio {self.ratio}: must be in (0, {MAX_RATIO}] (the share of channels removed)")
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise UsageError(f"--target-macs {self.target_macs}: a fraction of the unpruned model's MACs in (0, 1), "
                             "e.g. 0.5 for half")
        if self.target_latency_ms is not None and not self.target_latency_ms > 0:
            raise UsageError(f"--target-latency-ms {self.target_latency_ms}: must be a positive number of milliseconds")
        if self.importance not in IMPORTANCES:
            raise UsageError(f"--importance {self.importance}: one of {', '.join(IMPORTANCES)}")
        if self.scope not in SCOPES:
            raise UsageError(f"--scope {self.scope}: one of {', '.join(SCOPES)}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise UsageError(f"--steps {self.steps}: an integer in [1, {MAX_STEPS}] (pruning steps, re-ranked after each)")
        if self.importance == "taylor" and self.taylor_batches < 1:
            raise UsageError(f"--taylor-batches {self.taylor_batches}: at least 1")


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
#
# Torch-Pruning's MetaPruner does the same ranking (its `global_pruning` and `iterative_steps` with
# linear_scheduler), but it has no floor on a layer's width (global pruning can empty a layer) and it
# rounds the removed count, not the kept width, to round_to; so we plan the cuts here with its
# importances and its scheduling, and let the DependencyGraph cut.

Gradients = Callable[["Part"], None]  # fills .grad of part.graph's weights (Taylor importance)


def _kept(channels: int, ratio: float, round_to: int, min_channels: int, groups: int) -> int:
    """Channels that stay of `channels`: (1 - ratio) of them rounded to a multiple of round_to (and of
    the attention's groups), at least min_channels, never more than there are."""
    return _rounded(channels * (1 - ratio), channels, round_to, min_channels, groups)


def _rounded(keep: float, channels: int, round_to: int, min_channels: int, groups: int) -> int:
    step = round_to * groups // _gcd(round_to, groups)
    kept = int(round(keep / step)) * step
    kept = max(kept, -(-min_channels // step) * step)
    return min(kept, channels)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _channel_groups(group: Any) -> int:
    return max([dep.target.module.groups for dep, _ in group if isinstance(dep.target.module, GroupSpatialAttention)] or [1])


def _pick(position_imp: torch.Tensor, n_drop: int, groups: int) -> list[int]:
    """The n_drop least important channels; with channel groups, the same positions in every group
    (`position_imp`: importance per position, over the groups), so each group loses the same count."""
    per = position_imp.numel()
    pos = torch.argsort(position_imp)[: n_drop // groups]
    return sorted(int(p) + g * per for g in range(groups) for p in pos)


@dataclass
class _Candidate:
    root: nn.Module
    handler: Any
    channels: int  # now
    initial: int  # before the first step
    groups: int
    imp: torch.Tensor  # per position (channels // groups), normalised by its mean (Torch-Pruning's default)


def _importance(tp: Any, name: str) -> Any:
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _candidates(tp: Any, graph: Any, part: "Part", opts: PruneOptions, initial: dict[nn.Module, int]) -> list[_Candidate]:
    importance = _importance(tp, opts.importance)
    # their convs and linears are never a root, so no group that changes their outputs is pruned; a BatchNorm
    # at a classifier's input still follows the features it normalises
    ignored = [m for layer in part.ignored for m in layer.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    out = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        channels = graph.get_out_channels(root)
        imp = importance(group)
        if imp is None:
            continue
        groups = _channel_groups(group)
        out.append(_Candidate(root, group[0].dep.handler, channels, initial.setdefault(root, channels), groups,
                              imp.reshape(groups, -1).mean(0).cpu()))
    return out


def _uniform_cuts(cands: list[_Candidate], ratio: float, opts: PruneOptions) -> list[tuple[_Candidate, int]]:
    """Every group keeps (1 - ratio) of its width before the first step."""
    return [(c, c.channels - min(c.channels, _kept(c.initial, ratio, opts.round_to, opts.min_channels, c.groups)))
            for c in cands]


def _global_cuts(cands: list[_Candidate], ratio: float, opts: PruneOptions) -> list[tuple[_Candidate, int]]:
    """One ranking over every group's (normalised) importances, as MetaPruner's global_pruning: the
    channels below the threshold that leaves (1 - ratio) of all channels before the first step go, each
    group's width then rounded (multiple of round_to, at least min_channels)."""
    if not cands:
        return []
    scores = torch.cat([c.imp for c in cands])
    n_cut = scores.numel() - int(sum(c.initial // c.groups for c in cands) * (1 - ratio))
    if n_cut <= 0:
        return []
    threshold = torch.topk(scores, k=min(n_cut, scores.numel()), largest=False).values[-1]
    cuts = []
    for c in cands:
        keep = (c.imp.numel() - int((c.imp <= threshold).sum())) * c.groups
        cuts.append((c, c.channels - _rounded(keep, c.channels, opts.round_to, opts.min_channels, c.groups)))
    return cuts


def _dependency_graph(tp: Any, part: "Part", example: torch.Tensor) -> Any:
    graph = tp.DependencyGraph()
    graph.register_customized_layer(GroupSpatialAttention, _attention_pruner_class(tp)())
    part.graph.eval()
    return graph.build_dependency(part.graph, example_inputs=example)


def prune_part(part: Part, example: torch.Tensor, opts: PruneOptions, gradients: Gradients | None = None) -> int:
    """Prune one network in place to `opts.ratio` in `opts.steps` steps (step k: ratio k/steps of the
    widths before the first, channels re-ranked on the network of the step before, as MetaPruner's
    iterative_steps with its linear_scheduler); returns how many channel groups lost channels.
    `gradients` (Taylor importance) fills the weights' gradients before each step's ranking."""
    if opts.ratio is None:
        raise ValueError("prune_part needs a ratio (a target is searched by train.prune_search)")
    if opts.importance == "taylor" and gradients is None:
        raise ValueError("--importance taylor needs gradients (train.prune_taylor)")
    tp = _import_torch_pruning()
    initial: dict[nn.Module, int] = {}
    pruned: set[int] = set()
    for step in range(1, opts.steps + 1):
        ratio = tp.pruner.algorithms.scheduler.linear_scheduler(opts.ratio, opts.steps)[step]
        graph = _dependency_graph(tp, part, example)
        if gradients is not None:
            gradients(part)
        cands = _candidates(tp, graph, part, opts, initial)
        cuts = (_global_cuts if opts.scope == "global" else _uniform_cuts)(cands, ratio, opts)
        for c, n_drop in cuts:  # rank every group first, then cut: importance of this step's network
            if n_drop > 0:
                graph.get_pruning_group(c.root, c.handler, _pick(c.imp, n_drop, c.groups)).prune()
                pruned.add(id(c.root))
        part.graph.zero_grad(set_to_none=True)
    trunk = getattr(part.graph, "backbone", None)
    if isinstance(getattr(trunk, "out_channels", None), int):  # the trunk's stated width follows its last layer
        with torch.no_grad():
            trunk.out_channels = int(trunk(example).shape[1])  # type: ignore[union-attr,misc]
    return len(pruned)


def example_input(input_size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *input_size)


def prune_model(model: nn.Module, input_size: tuple[int, int], opts: PruneOptions, gradients: Gradients | None = None) -> int:
    """Prune every network of `model` in place (pretrained=False built, weights loaded, eval mode)."""
    opts.check()
    model.eval()
    total = sum(prune_part(part, example_input(input_size), opts, gradients) for part in network_parts(model))
    if total == 0:
        raise UsageError(f"--ratio {opts.ratio}: removes no channel (every width rounds back to itself at multiples of "
                         f"{opts.round_to}, at least {opts.min_channels}); give a larger ratio")
    return total

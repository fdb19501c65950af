"""`prune --target-macs F` and `--target-latency-ms T`: the smallest ratio whose pruned model reaches the
target, found by bisection over the ratio, each try the real pruner (every option as given: importance,
scope, steps) on a copy of the model. MACs are counted by Torch-Pruning's `count_ops_and_params` (for a
Single run, summed over its networks); latency by the probe the caller passes (the CLI's: the bench's
timer on ONNX Runtime, benchmarks/prune_latency.py). A pruned width moves in steps of 8, so MACs fall in
steps too; latency is measured, so noisy: the found ratio is the smallest tried whose measurement met the
target, and its measurement is reported.

A target the model cannot reach (not even at the largest ratio, every width at its floor) or one the
unpruned model already meets is a UsageError: nothing is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from erudite_edge.errors import UsageError
from train.prune import MAX_RATIO, Gradients, PruneOptions, _import_torch_pruning, example_input, network_parts, prune_model

SEARCH_STEPS = 7  # bisection steps after the two ends: the ratio to within 0.95 / 2**7 = 0.0074
Latency = Callable[[list[nn.Module], Any], float]  # p50 ms of one call of the deployed networks, fed the PreprocessSpec


@dataclass
class Found:
    flag: str
    goal: float
    ratio: float
    value: float  # what the found ratio measured
    unpruned: float
    tried: list[tuple[float, float]] = field(default_factory=list)  # (ratio, measured), in order

    def to_dict(self) -> dict[str, Any]:
        return {"flag": self.flag, "goal": self.goal, "ratio": self.ratio, "value": round(self.value, 4),
                "unpruned": round(self.unpruned, 4), "tried": [[round(r, 4), round(v, 4)] for r, v in self.tried]}


def model_macs(model: nn.Module, input_size: tuple[int, int]) -> int:
    """MACs of one image through every deployed network (Torch-Pruning's counter)."""
    tp = _import_torch_pruning()
    total = 0
    for part in network_parts(model):
        macs, _ = tp.utils.count_ops_and_params(part.graph.eval(), example_input(input_size, 1))
        total += int(macs)
    return total


def search_ratio(model: nn.Module, spec: Any, opts: PruneOptions, *, latency: Latency | None = None,
                 gradients: Gradients | None = None, steps: int = SEARCH_STEPS, log: Callable[[str], None] | None = None) -> Found:
    """The smallest ratio (of those tried) whose pruned copy of `model` meets opts' target; `model` is untouched."""
    opts.check()
    input_size = tuple(spec.input_size)
    if opts.target_macs is not None:
        flag, goal = "--target-macs", opts.target_macs
        base = model_macs(model, input_size)

        def measure(m: nn.Module) -> float:
            return model_macs(m, input_size) / base

        def describe(v: float) -> str:
            return f"{v:.3f} of its MACs"
    elif opts.target_latency_ms is not None:
        if latency is None:
            raise ValueError("--target-latency-ms needs a latency probe")
        flag, goal = "--target-latency-ms", opts.target_latency_ms

        def measure(m: nn.Module) -> float:
            return latency([p.graph for p in network_parts(m)], spec)

        def describe(v: float) -> str:
            return f"{v:.2f} ms"
    else:
        raise ValueError("search_ratio needs --target-macs or --target-latency-ms")
    unpruned = measure(model)
    found = Found(flag, goal, 0.0, unpruned, unpruned)

    def at(ratio: float) -> float:
        trial = copy.deepcopy(model)
        try:
            prune_model(trial, input_size, opts.at_ratio(ratio), gradients)
        except UsageError:  # the ratio removes no channel: the unpruned model
            return unpruned
        value = measure(trial)
        found.tried.append((ratio, value))
        if log and found.tried[0][1] <= goal:  # progress once the target is known reachable (else one error line)
            log(f"{flag} {goal:g}: ratio {ratio:.4f} -> {describe(value)}")
        return value

    if unpruned <= goal:
        raise UsageError(f"{flag} {goal:g}: the unpruned model already meets it ({describe(unpruned)}); nothing to prune")
    found.value = at(MAX_RATIO)
    if found.value > goal:
        raise UsageError(f"{flag} {goal:g}: not reachable: at the largest ratio {MAX_RATIO} the model still has "
                         f"{describe(found.value)} (widths at least {opts.min_channels}); give a larger target")
    lo, found.ratio = 0.0, MAX_RATIO
    for _ in range(steps):
        mid = round((lo + found.ratio) / 2, 4)
        value = at(mid)
        if value <= goal:
            found.ratio, found.value = mid, value
        else:
            lo = mid
    return found




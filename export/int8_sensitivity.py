"""Which layers cost an INT8 model its accuracy, and mixed precision: keep the most sensitive ones float.

Layers are the nodes that carry the compute (Conv, Gemm, MatMul), named after their weights
(`backbone._blocks.3._depthwise_conv`); a block is the layers up to the first numbered module
(`backbone._blocks.3`, `backbone.layer1.0`), or a layer of its own (`backbone._conv_stem`, `gate.fc`).
Per block the analysis measures, against the FP32 model on held-out images, two things with one
calibration (the activation ranges are computed once; quantize_static then runs with different
`nodes_to_exclude`):

* only this block quantized, the rest float: what quantizing it costs on its own;
* every block quantized but this one (leave one out): what keeping it float buys back.

The mixed-precision search keeps blocks float in the order of what leaving them out buys back in
top-1 agreement (ties: what quantizing them alone costs) until the goal is met: top-1 agreement with FP32, or with labelled
images each data set's INT8 accuracy at least `min_accuracy_ratio` of its FP32 accuracy. The search
runs on tuning images (labelled training images that did not calibrate, where data sets are given),
and the final model is then measured on the held-out report images.

Hand-written rather than onnxruntime's qdq_loss_debug (which compares activations tensor by tensor,
not the model's decisions) or ModelOpt's AutoQuantize (torch models only); the quantizer itself is
onnxruntime.quantization (or ModelOpt's ONNX PTQ), used as is.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from erudite_edge.core.bundle import Bundle
from export.accuracy import accuracy_by_dataset
from export.images import InputSet, Log
from export.parity import onnx_logits


def layer_names(model: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, str]:
    """Node name -> layer name (its weight's name without `.weight`; the node name when it has none)."""
    init = {t.name for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    out = {}
    for name in nodes:
        node = by_name[name]
        weight = next((i for i in node.input[1:2] if i in init), None)
        out[name] = re.sub(r"\.weight$", "", weight) if weight else name
    return out


def block_of(layer: str) -> str:
    """`backbone._blocks.3._depthwise_conv` -> `backbone._blocks.3`; `backbone.layer1.0.conv1` ->
    `backbone.layer1.0`; names without a numbered part are their own block."""
    parts = layer.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            j = i
            while j + 1 < len(parts) and parts[j + 1].isdigit():
                j += 1
            return ".".join(parts[: j + 1])
    return layer


def group_nodes(model: onnx.ModelProto, nodes: Sequence[str], granularity: str = "block") -> dict[str, list[str]]:
    """Group name -> its nodes, in graph order."""
    layers = layer_names(model, nodes)
    groups: dict[str, list[str]] = {}
    for n in nodes:
        key = block_of(layers[n]) if granularity == "block" else layers[n]
        groups.setdefault(key, []).append(n)
    return groups


@dataclass
class Goal:
    min_agreement: float | None = None
    min_accuracy_ratio: float | None = None

    def active(self) -> bool:
        return self.min_agreement is not None or self.min_accuracy_ratio is not None

    def describe(self) -> str:
        parts = []
        if self.min_agreement is not None:
            parts.append(f"top-1 agreement >= {100 * self.min_agreement:.1f}%")
        if self.min_accuracy_ratio is not None:
            parts.append(f"every data set's int8/fp32 accuracy >= {self.min_accuracy_ratio:.3f}")
        return " and ".join(parts) or "none"


@dataclass
class Measure:
    agreement: float
    accuracy: dict[str, float] | None = None  # per data set, int8
    ratio: dict[str, float] | None = None  # per data set, int8 / fp32 accuracy

    def meets(self, goal: Goal) -> bool:
        if goal.min_agreement is not None and self.agreement < goal.min_agreement - 1e-12:
            return False
        if goal.min_accuracy_ratio is not None and self.ratio is not None:
            if min(self.ratio.values()) < goal.min_accuracy_ratio - 1e-12:
                return False
        return True

    def score(self) -> float:
        """What blocks are ranked by: top-1 agreement with FP32 (every image counts, where an accuracy
        ratio moves only with the few images whose right/wrong flips; the ratio stays part of the goal)."""
        return self.agreement

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Evaluator:
    """Measures a candidate model of one role against that role's FP32 logits on fixed inputs."""

    def __init__(self, bundle: Bundle, role: str, fp32_path: Path, inputs: InputSet):
        self.bundle, self.role, self.inputs = bundle, role, inputs
        self.fp32 = onnx_logits(fp32_path, inputs.batch)
        self.labelled = inputs.dataset_ids is not None and role == "main" and bundle.kind != "zoo"
        self.fp32_accuracy = self._accuracy(self.fp32) if self.labelled else None

    def _accuracy(self, logits: np.ndarray) -> dict[str, float]:
        assert self.inputs.dataset_ids is not None and self.inputs.local_ids is not None
        acc = accuracy_by_dataset(self.bundle, {self.role: logits}, self.inputs.dataset_ids, self.inputs.local_ids)
        return {k: v["accuracy"] for k, v in acc.items()}

    def __call__(self, path: Path) -> Measure:
        logits = onnx_logits(path, self.inputs.batch)
        agreement = float((logits.argmax(1) == self.fp32.argmax(1)).mean())
        if not self.labelled or self.fp32_accuracy is None:
            return Measure(agreement)
        acc = self._accuracy(logits)
        ratio = {k: (acc[k] / v if v > 0 else 1.0) for k, v in self.fp32_accuracy.items()}
        return Measure(agreement, acc, ratio)


@dataclass
class GroupSensitivity:
    group: str
    nodes: list[str]
    layers: list[str]
    alone: dict[str, Any]  # only this group quantized
    left_out: dict[str, Any]  # everything quantized but this group
    gain: float = 0.0  # left_out score - all-quantized score (what keeping it float buys back)
    loss: float = 0.0  # 1 - alone score (what quantizing it alone costs)


@dataclass
class Sensitivity:
    granularity: str
    images: str
    count: int
    all_quantized: dict[str, Any]
    groups: list[GroupSensitivity] = field(default_factory=list)

    def ranking(self) -> list[GroupSensitivity]:
        return sorted(self.groups, key=lambda g: (-g.gain, -g.loss, g.group))

    def to_dict(self) -> dict[str, Any]:
        return {"granularity": self.granularity, "images": self.images, "count": self.count,
                "all_quantized": self.all_quantized, "groups": [asdict(g) for g in self.ranking()]}


Quantize = Callable[[Path, Sequence[str]], Path]  # (output path, nodes kept float) -> written model


def analyse(
    quantize: Quantize,
    evaluate: Evaluator,
    groups: Mapping[str, list[str]],
    layers: Mapping[str, str],
    work: Path,
    *,
    granularity: str = "block",
    both: bool = True,
    log: Log | None = None,
) -> Sensitivity:
    """Per group: only it quantized (when `both`), and all but it quantized, each measured."""
    every = [n for nodes in groups.values() for n in nodes]
    base = evaluate(quantize(work / "all.onnx", []))
    result = Sensitivity(granularity, evaluate.inputs.source, int(len(evaluate.inputs.batch)), base.to_dict())
    for k, (name, nodes) in enumerate(groups.items()):
        left = evaluate(quantize(work / f"left-{k}.onnx", nodes))
        alone = evaluate(quantize(work / f"alone-{k}.onnx", [n for n in every if n not in set(nodes)])) if both else None
        g = GroupSensitivity(name, list(nodes), [layers[n] for n in nodes],
                             alone.to_dict() if alone else {}, left.to_dict(),
                             gain=left.score() - base.score(), loss=(1.0 - alone.score()) if alone else 0.0)
        result.groups.append(g)
        if log:
            log(f"sensitivity {name}: left float -> {100 * left.score():.1f}%"
                + (f", alone quantized -> {100 * alone.score():.1f}%" if alone else ""))
    return result


@dataclass
class Search:
    goal: str
    met: bool
    kept_float: list[dict[str, Any]]  # groups kept float, in the order chosen, with the figures after each
    nodes: list[str]
    final: dict[str, Any]
    put_back: list[dict[str, Any]] = field(default_factory=list)  # steps tried after the best candidate, undone


def search(
    quantize: Quantize,
    evaluate: Evaluator,
    ranking: Sequence[GroupSensitivity],
    goal: Goal,
    work: Path,
    *,
    max_float: int,
    log: Log | None = None,
    verify: Quantize | None = None,
) -> Search:
    """Keep groups float, most sensitive first, until `goal` is met on the evaluator's images or
    `max_float` nodes are float. With `verify` (the quantizer whose model is written), a candidate that
    meets the goal is re-made and re-measured with it; where that misses, the search goes on with it. A
    search that ends without meeting the goal returns the best candidate it measured (highest score, then the
    fewest float nodes), not merely the last one: groups interact (the ranking measured each alone), and on a
    demo training the last candidate scored below the fully quantized model on the tuning images. (A step
    that lowers the score is kept: later groups can lift the model past the goal from there.)"""
    nodes: list[str] = []
    steps: list[dict[str, Any]] = []
    make = quantize
    m = evaluate(make(work / "search-0.onnx", nodes))
    best: tuple[Measure, list[str], Quantize, int] = (m, [], make, 0)  # measure, nodes, quantizer, steps taken
    for k, g in enumerate(list(ranking) + [None], start=1):  # type: ignore[list-item]
        if m.meets(goal) and verify is not None and make is not verify:
            make = verify
            m = evaluate(make(work / f"verify-{k}.onnx", nodes))
            best = (m, list(nodes), make, len(steps))
        if m.meets(goal) or g is None:
            break
        if len(nodes) + len(g.nodes) > max_float:
            continue
        nodes += g.nodes
        m = evaluate(make(work / f"search-{k}.onnx", nodes))
        why = f"leaving it float alone raised the score by {100 * g.gain:+.1f} points"
        steps.append({"group": g.group, "layers": g.layers, "nodes": g.nodes, "why": why, "after": m.to_dict()})
        if (m.score(), -len(nodes)) > (best[0].score(), -len(best[1])):
            best = (m, list(nodes), make, len(steps))
        if log:
            log(f"mixed precision: {g.group} stays float -> agreement {100 * m.agreement:.1f}%"
                + (f", worst accuracy ratio {min(m.ratio.values()):.3f}" if m.ratio else ""))
    dropped: list[dict[str, Any]] = []
    if not m.meets(goal) and best[1] != nodes:
        dropped = steps[best[3]:]
        m, nodes, make, taken = best
        steps = steps[:taken]
        if log:
            log(f"mixed precision: the goal is not reached; the best candidate tried is kept ({len(nodes)} float nodes, "
                f"agreement {100 * m.agreement:.1f}%), not the last")
    if verify is not None and make is not verify:
        m = evaluate(verify(work / "verify-final.onnx", nodes))
    if verify is not None and nodes and not m.meets(goal):
        # the quick variant ranked the candidates; the quantizer that writes the model may disagree (on a demo
        # training the written candidate scored 98.0 % against 98.3 % fully quantized): never worse than none
        plain = evaluate(verify(work / "verify-none.onnx", []))
        if plain.score() >= m.score():
            if log:
                log(f"mixed precision: with the written quantizer the candidate scores {100 * m.agreement:.1f}%, the "
                    f"fully quantized model {100 * plain.agreement:.1f}%: nothing is kept float")
            dropped, steps, nodes, m = steps + dropped, [], [], plain
    return Search(goal.describe(), m.meets(goal), steps, nodes, m.to_dict(), dropped)


def keep_float(quantized: onnx.ModelProto, reference: onnx.ModelProto, nodes: Sequence[str]) -> onnx.ModelProto:
    """A copy of the quantized model in which `nodes` compute in float again: each reads its float
    weight (and bias) from `reference` (the FP32 model that was quantized) instead of a
    DequantizeLinear, and its activation input from before the QuantizeLinear -> DequantizeLinear pair
    where that is the FP32 tensor (not where the layout folded a ReLU into the Q).

    What quantize_static(nodes_to_exclude=nodes) gives, without re-quantizing every weight (onnxruntime
    computes per-channel weight scales channel by channel in Python: tens of seconds per model on a busy
    CPU, against well under one for this): the sensitivity analysis and the search rank with it; the
    model that is written comes from quantize_static itself."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    q_init = {t.name for t in graph.initializer}
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_init = {t.name: t for t in reference.graph.initializer}
    ref_producers = {o: n for n in reference.graph.node for o in n.output}
    wanted = set(nodes)
    for node in graph.node:
        if node.name not in wanted:
            continue
        ref = ref_nodes.get(node.name)
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in q_init:  # a quantized weight or bias: the float one from the reference
                if ref is None or i >= len(ref.input) or ref.input[i] not in ref_init:
                    continue
                # onnxruntime's layout names a quantized bias's DequantizeLinear output after the float
                # bias: the float copy then needs a name of its own
                float_name = ref.input[i] if ref.input[i] not in producers else f"{ref.input[i]}_kept_float"
                node.input[i] = float_name
                if float_name not in q_init:
                    tensor = onnx.TensorProto()
                    tensor.CopyFrom(ref_init[ref.input[i]])
                    tensor.name = float_name
                    graph.initializer.append(tensor)
                    q_init.add(float_name)
            else:
                q = producers.get(dq.input[0])
                # the float tensor before Q only where it is the tensor the FP32 node read: onnxruntime's
                # layout removes a Relu / Clip whose clamp the Q's range does, and gives the Conv before
                # it the removed node's output name (the same name, pre-activation values); there, as in
                # quantize_static with the node excluded, the node reads the quantized activation
                if q is not None and q.op_type == "QuantizeLinear" and ref is not None and i < len(ref.input) \
                        and q.input[0] == ref.input[i] \
                        and _op(producers.get(q.input[0])) == _op(ref_producers.get(ref.input[i])):
                    node.input[i] = q.input[0]
    _prune(graph)
    return model


def _op(node: onnx.NodeProto | None) -> str | None:
    return node.op_type if node is not None else None


def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads (repeatedly), then initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | outputs
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)

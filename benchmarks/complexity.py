"""Parameters and MACs, from a maintained counter, for bundles (ONNX) and for torch models (fvcore).

Bundles: each ONNX model is profiled by onnx-tool (PyPI `onnx-tool`): its shape inference runs the graph
at batch 1 at the bundle's input size, then every node's MACs are summed. Its convention, which the
tests check against a hand count: a Conv costs Cout*Hout*Wout*(Cin/groups)*kh*kw MACs plus Cout*Hout*Wout
for its bias; a Gemm M*N*K plus M*N for its bias; element-wise ops (Relu, Add, pooling, ...) one per
output element. Parameters are the elements of the initializers the nodes read. For ResNet-50 at 224
px the element-wise share is about 0.4 %; `macs_by_op` keeps the split. ONNX exporters fold BatchNorm
into the convolutions, so an ONNX parameter count can be a little below the torch module's.

The zoo's MACs per image are the coarse model plus ONE fine model (the mean over the fine models: the
expected cost per image when images of every data set come in), as the paper's Table 3 counts them
(Single 8.24 = 2 x 4.12); its parameters are all of its models (what must be deployed).

Torch models (the paper's Table 3 layout): `python -m benchmarks.complexity` counts, with fvcore, the
inference graphs of Baseline, the erudite model (train graph with the auxiliary classifiers G_n and test
graph without) and the Single zoo for N = 2, 3, 4 at the paper's class counts, beside the paper's numbers.
torch and fvcore are imported only on that path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from erudite_edge.core.bundle import Bundle

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")


class ComplexityUnavailable(RuntimeError):
    """The counter cannot run here or cannot read this graph; the message says why, in one line."""


@dataclass
class GraphComplexity:
    """One graph at batch 1: parameters, MACs in total and per ONNX op type."""

    params: int
    macs: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    counter: str = ""

    @property
    def compute_macs(self) -> int:
        """The MACs of the convolutions and matrix products alone."""
        return sum(v for k, v in self.macs_by_op.items() if k in COMPUTE_OPS)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "macs": self.macs, "compute_macs": self.compute_macs,
                "macs_by_op": dict(sorted(self.macs_by_op.items(), key=lambda kv: -kv[1])), "counter": self.counter}


def _onnx_tool() -> Any:
    try:
        import onnx_tool
    except ImportError as e:
        raise ComplexityUnavailable(f"the ONNX counter is not installed ({e.name}): `pip install onnx onnx-tool`") from e
    return onnx_tool


def onnx_complexity(path: str | Path, input_shapes: dict[str, Sequence[int]], dtype: str = "float32") -> GraphComplexity:
    """Profile one ONNX file with onnx-tool at the given concrete input shapes."""
    import numpy as np

    onnx_tool = _onnx_tool()
    try:
        model = onnx_tool.Model(str(path), {"verbose": False})
        if not model.valid:
            raise ComplexityUnavailable(f"{path}: onnx-tool cannot read it")
        graph = model.graph
        graph.graph_reorder_nodes()
        graph.shape_infer({k: np.zeros(tuple(v), dtype=dtype) for k, v in input_shapes.items()})
        graph.profile()
    except ComplexityUnavailable:
        raise
    except Exception as e:  # onnx-tool raises plain exceptions (an op it has no shape rule for, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ComplexityUnavailable(f"{path}: onnx-tool cannot profile it ({first})") from e
    if not getattr(graph, "valid_profile", True):
        raise ComplexityUnavailable(f"{path}: onnx-tool could not infer every tensor shape")
    by_op: dict[str, int] = {}
    for node in graph.nodemap.values():
        macs = int(round(float(node.macs[0]))) if getattr(node, "macs", None) else 0
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    version = getattr(onnx_tool, "VERSION", "") or getattr(getattr(onnx_tool, "utils", None), "VERSION", "")
    return GraphComplexity(params=int(graph.params), macs=int(round(float(graph.macs[0]))),
                           macs_by_op={k: v for k, v in by_op.items() if v}, counter=f"onnx-tool {version}".strip())


def model_input_shape(bundle: Bundle, batch: int = 1) -> tuple[int, ...]:
    return bundle.preprocess.batch_shape(batch)


@dataclass
class BundleComplexity:
    """A bundle's models at batch 1, and what one image costs through it."""

    kind: str
    roles: dict[str, GraphComplexity]

    @property
    def params(self) -> int:
        return sum(g.params for g in self.roles.values())

    @property
    def macs_per_image(self) -> int:
        if self.kind != "zoo":
            return sum(g.macs for g in self.roles.values())
        fine = [g.macs for r, g in self.roles.items() if r.startswith("fine:")]
        return self.roles["coarse"].macs + int(round(statistics.fmean(fine))) if fine else self.roles["coarse"].macs

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "macs_per_image": self.macs_per_image,
                "rule": ("coarse + one fine model per image (mean over the fine models); params: all models"
                         if self.kind == "zoo" else "the one model"),
                "roles": {r: g.to_dict() for r, g in self.roles.items()}}


def bundle_complexity(bundle: Bundle, precision: str = "fp32") -> BundleComplexity:
    """Count every model of the bundle (its `precision` ONNX files; fp32 is what MACs are defined on)."""
    roles: dict[str, GraphComplexity] = {}
    for role in bundle.roles():
        entry = bundle.entry(role, precision, "onnx")
        roles[role] = onnx_complexity(bundle.path(entry), {entry.input: model_input_shape(bundle)}, bundle.preprocess.dtype)
    return BundleComplexity(bundle.kind, roles)


def model_files_mb(bundle: Bundle, precision: str, fmt: str = "onnx") -> float | None:
    """Size on disk of the models one deployment of this bundle needs at `precision` (the zoo: all of
    them), in MB (10^6 bytes); None when a role lacks a model of that precision."""
    total = 0
    for role in bundle.roles():
        entry = bundle.find(role, precision, fmt)
        if entry is None:
            return None
        p = bundle.path(entry)
        total += p.stat().st_size
        data = [q for q in p.parent.glob(p.name + ".data")]  # ONNX external data, where a model has it
        total += sum(q.stat().st_size for q in data)
    return total / 1e6


# ------------------------------------------------------------------------------------------------
# Torch models (fvcore) and the paper's Table 3
# ------------------------------------------------------------------------------------------------
PAPER_CLASS_COUNTS = {"CUB": 200, "Cars": 196, "Aircraft": 100, "Flowers": 102}
PAPER_SETS = {2: ["CUB", "Cars"], 3: ["CUB", "Cars", "Aircraft"], 4: ["CUB", "Cars", "Aircraft", "Flowers"]}
# MACs (G) / Params (M) of Table 3, ResNet-50 at 224 px.
PAPER_TABLE3: dict[str, dict[int, tuple[float, float]]] = {
    "Single": {2: (8.24, 73.88), 3: (8.24, 98.54), 4: (8.24, 123.2)},
    "Baseline": {2: (4.12, 24.77), 3: (4.12, 24.82), 4: (4.12, 24.87)},
    "Ours_train": {2: (4.33, 30.54), 3: (4.38, 31.96), 4: (4.42, 33.84)},
    "Ours_test": {2: (4.22, 29.23), 3: (4.28, 30.59), 4: (4.33, 32.48)},
}
# Ours_PMG_test: the deployed graph of --variant ours-pmg (PMG's three tapped stages, the erudite head on the
# last, the concatenated classifier); the paper gives no figures for it.
TABLE3_ROWS = ("Single", "Baseline", "Ours_train", "Ours_test", "Ours_PMG_test")


def torch_macs(module: "nn.Module", inputs: tuple[Any, ...]) -> int:
    """MACs of one forward pass, counted by fvcore (it counts one multiply-add as one 'flop')."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module.eval(), inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def torch_params(module: "nn.Module") -> int:
    return sum(p.numel() for p in module.parameters())


def _train_graph(net: Any) -> "nn.Module":
    """The erudite training graph as a module fvcore can trace: joint logits plus every G_n on its rows."""
    from torch import nn

    class TrainGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any, ids: Any) -> Any:
            out = self.net(x, ids)
            return (out.logits, *[logits for _, _, logits in out.aux])

    return TrainGraph()


@dataclass
class Table3Cell:
    macs: int  # per image
    params: int

    def to_dict(self) -> dict[str, float]:
        return {"gmacs": round(self.macs / 1e9, 4), "mparams": round(self.params / 1e6, 4)}


def table3_column(class_counts: Sequence[int], backbone: str = "resnet50", size: int = 224,
                  embed_dim: int = 512, hidden: int = 512) -> dict[str, Table3Cell]:
    """The four rows of Table 3 for one set of data sets (random-init models; counts need no weights)."""
    import torch

    from train.model import EruditeNet, ZooModel, build_model
    from train.model_spec import ModelConfig

    counts = list(class_counts)
    n = len(counts)
    x1 = torch.zeros(1, 3, size, size)
    cfg = lambda variant: ModelConfig(variant=variant, backbone=backbone, class_counts=counts,  # noqa: E731
                                      embed_dim=embed_dim, hidden=hidden, pretrained=False)
    out: dict[str, Table3Cell] = {}
    with torch.no_grad():
        baseline = EruditeNet(cfg("baseline")).eval()
        inf = baseline.inference_graph()
        out["Baseline"] = Table3Cell(torch_macs(inf, (x1,)), torch_params(inf))
        del baseline, inf

        ours = EruditeNet(cfg("ours")).eval()
        ids = torch.arange(n)  # one image of each data set: each G_n runs on its own image
        xn = torch.zeros(n, 3, size, size)
        out["Ours_train"] = Table3Cell(torch_macs(_train_graph(ours), (xn, ids)) // n, torch_params(ours))
        inf = ours.inference_graph()
        out["Ours_test"] = Table3Cell(torch_macs(inf, (x1,)), torch_params(inf))
        del ours, inf

        pmg = build_model(cfg("ours-pmg")).eval().inference_graph()
        out["Ours_PMG_test"] = Table3Cell(torch_macs(pmg, (x1,)), torch_params(pmg))
        del pmg

        zoo = ZooModel(cfg("single")).eval()
        coarse = torch_macs(zoo.coarse, (x1,))
        fine = [torch_macs(f, (x1,)) for f in zoo.fine]
        out["Single"] = Table3Cell(coarse + int(round(statistics.fmean(fine))), torch_params(zoo))
    return out


def table3(ns: Sequence[int] = (2, 3, 4), backbone: str = "resnet50", size: int = 224,
           class_counts: dict[int, list[int]] | None = None, **kw: Any) -> dict[int, dict[str, Table3Cell]]:
    counts = class_counts or {n: [PAPER_CLASS_COUNTS[s] for s in PAPER_SETS[n]] for n in ns}
    return {n: table3_column(counts[n], backbone, size, **kw) for n in ns}


def table3_rows(result: dict[int, dict[str, Table3Cell]], with_paper: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per model, per N 'ours GMACs/MParams' and (paper's) beside it."""
    ns = sorted(result)
    header = ["model"]
    for n in ns:
        header.append(f"N={n} ours")
        if with_paper:
            header.append(f"N={n} paper")
    rows = []
    for name in TABLE3_ROWS:
        row = [name]
        for n in ns:
            cell = result[n][name]
            row.append(f"{cell.macs / 1e9:.2f}/{cell.params / 1e6:.2f}")
            if with_paper:
                paper = PAPER_TABLE3.get(name, {}).get(n)
                row.append(f"{paper[0]:.2f}/{paper[1]:.2f}" if paper else "-")
        rows.append(row)
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.complexity",
        description="Table 3 of the paper (MACs (G) / Params (M)) counted with fvcore, beside the paper's numbers; "
                    "or, with --bundle, the ONNX graphs of bundles counted with onnx-tool.")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--size", type=int, default=224, help="input size in pixels (square)")
    ap.add_argument("--n", default="2,3,4", help="numbers of data sets, comma separated (paper: 2,3,4)")
    ap.add_argument("--bundle", action="append", default=[], help="count a bundle's ONNX models instead (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    from rich.table import Table

    from benchmarks.report import stdout_console
    from erudite_edge.core.fileio import write_json_atomic

    console = stdout_console()
    if args.bundle:
        report: dict[str, Any] = {}
        table = Table(title="bundle complexity (onnx-tool, batch 1)")
        for col in ("bundle", "kind", "GMACs/image", "MParams"):
            table.add_column(col)
        for path in args.bundle:
            b = Bundle.load(path)
            c = bundle_complexity(b)
            report[str(path)] = c.to_dict()
            table.add_row(str(path), b.kind, f"{c.macs_per_image / 1e9:.3f}", f"{c.params / 1e6:.3f}")
        console.print(table)
        if args.json:
            write_json_atomic(args.json, report)
        return 0

    ns = [int(v) for v in args.n.split(",") if v.strip()]
    bad = [n for n in ns if n not in PAPER_SETS]
    if bad:
        ap.error(f"--n: the paper's settings are 2, 3 and 4 data sets, not {bad}")
    with console.status(f"counting {args.backbone} models at {args.size} px with fvcore ..."):
        result = table3(ns, args.backbone, args.size)
    header, rows = table3_rows(result, with_paper=(args.backbone == "resnet50" and args.size == 224))
    table = Table(title=f"Table 3: MACs (G) / Params (M), {args.backbone} at {args.size} px (fvcore)")
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print("Single = coarse + one fine model per image (mean over the fine models); params: every model. "
                  "Ours_train counts each G_n on its own data set's image.", style="dim")
    if args.json:
        write_json_atomic(args.json, {str(n): {k: v.to_dict() for k, v in cells.items()} for n, cells in result.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

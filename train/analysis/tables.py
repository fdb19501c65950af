"""The report's measures on a FeatureSet, and its Markdown and printed summary (torch-free: shared by
`analyze --checkpoint` and `analyze --bundle`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from erudite_edge.core.labels import LabelSpace
from train.analysis.cluster_metrics import DEFAULT_MAX_SAMPLES, cluster_quality
from train.analysis.feature_set import FeatureSet
from train.analysis.mmd import DEFAULT_MAX_SAMPLES as MMD_MAX_SAMPLES
from train.analysis.mmd import DEFAULT_PERMUTATIONS, mmd_test


def run_title(variant: str, labels: LabelSpace, source: str | None = None) -> str:
    """How figures and logs name an analysed model: its variant, its data sets, and where its numbers come
    from when that is not the checkpoint itself (a bundle's precision)."""
    return f"{variant} ({'+'.join(labels.datasets)}{', ' + source if source else ''})"

JSON_NAME, MARKDOWN_NAME = "analysis.json", "analysis.md"
FIGURE2, FIGURE3, GATE_PNG = "figure2_per_class_change.png", "figure3_tsne.png", "gate_usage.png"
ATTENTION_PNG = "attention.png"


@dataclass
class AnalyzeOptions:
    batch_size: int = 64
    workers: int = 0
    device: str = "auto"
    cluster_max_samples: int = DEFAULT_MAX_SAMPLES
    mmd_permutations: int = DEFAULT_PERMUTATIONS
    mmd_max_samples: int = MMD_MAX_SAMPLES
    tsne: bool = True
    tsne_max_samples: int = 2000
    attention_images: int = 4
    seed: int = 0
    progress: bool = False


def _top1(fs: FeatureSet, i: int) -> float:
    rows = fs.rows(i)
    return float((fs.pred[rows] == fs.joint[rows]).mean())


def within(fs: FeatureSet, labels: LabelSpace, names: Sequence[str], opts: AnalyzeOptions) -> dict[str, Any]:
    """Per data set: top-1, the share of predictions that name the right data set, Table 1's cluster scores of
    the fused feature and, with heads, of its own head's."""
    out: dict[str, Any] = {}
    for name in names:
        i = labels.datasets.index(name)
        rows = fs.rows(i)
        if len(rows) == 0:
            continue
        owner = np.asarray(labels.dataset_of_class)
        entry = {"top1": _top1(fs, i), "right_dataset": float((owner[fs.pred[rows]] == i).mean()),
                 "fused": cluster_quality(fs.fused[rows], fs.joint[rows], max_samples=opts.cluster_max_samples, seed=opts.seed)}
        if fs.heads is not None:
            entry["own_head"] = cluster_quality(fs.heads[rows, i], fs.joint[rows], max_samples=opts.cluster_max_samples, seed=opts.seed)
        out[name] = entry
    return out


def between(fs: FeatureSet, labels: LabelSpace, names: Sequence[str], opts: AnalyzeOptions) -> list[dict[str, Any]]:
    pairs = []
    for a, b in itertools.combinations(names, 2):
        ia, ib = labels.datasets.index(a), labels.datasets.index(b)
        r = mmd_test(fs.fused[fs.rows(ia)], fs.fused[fs.rows(ib)], permutations=opts.mmd_permutations,
                     max_samples=opts.mmd_max_samples, seed=opts.seed)
        pairs.append({"pair": [a, b], **r})
    return pairs


def gate_usage(fs: FeatureSet, labels: LabelSpace, names: Sequence[str]) -> dict[str, Any] | None:
    if fs.gate is None or fs.gate_top is None:
        return None
    rows_used = [n for n in names if len(fs.rows(labels.datasets.index(n)))]
    mean = np.stack([fs.gate[fs.rows(labels.datasets.index(n))].mean(0) for n in rows_used])
    top = np.stack([fs.gate_top[fs.rows(labels.datasets.index(n))].mean(0) for n in rows_used])
    return {"images_of": rows_used, "heads": list(labels.datasets), "mean_weight": mean.tolist(),
            "top_channel_share": top.tolist()}


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def to_markdown(r: dict[str, Any]) -> str:
    run, ref = r["run"], r.get("reference")
    s = r["settings"]
    source = f"Checkpoint `{run['checkpoint']}`" if "checkpoint" in run else f"Bundle `{run['bundle']}` ({run['precision']}, {run['backend']})"
    ref_source = "" if not ref else f"; reference `{ref.get('checkpoint') or ref.get('bundle')}` ({ref['variant']})"
    lines = [f"# Analysis of {run['variant']} ({', '.join(run['datasets'])})", "",
             source + ref_source + ".",
             f"Test split of {', '.join(r['analysed'])}. Feature: {s['feature']}.", "",
             "## Table 1: within each data set", "",
             f"SC (higher better), CHI (higher better), DBI (lower better) over the fine classes, scikit-learn; above "
             f"{s['cluster_max_samples']} images per data set on a random subsample (seed {s['seed']}). Positive: classes whose "
             "accuracy rose or stayed; Negative: fell (against the reference).", ""]
    cols = (["reference"] if ref else []) + ["run"]
    lines += ["| data set | metric | " + " | ".join(cols) + " |", "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for name, w in r["within"].items():
        rw = ref["within"].get(name) if ref else None
        sub = " (subsampled)" if w["fused"]["subsampled"] else ""
        rows = [("top1", "top-1 %", ".2f"), ("right_dataset", "right data set %", ".2f")]
        rows += [("confidence", "mean top-1 softmax", ".3f")] if "confidence" in w else []
        for key, label, fmt in rows + [("sc", "SC", ".3f"), ("chi", "CHI", ".1f"), ("dbi", "DBI", ".3f")]:
            def get(e: Any, key: str = key) -> Any:
                if e is None or (key not in e and key not in e["fused"]):
                    return None
                return 100 * e[key] if key in ("top1", "right_dataset") else e[key] if key == "confidence" else e["fused"][key]

            vals = ([_f(get(rw), fmt)] if ref else []) + [_f(get(w), fmt)]
            lines.append(f"| {name}{sub if key == 'sc' else ''} | {label} | " + " | ".join(vals) + " |")
        t = r.get("transfer", {}).get(name)
        if t:
            lines.append(f"| {name} | Positive | - | {t['positive']} |")
            lines.append(f"| {name} | Negative | - | {t['negative']} |")
        if "own_head" in w:
            lines.append(f"| {name} | SC / CHI / DBI of its own head | " + ("- | " if ref else "")
                         + f"{_f(w['own_head']['sc'], '.3f')} / {_f(w['own_head']['chi'], '.1f')} / {_f(w['own_head']['dbi'], '.3f')} |")
    if r["between"]:
        lines += ["", "## Table 1: between data sets (MMD)", "",
                  f"Unbiased MMD^2 with an RBF kernel, median-heuristic bandwidth sigma, at most {s['mmd_max_samples']} images "
                  f"per side (seed {s['seed']}); p: permutation test of equal distributions ({s['mmd_permutations']} permutations). "
                  "Larger MMD: the data sets' features are further apart (less confusion between them). The scale depends "
                  "on sigma, so compare runs with this tool, not with the paper's absolute numbers.", "",
                  "| pair | MMD^2 | MMD | p | sigma | images |", "| --- | --- | --- | --- | --- | --- |"]
        for p in r["between"]:
            lines.append(f"| {p['pair'][0]} vs {p['pair'][1]} | {_f(p['mmd2'], '.4f')} | {_f(p.get('mmd'), '.4f')} | "
                         f"{_f(p['p_value'], '.3f')} | {_f(p.get('sigma'), '.3g')} | {p.get('used', '')} |")
    g = r.get("gate_usage")
    if g:
        lines += ["", "## Gate usage", "", "Mean gate weight each data set's test images give each head (rows sum to 1); "
                  "in brackets the share of channels whose largest weight goes to that head.", "",
                  "| images of | " + " | ".join(f"head {h}" for h in g["heads"]) + " |", "| --- |" + " --- |" * len(g["heads"])]
        for name, row, top in zip(g["images_of"], g["mean_weight"], g["top_channel_share"]):
            lines.append(f"| {name} | " + " | ".join(f"{w:.3f} ({100 * t:.0f} %)" for w, t in zip(row, top)) + " |")
    if r.get("transfer"):
        lines += ["", "## Per-class change against the reference", "", "| data set | classes | Positive | Negative | mean change (points) | largest gain | largest loss |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, t in r["transfer"].items():
            ch = list(t["changes"].items())
            lines.append(f"| {name} | {t['classes']} | {t['positive']} | {t['negative']} | {100 * t['mean_change']:+.2f} | "
                         f"{ch[0][0]} {100 * ch[0][1]:+.1f} | {ch[-1][0]} {100 * ch[-1][1]:+.1f} |")
    if r.get("skipped"):
        lines += ["", "## Not measured", "", "This analysis had only the exported model (`--bundle`), which gives its outputs "
                  "and nothing inside it:", ""] + [f"- {x}" for x in r["skipped"]]
    if r.get("figures"):
        lines += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in r["figures"].items()]
    return "\n".join(lines) + "\n"


def summary_lines(r: dict[str, Any]) -> list[str]:
    out = []
    for name, w in r["within"].items():
        q = w["fused"]
        line = f"{name}: top-1 {100 * w['top1']:.2f} %, right data set {100 * w['right_dataset']:.2f} %, SC {_f(q['sc'], '.3f')}, CHI {_f(q['chi'], '.1f')}, DBI {_f(q['dbi'], '.3f')}"
        t = r.get("transfer", {}).get(name)
        if t:
            line += f"; vs reference Positive {t['positive']}, Negative {t['negative']}"
        out.append(line)
    for p in r["between"]:
        out.append(f"MMD^2 {p['pair'][0]} vs {p['pair'][1]}: {_f(p['mmd2'], '.4f')} (p = {_f(p['p_value'], '.3f')})")
    g = r.get("gate_usage")
    if g:
        for name, row in zip(g["images_of"], g["mean_weight"]):
            out.append(f"gate, {name} images: " + ", ".join(f"head {h} {w:.2f}" for h, w in zip(g["heads"], row)))
    return out

"""`erudite-edge analyze` as a Python call: features of the run (and of a reference run), Table 1,
transfer against the reference, gate usage, t-SNE; then analysis.json, analysis.md and the PNGs in
one output folder. The CLI is a thin layer over `analyze`."""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from erudite_edge.errors import UsageError
from erudite_edge.fileio import write_json_atomic, write_text_atomic

from ..checkpoint import Checkpoint, load_checkpoint
from ..data import DatasetSplits, load_datasets
from .cluster_metrics import DEFAULT_MAX_SAMPLES, cluster_quality
from .features import FeatureSet, features_for_run
from .mmd import DEFAULT_MAX_SAMPLES as MMD_MAX_SAMPLES
from .mmd import DEFAULT_PERMUTATIONS, mmd_test
from .transfer import per_class_accuracy, transfer_by_dataset

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


def _run_title(ckpt: Checkpoint) -> str:
    return f"{ckpt.variant} ({'+'.join(ckpt.labels.datasets)})"


def _top1(fs: FeatureSet, i: int) -> float:
    rows = fs.rows(i)
    return float((fs.pred[rows] == fs.joint[rows]).mean())


def _within(fs: FeatureSet, ckpt: Checkpoint, names: Sequence[str], opts: AnalyzeOptions) -> dict[str, Any]:
    """Per data set: top-1, Table 1's cluster scores of the fused feature and, with heads, of its own head's."""
    out: dict[str, Any] = {}
    for name in names:
        i = ckpt.labels.datasets.index(name)
        rows = fs.rows(i)
        if len(rows) == 0:
            continue
        entry = {"top1": _top1(fs, i), "fused": cluster_quality(fs.fused[rows], fs.joint[rows], max_samples=opts.cluster_max_samples, seed=opts.seed)}
        if fs.heads is not None:
            entry["own_head"] = cluster_quality(fs.heads[rows, i], fs.joint[rows], max_samples=opts.cluster_max_samples, seed=opts.seed)
        out[name] = entry
    return out


def _between(fs: FeatureSet, ckpt: Checkpoint, names: Sequence[str], opts: AnalyzeOptions) -> list[dict[str, Any]]:
    pairs = []
    for a, b in itertools.combinations(names, 2):
        ia, ib = ckpt.labels.datasets.index(a), ckpt.labels.datasets.index(b)
        r = mmd_test(fs.fused[fs.rows(ia)], fs.fused[fs.rows(ib)], permutations=opts.mmd_permutations,
                     max_samples=opts.mmd_max_samples, seed=opts.seed)
        pairs.append({"pair": [a, b], **r})
    return pairs


def _gate_usage(fs: FeatureSet, ckpt: Checkpoint, names: Sequence[str]) -> dict[str, Any] | None:
    if fs.gate is None or fs.gate_top is None:
        return None
    rows_used = [n for n in names if len(fs.rows(ckpt.labels.datasets.index(n)))]
    mean = np.stack([fs.gate[fs.rows(ckpt.labels.datasets.index(n))].mean(0) for n in rows_used])
    top = np.stack([fs.gate_top[fs.rows(ckpt.labels.datasets.index(n))].mean(0) for n in rows_used])
    return {"images_of": rows_used, "heads": list(ckpt.labels.datasets), "mean_weight": mean.tolist(),
            "top_channel_share": top.tolist()}


def analyze(
    checkpoint: str | os.PathLike[str],
    data: Sequence[str],
    out: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    options: AnalyzeOptions | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Analyse a trained run on the test splits of `data` (NAME=PATH, names as in training); write the
    report into `out` and return it. Bad input (a missing run, a data set the run does not know) is a
    UsageError before anything is written."""
    import torch

    from ..loop import DistInfo, resolve_device

    opts = options or AnalyzeOptions()
    torch.manual_seed(opts.seed)
    ckpt = load_checkpoint(checkpoint)
    ref = load_checkpoint(reference) if reference is not None else None
    given: list[DatasetSplits] = load_datasets(list(data))
    names = [s.name for s in given]
    for s in given:
        if s.name not in ckpt.labels.datasets:
            raise UsageError(f"data set {s.name!r} is not in the run's label table ({', '.join(ckpt.labels.datasets)}); "
                             f"name it as it was named in training ({ckpt.path})")
    ref_given = [s for s in given if ref is not None and s.name in ref.labels.datasets]
    if ref is not None and not ref_given:
        raise UsageError(f"--reference {reference}: trained on {', '.join(ref.labels.datasets)}, none of the data sets given "
                         f"({', '.join(names)}); pass the Single run of these data sets")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file of that name exists; --out names a folder for the report")
    dev = resolve_device(opts.device, DistInfo())
    out.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = dict(device=dev, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress)
    model = ckpt.build_model().to(dev)
    fs, hit = features_for_run(ckpt, given, out / "features.npz", model=model, **kw)
    log(f"features of {_run_title(ckpt)}: {len(fs.joint)} test images{' (cached)' if hit else ''}")
    if fs.skipped:
        log(f"warning: {fs.skipped} unreadable test images skipped")
    ref_fs = None
    if ref is not None:
        ref_fs, hit = features_for_run(ref, ref_given, out / "reference_features.npz", **kw)
        log(f"features of the reference {_run_title(ref)}: {len(ref_fs.joint)} test images{' (cached)' if hit else ''}")

    result: dict[str, Any] = {
        "run": {"checkpoint": str(ckpt.path), "variant": ckpt.variant, "backbone": ckpt.model_config.backbone,
                "datasets": list(ckpt.labels.datasets), "skipped_images": fs.skipped},
        "analysed": names,
        "settings": {**asdict(opts), "device": str(dev),
                     "feature": "input of the joint classifier G (gated re-fusion of the heads; pooled backbone feature "
                                "without heads; a zoo: each data set's own fine model's pooled feature)"},
        "within": _within(fs, ckpt, names, opts),
        "between": _between(fs, ckpt, names, opts),
    }
    if ref is not None and ref_fs is not None:
        ref_names = [s.name for s in ref_given]
        result["reference"] = {"checkpoint": str(ref.path), "variant": ref.variant, "datasets": list(ref.labels.datasets),
                               "skipped_images": ref_fs.skipped, "within": _within(ref_fs, ref, ref_names, opts)}
        run_acc = per_class_accuracy(fs.pred, fs.joint, ckpt.labels.joint_names)
        ref_acc = per_class_accuracy(ref_fs.pred, ref_fs.joint, ref.labels.joint_names)
        result["transfer"] = transfer_by_dataset(run_acc, ref_acc, ref_names)
    gate = _gate_usage(fs, ckpt, names)
    if gate is not None:
        result["gate_usage"] = gate

    figures: dict[str, str] = {}
    from . import plots

    if result.get("transfer"):
        figures["figure2"] = plots.plot_per_class_change(result["transfer"], out / FIGURE2, _run_title(ckpt), _run_title(ref)).name  # type: ignore[arg-type]
    if gate is not None:
        figures["gate_usage"] = plots.plot_gate_usage(np.array(gate["mean_weight"]), gate["images_of"], gate["heads"], out / GATE_PNG).name
    if opts.tsne:
        runs = [(_run_title(ckpt), fs, ckpt)] + ([(_run_title(ref), ref_fs, ref)] if ref is not None and ref_fs is not None else [])
        panels = []
        for title, f, c in runs:
            panels += plots.tsne_panels([(title, f)], [(c.labels.datasets.index(n), n) for n in names if n in c.labels.datasets],
                                        max_samples=opts.tsne_max_samples, seed=opts.seed)
        figures["figure3"] = plots.plot_tsne(panels, out / FIGURE3).name
    if opts.attention_images > 0:
        from .attention import write_attention_grid

        att = write_attention_grid(model, given, ckpt.preprocess, dev, out / ATTENTION_PNG, opts.attention_images)
        if att is not None:
            result["attention"] = att
            figures["attention"] = ATTENTION_PNG
    result["figures"] = figures
    write_json_atomic(out / JSON_NAME, result)
    write_text_atomic(out / MARKDOWN_NAME, to_markdown(result))
    return result


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def to_markdown(r: dict[str, Any]) -> str:
    run, ref = r["run"], r.get("reference")
    s = r["settings"]
    lines = [f"# Analysis of {run['variant']} ({', '.join(run['datasets'])})", "",
             f"Checkpoint `{run['checkpoint']}`" + (f"; reference `{ref['checkpoint']}` ({ref['variant']})" if ref else "") + ".",
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
        for key, label, fmt in (("top1", "top-1 %", ".2f"), ("sc", "SC", ".3f"), ("chi", "CHI", ".1f"), ("dbi", "DBI", ".3f")):
            get = (lambda e: None if e is None else (100 * e["top1"] if key == "top1" else e["fused"][key]))
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
    if r.get("figures"):
        lines += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in r["figures"].items()]
    return "\n".join(lines) + "\n"


def summary_lines(r: dict[str, Any]) -> list[str]:
    out = []
    for name, w in r["within"].items():
        q = w["fused"]
        line = f"{name}: top-1 {100 * w['top1']:.2f} %, SC {_f(q['sc'], '.3f')}, CHI {_f(q['chi'], '.1f')}, DBI {_f(q['dbi'], '.3f')}"
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

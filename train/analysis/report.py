"""`erudite-edge analyze` as a Python call: features of the run (and of a reference run), Table 1,
transfer against the reference, gate usage, t-SNE; then analysis.json, analysis.md and the PNGs in
one output folder. The CLI is a thin layer over `analyze`."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from erudite_edge.core.fileio import write_json_atomic, write_text_atomic
from erudite_edge.errors import UsageError
from train.analysis.features import features_for_run
from train.analysis.tables import (
    ATTENTION_PNG,
    FIGURE2,
    FIGURE3,
    GATE_PNG,
    JSON_NAME,
    MARKDOWN_NAME,
    AnalyzeOptions,
    between,
    gate_usage,
    run_title,
    summary_lines,
    to_markdown,
    within,
)
from train.analysis.transfer import per_class_accuracy, transfer_by_dataset
from train.checkpoint import load_checkpoint
from train.data import DatasetSplits, load_datasets

__all__ = ["AnalyzeOptions", "analyze", "summary_lines", "to_markdown", "JSON_NAME", "MARKDOWN_NAME", "FIGURE2", "FIGURE3",
           "GATE_PNG", "ATTENTION_PNG"]


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

    from train.loop import DistInfo, resolve_device

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
    title, ref_title = run_title(ckpt.variant, ckpt.labels), ""
    log(f"features of {title}: {len(fs.joint)} test images{' (cached)' if hit else ''}")
    if fs.skipped:
        log(f"warning: {fs.skipped} unreadable test images skipped")
    ref_fs = None
    if ref is not None:
        ref_fs, hit = features_for_run(ref, ref_given, out / "reference_features.npz", **kw)
        ref_title = run_title(ref.variant, ref.labels)
        log(f"features of the reference {ref_title}: {len(ref_fs.joint)} test images{' (cached)' if hit else ''}")

    result: dict[str, Any] = {
        "run": {"checkpoint": str(ckpt.path), "variant": ckpt.variant, "backbone": ckpt.model_config.backbone,
                "datasets": list(ckpt.labels.datasets), "skipped_images": fs.skipped},
        "analysed": names,
        "settings": {**asdict(opts), "device": str(dev),
                     "feature": "input of the joint classifier G (gated re-fusion of the heads; pooled backbone feature "
                                "without heads; a zoo: each data set's own fine model's pooled feature)"},
        "within": within(fs, ckpt.labels, names, opts),
        "between": between(fs, ckpt.labels, names, opts),
    }
    if ref is not None and ref_fs is not None:
        ref_names = [s.name for s in ref_given]
        result["reference"] = {"checkpoint": str(ref.path), "variant": ref.variant, "datasets": list(ref.labels.datasets),
                               "skipped_images": ref_fs.skipped, "within": within(ref_fs, ref.labels, ref_names, opts)}
        run_acc = per_class_accuracy(fs.pred, fs.joint, ckpt.labels.joint_names)
        ref_acc = per_class_accuracy(ref_fs.pred, ref_fs.joint, ref.labels.joint_names)
        result["transfer"] = transfer_by_dataset(run_acc, ref_acc, ref_names)
    gate = gate_usage(fs, ckpt.labels, names)
    if gate is not None:
        result["gate_usage"] = gate

    figures: dict[str, str] = {}
    from train.analysis import plots

    if result.get("transfer"):
        figures["figure2"] = plots.plot_per_class_change(result["transfer"], out / FIGURE2, title, ref_title).name
    if gate is not None:
        figures["gate_usage"] = plots.plot_gate_usage(np.array(gate["mean_weight"]), gate["images_of"], gate["heads"], out / GATE_PNG).name
    if opts.tsne:
        runs = [(title, fs, ckpt)] + ([(ref_title, ref_fs, ref)] if ref is not None and ref_fs is not None else [])
        panels = []
        for name, f, c in runs:
            panels += plots.tsne_panels([(name, f)], [(c.labels.datasets.index(n), n) for n in names if n in c.labels.datasets],
                                        max_samples=opts.tsne_max_samples, seed=opts.seed)
        figures["figure3"] = plots.plot_tsne(panels, out / FIGURE3).name
    if opts.attention_images > 0:
        from train.analysis.attention import write_attention_grid

        att = write_attention_grid(model, given, ckpt.preprocess, dev, out / ATTENTION_PNG, opts.attention_images)
        if att is not None:
            result["attention"] = att
            figures["attention"] = ATTENTION_PNG
    result["figures"] = figures
    write_json_atomic(out / JSON_NAME, result)
    write_text_atomic(out / MARKDOWN_NAME, to_markdown(result))
    return result

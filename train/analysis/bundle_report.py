"""`erudite-edge analyze --bundle B`: what the analysis can say from an exported model alone.

An export keeps the model's outputs and nothing inside it, so this mode measures, on the test split of
each data set given, only what the outputs carry:
  - top-1 and the share of predictions that name the right data set, per data set;
  - the mean top-1 softmax probability (how sure the model is);
  - Table 1's cluster scores (SC, CHI, DBI) and MMD between data sets, computed on the output vector
    (logits of an erudite bundle; the joint probabilities of a zoo), not on the paper's feature;
  - against `--reference` (another bundle, e.g. the zoo, or a checkpoint run): per-class accuracy change,
    Positive / Negative and Figure 2;
  - Figure 3 as a t-SNE of the output vectors;
  - attention maps, when the bundle was exported `--with-attention` (the masks are then an output).
What needs the model's internals (the input of G, per-head features, gate weights, attention masks
unless the bundle's graph exposes them) is listed under "skipped" in the report.

The images are read and preprocessed exactly as deployed (export.eval_set, the bundle's
preprocessing) and the model runs through the runners `erudite-edge run` uses; nothing here imports
torch unless the reference is a checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.fileio import write_json_atomic, write_text_atomic
from erudite_edge.core.scores import softmax
from erudite_edge.errors import BadImageError, UsageError
from train.analysis.feature_set import FeatureSet
from train.analysis.tables import (
    ATTENTION_PNG,
    FIGURE2,
    FIGURE3,
    JSON_NAME,
    MARKDOWN_NAME,
    AnalyzeOptions,
    between,
    run_title,
    to_markdown,
    within,
)
from train.analysis.transfer import per_class_accuracy, transfer_by_dataset

SKIPPED = [
    "Table 1 on the paper's feature (the input of the joint classifier G): here SC / CHI / DBI and MMD are "
    "computed on the model's output vector instead",
    "the per-head features and each data set's own head's cluster scores",
    "gate usage (the gate weights are inside the model)",
]
NO_ATTENTION = "attention maps (export with `export onnx --with-attention` to keep them, or analyse the checkpoint)"


def is_bundle(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return (p / "bundle.json").is_file() or (p.is_file() and p.name == "bundle.json")


def bundle_outputs(bundle: Bundle, data: Sequence[str], *, backend: str = "auto", precision: str = "fp32",
                   batch_size: int = 64, seed: int = 0, limit: int | None = None,
                   warn: Callable[[str], None] = lambda s: None) -> FeatureSet:
    """The bundle's output vector for every readable test image of each `NAME=PATH`, as a FeatureSet whose
    `fused` is that output (logits of an erudite model, joint probabilities of a zoo)."""
    from export.eval_set import load_eval_image, read_eval_set

    sets = [read_eval_set(spec, bundle.labels, limit, seed) for spec in data]
    if bundle.kind == "zoo":
        from erudite_edge.backends.registry import RunnerOptions
        from erudite_edge.inference.models import ZooModel

        zoo = ZooModel(bundle, RunnerOptions(backend, precision), announce=None)
        # Model.predict gives log-probabilities (-inf outside the routed data set): the joint probabilities
        predict, close = (lambda b: np.exp(zoo.predict(b))), zoo.close
    else:
        from erudite_edge.backends.registry import RunnerOptions, load_runner

        runner = load_runner(bundle, "main", RunnerOptions(backend, precision), announce=None)
        predict, close = runner.infer_chunked, runner.close
    out: dict[str, list[np.ndarray]] = {"fused": [], "joint": [], "dataset": []}
    skipped = 0
    try:
        for s in sets:
            for start in range(0, len(s), batch_size):
                idx, tensors = [], []
                for i in range(start, min(start + batch_size, len(s))):
                    try:
                        tensors.append(load_eval_image(s.paths[i], bundle.preprocess, s.crop_bottom))
                        idx.append(i)
                    except BadImageError as e:
                        skipped += 1
                        warn(f"warning: {e}; skipped")
                if tensors:
                    out["fused"].append(np.asarray(predict(np.stack(tensors)), dtype=np.float32))
                    out["joint"].append(s.joint[idx])
                    out["dataset"].append(np.full(len(idx), s.dataset_index, dtype=np.int64))
    finally:
        close()
    if not out["fused"]:
        raise UsageError(f"--data: none of the test images of {', '.join(s.dataset for s in sets)} could be read")
    fused = np.concatenate(out["fused"])
    return FeatureSet(fused=fused, joint=np.concatenate(out["joint"]).astype(np.int64),
                      dataset=np.concatenate(out["dataset"]), pred=fused.argmax(1).astype(np.int64), skipped=skipped,
                      meta={"bundle": str(bundle.root), "kind": bundle.kind, "precision": precision})


def attention_grid(bundle: Bundle, data: Sequence[str], per_dataset: int, path: Path, precision: str = "fp32",
                   seed: int = 0) -> dict[str, Any] | None:
    """For a bundle exported --with-attention: the group masks over the first `per_dataset` readable test
    images of each data set, one row per image (erudite_edge.outputs.attention_maps), on ONNX Runtime; None when
    the bundle's model does not expose them."""
    from erudite_edge.backends.registry import RunnerOptions, load_runner
    from erudite_edge.core.preprocess import load_image, preprocess
    from erudite_edge.outputs.attention_maps import grid, save_grid
    from export.eval_set import read_eval_set

    if bundle.kind == "zoo" or not bundle.meta.get("attention"):
        return None
    runner = load_runner(bundle, "main", RunnerOptions("onnxruntime", precision), announce=None)
    try:
        if not getattr(runner, "has_attention", False):
            return None
        rows, names = [], []
        for spec in data:
            s = read_eval_set(spec, bundle.labels, None, seed)
            taken = 0
            for p, j in zip(s.paths, s.joint):
                if taken >= per_dataset:
                    break
                try:
                    rgb = load_image(p)
                except BadImageError:
                    continue
                if s.crop_bottom and rgb.shape[0] > s.crop_bottom:
                    rgb = rgb[: rgb.shape[0] - s.crop_bottom]
                logits, masks = runner.infer_attention(preprocess(rgb, bundle.preprocess)[None])  # type: ignore[attr-defined]
                label = bundle.labels.joint_names[int(j)]
                rows.append(grid(rgb, masks[0], bundle.preprocess, label))
                names.append(label)
                taken += 1
    finally:
        runner.close()
    if not rows:
        return None
    save_grid(path, np.vstack(rows))
    return {"images": names, "groups": int(bundle.meta["attention"]["groups"]), "mask_size": bundle.meta["attention"]["mask_size"],
            "source": f"the bundle's {bundle.meta['attention']['output']!r} output ({precision}, onnxruntime)"}


def _confidence(fs: FeatureSet, kind: str) -> np.ndarray:
    p = fs.fused if kind == "zoo" else softmax(fs.fused, axis=1)  # a zoo's scores are probabilities already
    return np.asarray(p.max(axis=1))


def _variant(bundle: Bundle) -> str:
    return "zoo" if bundle.kind == "zoo" else bundle.variant


def analyze_bundle(
    bundle_dir: str | os.PathLike[str],
    data: Sequence[str],
    out: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    options: AnalyzeOptions | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Analyse an exported bundle on the test splits of `data`; `reference` is another bundle (the zoo) or
    a checkpoint run (needs torch). Writes analysis.json / analysis.md / PNGs into `out`, returns the report.
    Bad input is a UsageError or BundleError before anything is written."""
    opts = options or AnalyzeOptions()
    bundle = Bundle.load(bundle_dir)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file of that name exists; --out names a folder for the report")
    names = [spec.split("=", 1)[0] for spec in data]
    for name in names:
        if name not in bundle.labels.datasets:
            raise UsageError(f"data set {name!r} is not in the bundle's label table ({', '.join(bundle.labels.datasets)}); "
                             f"name it as it was named in training ({bundle.root})")
    ref_bundle: Bundle | None = None
    ref_ckpt: Any = None
    if reference is not None:
        if is_bundle(reference):
            ref_bundle = Bundle.load(reference)
            ref_labels = ref_bundle.labels
        else:
            try:
                from train.checkpoint import load_checkpoint
            except ImportError:
                raise UsageError(f"--reference {reference}: not a bundle, and reading a checkpoint needs torch "
                                 "(`pip install 'erudite-edge[train]'`); pass the reference's bundle") from None
            ref_ckpt = load_checkpoint(reference)
            ref_labels = ref_ckpt.labels
        ref_names = [n for n in names if n in ref_labels.datasets]
        if not ref_names:
            raise UsageError(f"--reference {reference}: trained on {', '.join(ref_labels.datasets)}, none of the data sets "
                             f"given ({', '.join(names)}); pass the Single run (or its zoo bundle) of these data sets")
    fs = bundle_outputs(bundle, data, backend=backend, precision=precision, batch_size=opts.batch_size, seed=opts.seed,
                        warn=log)
    out.mkdir(parents=True, exist_ok=True)
    fs.save(out / "outputs.npz")
    log(f"outputs of {bundle.root} ({bundle.kind}, {precision}): {len(fs.joint)} test images")
    result: dict[str, Any] = {
        "run": {"bundle": str(bundle.root), "kind": bundle.kind, "variant": _variant(bundle),
                "backbone": bundle.backbone, "precision": precision, "backend": backend,
                "datasets": list(bundle.labels.datasets), "skipped_images": fs.skipped},
        "analysed": names,
        "settings": {**asdict(opts), "feature": "the model's output vector (logits; a zoo: its joint probabilities), "
                                                "not the paper's feature: the bundle exposes nothing inside the model"},
        "within": within(fs, bundle.labels, names, opts),
        "between": between(fs, bundle.labels, names, opts),
        "skipped": list(SKIPPED),
    }
    conf = _confidence(fs, bundle.kind)
    for name, entry in result["within"].items():
        entry["confidence"] = float(conf[fs.rows(bundle.labels.datasets.index(name))].mean())
    title = run_title(result["run"]["variant"], bundle.labels, precision)
    ref_fs = None
    ref_title = ""
    if ref_bundle is not None or ref_ckpt is not None:
        ref_data = [spec for spec in data if spec.split("=", 1)[0] in ref_names]
        if ref_bundle is not None:
            ref_fs = bundle_outputs(ref_bundle, ref_data, backend=backend, precision="fp32", batch_size=opts.batch_size,
                                    seed=opts.seed, warn=log)
            ref_title = run_title(_variant(ref_bundle), ref_labels, "fp32")
            ref_info = {"bundle": str(ref_bundle.root), "variant": _variant(ref_bundle)}
        else:
            from train.analysis.features import features_for_run
            from train.data import load_datasets
            from train.loop import DistInfo, resolve_device

            ref_fs, _ = features_for_run(ref_ckpt, load_datasets(ref_data), out / "reference_features.npz",
                                         device=resolve_device(opts.device, DistInfo()), batch_size=opts.batch_size,
                                         workers=opts.workers)
            ref_title = run_title(ref_ckpt.variant, ref_labels)
            ref_info = {"checkpoint": str(ref_ckpt.path), "variant": ref_ckpt.variant}
        log(f"outputs of the reference {ref_title}: {len(ref_fs.joint)} test images")
        ref_within = within(ref_fs, ref_labels, ref_names, opts)
        if ref_ckpt is not None:  # its feature is the checkpoint's, not an output vector: the scores would not compare
            for entry in ref_within.values():
                entry["fused"] = {**entry["fused"], "sc": None, "chi": None, "dbi": None,
                                  "note": "a checkpoint reference: scored on its feature, not on outputs; left out"}
                entry.pop("own_head", None)
        result["reference"] = {**ref_info, "datasets": list(ref_labels.datasets), "skipped_images": ref_fs.skipped,
                               "within": ref_within}
        run_acc = per_class_accuracy(fs.pred, fs.joint, bundle.labels.joint_names)
        ref_acc = per_class_accuracy(ref_fs.pred, ref_fs.joint, ref_labels.joint_names)
        result["transfer"] = transfer_by_dataset(run_acc, ref_acc, ref_names)

    figures: dict[str, str] = {}
    from train.analysis import plots

    if result.get("transfer"):
        figures["figure2"] = plots.plot_per_class_change(result["transfer"], out / FIGURE2, title, ref_title).name
    if opts.tsne:
        panels = plots.tsne_panels([(title, fs)], [(bundle.labels.datasets.index(n), n) for n in names],
                                   max_samples=opts.tsne_max_samples, seed=opts.seed)
        figures["figure3"] = plots.plot_tsne(panels, out / FIGURE3, what="model outputs (logits)").name
    att = attention_grid(bundle, data, opts.attention_images, out / ATTENTION_PNG, precision, opts.seed) \
        if opts.attention_images > 0 else None
    if att is not None:
        result["attention"] = att
        figures["attention"] = ATTENTION_PNG
    else:
        result["skipped"].append(NO_ATTENTION)
    result["figures"] = figures
    write_json_atomic(out / JSON_NAME, result)
    write_text_atomic(out / MARKDOWN_NAME, to_markdown(result))
    return result

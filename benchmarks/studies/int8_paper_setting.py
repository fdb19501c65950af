"""INT8 agreement in the paper's setting: the erudite ResNet-50 at 224 px (N = 2: CUB + Cars heads),
calibrated on real photographs and checked on *other* real photographs, for both INT8 layouts.

    python -m benchmarks.studies.int8_paper_setting --out runs/int8_paper --json benchmarks/results/int8_paper_setting.json

The weights are random-init (no ImageNet or FGVC download is possible here): accuracy cannot be
measured, only top-1 agreement with FP32, and a random network's logits are close to ties (the
margin table below says how close), so a small INT8 error flips more decisions than it would on a
trained network. Every figure says so.

Images. Calibration: scikit-image's 11 sample photographs and views of them (66, what
benchmarks.studies.paper_setting calibrates on). Held out: photographs none of those are views of:
scikit-image's brick, grass, gravel, cell, text and page, scikit-learn's two sample photographs (6
views each), and the 200 LFW face photographs scikit-image ships (25 x 25 px, upscaled). Mixed
precision (`--min-agreement`, default 98) decides on the calibration photographs and is reported
on the held-out ones. Every row runs export.int8.make_int8 on a copy of the bundle.

Raw samples: beside the JSON, FILE.samples.json.gz keeps per held-out photograph each row's FP32 and INT8
top-1, the FP32 top-1/top-2 margin, the largest |INT8 - FP32| logit difference and the largest |FP32 logit|
(benchmarks.studies.int8_per_image); `python -m benchmarks.recompute FILE` re-derives every agreement, its
Wilson interval and the margin table from them. `--bundle` runs the rows on a given FP32 bundle instead of
the random-init ResNet-50 (the tests use a tiny one).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.raw import RawSamples, write_result
from benchmarks.studies.int8_per_image import checked_agreement, figures, margin_record, record, role_logits

Log = Callable[[str], None]
HELDOUT_SKIMAGE = ("brick", "grass", "gravel", "cell", "text", "page")


def heldout_photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) of real photographs that are not among the calibration photographs."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    from export.images import photo_variants

    out: list[tuple[str, np.ndarray]] = []
    sources: list[tuple[str, np.ndarray]] = []
    for name in HELDOUT_SKIMAGE:
        sources.append((name, np.asarray(getattr(skimage.data, name)())))
    for i, im in enumerate(load_sample_images().images):
        sources.append((f"sklearn{i}", np.asarray(im)))
    for name, im in sources:
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        for k, v in enumerate(photo_variants([np.ascontiguousarray(im[..., :3].astype(np.uint8))])):
            out.append((f"{name}_{k}", v))
    faces = np.asarray(skimage.data.lfw_subset())  # 200 x 25 x 25, float in [0, 1]
    for k, f in enumerate(faces):
        g = np.clip(np.round(f * 255.0), 0, 255).astype(np.uint8)
        out.append((f"lfw_{k:03d}", np.repeat(g[..., None], 3, axis=2)))
    return out


def write_heldout(folder: Path, log: Log) -> Path:
    import cv2

    if folder.is_dir() and any(folder.glob("*.png")):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    photos = heldout_photos()
    for name, rgb in photos:
        if not cv2.imwrite(str(folder / f"{name}.png"), np.ascontiguousarray(rgb[..., ::-1])):
            raise RuntimeError(f"OpenCV could not write {name}")
    log(f"wrote {len(photos)} held-out photographs to {folder}")
    return folder


def make_bundle(root: Path, photos: Path, seed: int, log: Log) -> Path:
    """The random-init erudite ResNet-50 (224 px, N = 2) as an FP32 bundle (the current export path)."""
    from benchmarks.complexity import PAPER_CLASS_COUNTS, PAPER_SETS
    from benchmarks.studies.paper_setting import DATASET_NAMES, make_checkpoint
    from export.onnx_export import export_checkpoint

    bundle = root / "erudite"
    if (bundle / "bundle.json").is_file():
        return bundle
    names = [DATASET_NAMES[s] for s in PAPER_SETS[2]]
    counts = [PAPER_CLASS_COUNTS[s] for s in PAPER_SETS[2]]
    ckpt = make_checkpoint(root / "checkpoints" / "ours", "ours", names, counts, "resnet50", 224, seed)
    t = time.perf_counter()
    export_checkpoint(ckpt, bundle, images=photos, parity_count=8, overwrite=True, log=log)
    log(f"exported in {time.perf_counter() - t:.0f} s")
    return bundle


def margins(rec: dict[str, Any]) -> dict[str, Any]:
    """From a record with margin_record's lists: agreement by band of the FP32 margin over the median INT8 error,
    the margins of the disagreeing images, the logit scale (largest |FP32 logit|)."""
    margin, err = np.asarray(rec["fp32_margin"], float), np.asarray(rec["max_abs_error"], float)
    scale = float(np.max(rec["fp32_max_abs"]))
    agree = np.asarray(rec["fp32"]) == np.asarray(rec["int8"])
    med_err = max(float(np.median(err)), 1e-12)
    bands = []
    edges = [0.0, 0.5, 1.0, 2.0, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = (margin / med_err >= lo) & (margin / med_err < hi)
        bands.append({"margin_over_median_error": [lo, None if hi == np.inf else hi], "images": int(rows.sum()),
                      "agreement": float(agree[rows].mean()) if rows.any() else None})
    return {"logit_scale": scale, "median_margin": float(np.median(margin)),
            "median_margin_over_scale": float(np.median(margin) / scale) if scale else None,
            "median_max_abs_error": float(np.median(err)), "bands": bands,
            "disagreeing_margins": [float(m) for m in margin[~agree]]}


def row_key(cfg: dict[str, Any]) -> str:
    goal = f", agreement >= {100 * cfg['min_agreement']:g} %" if cfg.get("min_agreement") else ""
    return f"{cfg['target']} {cfg['method']}{goal}"


def run_one(bundle: Path, photos: Path, heldout: Path, cfg: dict[str, Any],
            log: Log) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One row: the export's facts and the per-image record (None where the export refused)."""
    from erudite_edge.core.bundle import Bundle
    from export.images import check_inputs
    from export.int8 import Int8Options, make_int8

    with tempfile.TemporaryDirectory(prefix="erudite-int8-paper-") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy)
        t = time.perf_counter()
        try:
            options = Int8Options(method=cfg["method"], target=cfg["target"], seed=0, calib_images=photos,
                                  calib_count=10_000, images=heldout, eval_count=10_000,
                                  min_agreement=cfg.get("min_agreement"), tuning_images=photos)
            r = make_int8(Bundle.load(copy, verify=True), options, log=log)
        except Exception as e:
            return {"key": row_key(cfg), **cfg, "error": str(e).splitlines()[0]}, None
        seconds = time.perf_counter() - t
        b = Bundle.load(copy)
        inputs = check_inputs(b.preprocess, images=heldout, count=10_000)
        fp32, int8 = role_logits(b, "fp32", inputs), role_logits(b, "int8", inputs)
        rec = {**record(b, inputs, fp32, int8), **margin_record(fp32["main"], int8["main"])}
        checked_agreement(rec, r, row_key(cfg))
    main = r["roles"]["main"]
    mp = r.get("mixed_precision", {}).get("main", {})
    return {"key": row_key(cfg), **cfg, "seconds": round(seconds, 1), "count": r["count"],
            "max_abs_diff": main["max_abs_diff"], "logit_scale": main["logit_scale"], "calibration": r["calibration"],
            "float_nodes": len(mp.get("nodes", [])), "kept_float": mp.get("kept_float", []),
            "tuning_images": mp.get("tuning_images")}, rec


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the per-image records (what `python -m benchmarks.recompute` runs again): per row the
    agreement with its Wilson interval and the margin table. No goal verdict: without labelled data the export
    checks --min-agreement as measured, and the weights are random (no accuracy)."""
    return {"figures": {key: {**figures(rec), "margins": margins(rec)} for key, rec in raw.values.get("records", {}).items()}}


def render(rows: list[dict[str, Any]], figs: dict[str, dict[str, Any]]) -> str:
    lines = ["| target | method | goal | top-1 agreement % [95 %] (held-out photos) | images | max abs logit diff / scale | "
             "median FP32 top-1 margin | float nodes |", "| --- " * 8 + "|"]
    for r in rows:
        goal = f"agreement >= {100 * r['min_agreement']:.0f}%" if r.get("min_agreement") else "none"
        if "error" in r:
            lines.append(f"| {r['target']} | {r['method']} | {goal} | failed: {r['error']} | | | | |")
            continue
        f = figs[r["key"]]
        m, (lo, hi) = f["margins"], f["agreement_ci95"]
        lines.append(f"| {r['target']} | {r['method']} | {goal} | {100 * f['agreement']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {r['count']} | "
                     f"{r['max_abs_diff']:.3f} / {r['logit_scale']:.2f} | {m['median_margin']:.3f} | {r['float_nodes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.int8_paper_setting", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/int8_paper"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--targets", default="onnxruntime,tensorrt")
    ap.add_argument("--min-agreement", type=float, default=98.0, help="percent; 0: fully quantized rows only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=None,
                    help="an FP32 bundle to quantize instead of the random-init ResNet-50 (made under --out)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    from benchmarks.studies.paper_setting import write_photos

    photos = write_photos(args.out / "photos", log)
    heldout = write_heldout(args.out / "heldout", log)
    bundle = args.bundle or make_bundle(args.out, photos, args.seed, log)
    configs = []
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        configs.append({"target": target, "method": "minmax"})
        if args.min_agreement:
            configs.append({"target": target, "method": "minmax", "min_agreement": args.min_agreement / 100})
    rows: list[dict[str, Any]] = []
    raw = RawSamples("int8_paper_setting", values={"records": {}})
    command = "python -m benchmarks.studies.int8_paper_setting " + " ".join(argv if argv is not None else sys.argv[1:])
    weights = (f"random init (seed {args.seed}); accuracy not measurable" if args.bundle is None
               else f"those of {args.bundle}")
    result: dict[str, Any] = {}
    for cfg in configs:
        log(f"== {cfg}")
        row, rec = run_one(bundle, photos, heldout, cfg, log)
        rows.append(row)
        if rec is not None:
            raw.values["records"][row["key"]] = rec
        result = {"command": command.strip(), "weights": weights, "bundle": str(bundle), "settings": {}, "rows": rows,
                  **derive(raw, {})}
        if args.json:  # after each row: a killed run leaves the rows done
            write_result(args.json, result, raw)
    print(render(rows, result.get("figures", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())

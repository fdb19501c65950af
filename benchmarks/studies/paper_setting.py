"""The paper's setting, end to end on this machine: ResNet-50 at 224 px, N = 2 (CUB + Cars: 200 + 196
classes) and N = 4 (+ Aircraft 100 + Flowers 102), erudite model against the Single zoo.

    python -m benchmarks.studies.paper_setting --out runs/paper_setting

For each N it builds random-init checkpoints (`ours` and `single`; timing and size need no training),
exports them through the real export path (export.onnx_export.export_checkpoint, export.zoo.export_zoo,
each parity-checked against PyTorch), makes the INT8 models (export.int8.make_int8, calibrated on real
photographs: scikit-image's sample images, written as JPEGs; laid out for ONNX Runtime's CPU provider
unless --int8-target tensorrt) and, on request, FP16 models, then runs
the bench (benchmarks.bench.run_bench) with those photographs as the --source folder for the
end-to-end measurement and the INT8-vs-FP32 agreement. Results: OUT/N<n>/bench/bench.{json,md,png}
and OUT/summary.md. Bundles already made by an earlier run are reused (--rebuild to make them anew).

Random weights make accuracy meaningless but cost exactly what trained weights cost (and the INT8
calibration ranges are those of these weights on real images). Needs the training extras (torch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from benchmarks.bench import BenchConfig, bundle_precisions, run_bench
from benchmarks.complexity import PAPER_CLASS_COUNTS, PAPER_SETS
from benchmarks.report import goal_lines, render_terminal, stdout_console, write_outputs
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.fileio import write_text_atomic

Log = Callable[[str], None]
DATASET_NAMES = {"CUB": "cub", "Cars": "cars", "Aircraft": "aircraft", "Flowers": "flowers"}


def write_photos(folder: Path, log: Log) -> Path:
    """scikit-image's sample photographs and views of them (export.images), as JPEG files."""
    import cv2

    from export.images import photo_variants, sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if existing:
        return folder
    photos = photo_variants(sample_photos())
    if not photos:
        raise SystemExit("scikit-image is not installed: `pip install scikit-image` (its sample photos calibrate INT8)")
    for i, rgb in enumerate(photos):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode photo {i}")
        buf.tofile(str(folder / f"photo_{i:03d}.jpg"))
    log(f"wrote {len(photos)} photographs to {folder}")
    return folder


def make_checkpoint(run_dir: Path, variant: str, names: Sequence[str], counts: Sequence[int], backbone: str,
                    size: int, seed: int) -> Path:
    """A random-init checkpoint of `variant` in the training run layout (RUN/best/)."""
    import torch

    from erudite_edge.core.labels import LabelSpace
    from erudite_edge.core.preprocess import PreprocessSpec
    from train.checkpoint import save_checkpoint
    from train.model import build_model
    from train.model_spec import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(variant=variant, backbone=backbone, class_counts=list(counts), pretrained=False)
    model = build_model(cfg).eval()
    labels = LabelSpace.build(list(names), [[f"class{i:03d}" for i in range(k)] for k in counts])
    save_checkpoint(run_dir, "best", model, model_config=cfg, labels=labels, preprocess=PreprocessSpec.square(size),
                    extra={"epoch": 0, "note": "random init, for timing (benchmarks.studies.paper_setting)"})
    return run_dir


def int8_target_of(bundle_dir: Path) -> str | None:
    """The target the bundle's int8 models were laid out for (None: no int8 model; entries made before
    targets existed were TensorRT's layout)."""
    bundle = Bundle.load(bundle_dir)
    entries = [m for m in bundle.models if m.precision == "int8" and m.format == "onnx"]
    if not entries:
        return None
    return str((entries[0].info or {}).get("target", "tensorrt"))


def prepare_bundles(root: Path, n: int, *, backbone: str, size: int, precisions: Sequence[str], photos: Path,
                    calib_count: int, rebuild: bool, seed: int, log: Log,
                    int8_target: str = "onnxruntime") -> tuple[Path, Path]:
    """The erudite and zoo bundles of the N-data-set setting, with every precision asked for (the int8
    models laid out for `int8_target`; an int8 model of another target is made anew)."""
    from export.fp16 import make_fp16
    from export.int8 import Int8Options, make_int8
    from export.onnx_export import export_checkpoint
    from export.zoo import export_zoo

    names = [DATASET_NAMES[s] for s in PAPER_SETS[n]]
    counts = [PAPER_CLASS_COUNTS[s] for s in PAPER_SETS[n]]
    out = {"erudite": root / "erudite", "zoo": root / "zoo"}
    for kind, variant in (("erudite", "ours"), ("zoo", "single")):
        bundle_dir = out[kind]
        if rebuild or not (bundle_dir / "bundle.json").is_file():
            t0 = time.perf_counter()
            ckpt = make_checkpoint(root / "checkpoints" / variant, variant, names, counts, backbone, size, seed)
            export = export_checkpoint if kind == "erudite" else export_zoo
            export(ckpt, bundle_dir, images=photos, parity_count=8, overwrite=True, log=log)
            log(f"N={n} {kind}: exported in {time.perf_counter() - t0:.0f} s")
        have = bundle_precisions(Bundle.load(bundle_dir))
        if "fp16" in precisions and "fp16" not in have:
            t0 = time.perf_counter()
            make_fp16(Bundle.load(bundle_dir, verify=True), images=photos, count=16, log=log)
            log(f"N={n} {kind}: fp16 in {time.perf_counter() - t0:.0f} s")
        if "int8" in precisions and ("int8" not in have or int8_target_of(bundle_dir) != int8_target):
            t0 = time.perf_counter()
            options = Int8Options(method="minmax", target=int8_target, calib_images=photos, calib_count=calib_count,
                                  images=photos, eval_count=16)
            make_int8(Bundle.load(bundle_dir, verify=True), options, log=log)
            log(f"N={n} {kind}: int8 ({int8_target} layout) in {time.perf_counter() - t0:.0f} s")
    return out["erudite"], out["zoo"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.paper_setting", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/paper_setting"))
    ap.add_argument("--n", default="2,4", help="numbers of data sets (2, 3, 4)")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precision", default="fp32,int8", help="precisions to make and bench (fp32 always; fp16, int8)")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--warmup-ms", type=float, default=200.0)
    ap.add_argument("--iters", type=int, default=10, help="at least this many timed calls per model and batch")
    ap.add_argument("--min-duration-s", type=float, default=3.0, help="and at least this many seconds")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per model for peak memory (0: skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ort-spinning", action="store_true",
                    help="ONNX Runtime thread spinning on (its default; off is the fair setting: see onnxruntime_runner)")
    ap.add_argument("--source-limit", type=int, default=32, help="photographs used for the end-to-end run")
    ap.add_argument("--calib-count", type=int, default=32, help="INT8 calibration images per model")
    ap.add_argument("--int8-target", choices=["onnxruntime", "tensorrt"], default="onnxruntime",
                    help="layout of the INT8 models (export int8 --target). Default onnxruntime: this bench runs on "
                         "ONNX Runtime's CPU provider, which runs the tensorrt layout slower than FP32")
    ap.add_argument("--rebuild", action="store_true", help="export the bundles anew even where they exist")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from rich.console import Console

    from benchmarks.bench import parse_int_list, parse_precisions

    ns = parse_int_list(args.n, "--n")
    if any(n not in PAPER_SETS for n in ns):
        ap.error("--n: 2, 3 or 4")
    precisions = parse_precisions(args.precision) or ["fp32", "int8"]
    if "fp32" not in precisions:
        precisions = ["fp32", *precisions]
    batches = parse_int_list(args.batch, "--batch")
    err = Console(stderr=True)
    log: Log = lambda msg: err.print(msg, style="dim", markup=False, highlight=False)  # noqa: E731
    out = args.out
    photos = write_photos(out / "photos", log)
    command = "python -m benchmarks.studies.paper_setting " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = [f"# Paper setting: {args.backbone} at {args.size} px\n", f"command: `{command.strip()}`\n"]
    if "int8" in precisions:
        summary.append(f"INT8 models: `export int8 --target {args.int8_target}` layout\n")
    stdout = stdout_console()
    for n in ns:
        root = out / f"N{n}"
        erudite, zoo = prepare_bundles(root, n, backbone=args.backbone, size=args.size, precisions=precisions,
                                       photos=photos, calib_count=args.calib_count, rebuild=args.rebuild,
                                       seed=args.seed, log=log, int8_target=args.int8_target)
        cfg = BenchConfig(bundle=erudite, zoo=zoo, backend="onnxruntime", precisions=precisions, batches=batches,
                          warmup=args.warmup, warmup_ms=args.warmup_ms, iters=args.iters,
                          min_duration_s=args.min_duration_s, rounds=args.rounds, threads=args.threads,
                          memory_repeats=args.memory_repeats,
                          ort_spinning=args.ort_spinning,
                          source=photos, source_limit=args.source_limit, seed=args.seed,
                          command=f"erudite-edge bench --bundle {erudite} --zoo {zoo} --backend onnxruntime "
                                  f"--precision {','.join(precisions)} --batch {args.batch} --warmup {args.warmup} "
                                  f"--warmup-ms {args.warmup_ms:g} --iters {args.iters} --min-duration-s {args.min_duration_s:g} "
                                  f"--rounds {args.rounds} --memory-repeats {args.memory_repeats} --source {photos} "
                                  f"--source-limit {args.source_limit}"
                                  + (f" --threads {args.threads}" if args.threads else "")
                                  + (" --ort-spinning" if args.ort_spinning else ""))
        t0 = time.perf_counter()
        result, raw = run_bench(cfg, console=err)
        result["paper_setting"] = {"n": n, "bench_s": round(time.perf_counter() - t0, 1), "command": command.strip(),
                                   "int8_target": args.int8_target if "int8" in precisions else None}
        stdout.rule(f"N = {n}")
        render_terminal(result, stdout)
        written = write_outputs(result, root / "bench", raw=raw)
        log("wrote " + ", ".join(str(p) for p in written.values()))
        summary.append(f"## N = {n}\n")
        summary.append("\n".join(f"- {line}" for line in goal_lines(result)) + "\n")
        summary.append(f"Full report: `{root / 'bench' / 'bench.md'}`\n")
    write_text_atomic(out / "summary.md", "\n".join(summary))
    log(f"wrote {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 14 before/after: float32 host preprocessing against uint8 inputs normalised in the graph.

    python -m benchmarks.studies.preprocess_uint8 --out runs/preprocess_uint8 [--rounds 7] [--demo-images DIR]

Two models, random-init (timing needs no training), each exported twice through the real export path
(export_checkpoint, parity-checked): `--input float32` (before: what every bundle was) and
`--input uint8` (after):
  demo   EfficientNet-Lite0 at 64 px, N = 3 (the demo's digits 10 + mnist 10 + faces 2 classes), on the
         demo's own test images (64 x 64 PNG files; --demo-images, default the shared demo's data);
  paper  ResNet-50 at 224 px, N = 2 (CUB 200 + Cars 196), on scikit-image's sample photographs and
         views of them written as JPEG files (about 300 x 300 to 512 x 512).

Measured, before and after interleaved round by round (the order swapped every round):
  1. host preprocessing per image at batch 8, one thread: from decoded RGB (resize, normalise, batch
     assembly) and from the file's bytes (+ decoding). Before: decode to BGR and convert, resize,
     normalise to float32 NCHW, np.stack (the code as it was; its functions are unchanged in
     erudite_edge.core.preprocess with a float32 spec, the decoder's old two steps written out here).
     After: decode straight to RGB, resize into a slot of the pipeline's InputRing, the batch a view.
  2. end-to-end folder throughput (`erudite-edge run FOLDER`'s Pipeline) against pure inference on the
     same images already preprocessed, batch 8, ONNX Runtime CPU (benchmarks.end_to_end.measure, one
     round of each per bundle per round; the folder tiled until a pass lasts --min-pass-s, 3 s);
  3. bytes per image in the model's input tensor (what is copied to a device).
Results: OUT/preprocess_uint8.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from benchmarks.end_to_end import load_folder, measure
from benchmarks.stats import throughput_ratio_ci
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.preprocess import PreprocessSpec, normalize, preprocess_into, resize_image
from erudite_edge.inference.batch_buffer import InputRing
from erudite_edge.inference.models import load_model

BATCH = 8
DEMO_DATA = Path("/work/shared_demo/demo/data")


def decode_before(data: np.ndarray) -> np.ndarray:
    """The decoder as it was: BGR, then a full-size colour conversion."""
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def decode_after(data: np.ndarray) -> np.ndarray:
    from erudite_edge.core.preprocess import decode_image

    return decode_image(data)


def host_before(images: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    return np.stack([normalize(resize_image(im, spec), spec) for im in images])


def host_after(images: list[np.ndarray], spec: PreprocessSpec, ring: InputRing, start: int) -> np.ndarray:
    for i, im in enumerate(images):
        preprocess_into(im, spec, ring.slot(start + i))
    return ring.batch_of(list(range(start, start + len(images))))


def per_image_ms(fn: Callable[[], Any], n_images: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3 / n_images


def graph_normalisation(bundle: Bundle, work: Path) -> Any:
    """An ONNX Runtime session of the uint8 model's first four nodes alone (Cast, Transpose, Mul, Add):
    the normalisation's cost where it moved to (on a GPU backend it runs on the device instead)."""
    import onnx

    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner

    sub = work / "preprocess_only.onnx"
    onnx.utils.extract_model(str(bundle.path(bundle.entry())), str(sub), ["images"], ["preprocess/normalized"])
    return OnnxRuntimeRunner(sub).session


def host_timing(files: list[Path], spec_f32: PreprocessSpec, spec_u8: PreprocessSpec, rounds: int,
                graph: Any = None) -> dict[str, Any]:
    """Per-image ms of each batch of 8, before and after, alternating batch by batch. With `graph` (a
    session of the uint8 model's normalisation nodes), also their cost on ONNX Runtime CPU per image."""
    raw = [np.fromfile(str(p), dtype=np.uint8) for p in files]
    decoded = [decode_before(r) for r in raw]
    ring = InputRing(spec_u8, BATCH, depth=2 * BATCH)
    out: dict[str, list[float]] = {k: [] for k in ("prep_before", "prep_after", "full_before", "full_after")}
    if graph is not None:
        out["graph_after"] = []
    batches = [list(range(i, min(i + BATCH, len(raw)))) for i in range(0, len(raw) - BATCH + 1, BATCH)]
    seq = 0
    for r in range(rounds):
        for b in batches:
            ims, datas = [decoded[i] for i in b], [raw[i] for i in b]
            order = ("before", "after") if (r + b[0]) % 2 == 0 else ("after", "before")
            for side in order:
                if side == "before":
                    out["prep_before"].append(per_image_ms(lambda: host_before(ims, spec_f32), len(b)))
                    out["full_before"].append(per_image_ms(lambda: host_before([decode_before(d) for d in datas], spec_f32), len(b)))
                else:
                    out["prep_after"].append(per_image_ms(lambda: host_after(ims, spec_u8, ring, seq), len(b)))
                    out["full_after"].append(per_image_ms(lambda: host_after([decode_after(d) for d in datas], spec_u8, ring, seq), len(b)))
                    if graph is not None:
                        x = host_after(ims, spec_u8, ring, seq)
                        out["graph_after"].append(per_image_ms(lambda: graph.run(None, {"images": x}), len(b)))
                    seq += len(b)
    res: dict[str, Any] = {"n_batches": len(out["prep_before"]), "batch": BATCH, "images": len(raw),
                           "image_size": list(decoded[0].shape[:2])}
    for k, v in out.items():
        res[k] = {"p50_ms_per_image": float(np.percentile(v, 50)), "p99_ms_per_image": float(np.percentile(v, 99)), "n": len(v)}
    for what in ("prep", "full"):
        before, after = out[f"{what}_before"], out[f"{what}_after"]
        iv = throughput_ratio_ci(before, after)  # paired by batch: median(before) / median(after)
        res[f"{what}_speedup"] = {"ratio": float(np.median(before) / np.median(after)),
                                  "ci95": [float(x) for x in iv] if iv is not None else None}
    if graph is not None:  # the normalisation moved into the graph, counted against the after side (CPU backend)
        moved = [a + g for a, g in zip(out["prep_after"], out["graph_after"])]
        iv = throughput_ratio_ci(out["prep_before"], moved)
        res["prep_speedup_with_graph_on_cpu"] = {"ratio": float(np.median(out["prep_before"]) / np.median(moved)),
                                                 "ci95": [float(x) for x in iv] if iv is not None else None}
    return res


def model_latency(bundles: dict[str, Bundle], folder: Path, rounds: int, calls: int) -> dict[str, Any]:
    """Pure inference ms per batch of 8 of the float32 model (on host-normalised floats) and of the uint8
    model (on bytes, normalising in its graph), interleaved call block by call block: what the
    normalisation costs where it moved to, on ONNX Runtime CPU (on a GPU it runs on the device)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))[:BATCH]
    runners, inputs = {}, {}
    for dt, b in bundles.items():
        from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
        from erudite_edge.core.preprocess import load_image, preprocess_batch

        runners[dt] = OnnxRuntimeRunner(b.path(b.entry()))
        inputs[dt] = preprocess_batch([load_image(p) for p in files], b.preprocess)
        runners[dt].infer(inputs[dt])  # warm-up
    ms: dict[str, list[float]] = {dt: [] for dt in bundles}
    for r in range(rounds):
        for dt in (("float32", "uint8") if r % 2 == 0 else ("uint8", "float32")):
            for _ in range(calls):
                t0 = time.perf_counter()
                runners[dt].infer(inputs[dt])
                ms[dt].append((time.perf_counter() - t0) * 1e3)
    iv = throughput_ratio_ci(ms["uint8"], ms["float32"])
    out: dict[str, Any] = {dt: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)), "n": len(v)}
                           for dt, v in ms.items()}
    out["uint8_over_float32_p50"] = {"ratio": float(np.median(ms["uint8"]) / np.median(ms["float32"])),
                                     "ci95": [float(x) for x in iv] if iv is not None else None}
    return out


def make_bundles(root: Path, name: str, backbone: str, size: int, names: list[str], counts: list[int],
                 images: Path, log: Callable[[str], None]) -> dict[str, Bundle]:
    from benchmarks.studies.paper_setting import make_checkpoint
    from export.onnx_export import export_checkpoint

    ckpt = root / name / "checkpoint"
    if not (ckpt / "best").exists():
        make_checkpoint(ckpt, "ours", names, counts, backbone, size, seed=0)
    out = {}
    for dt in ("float32", "uint8"):
        d = root / name / dt
        if not (d / "bundle.json").is_file():
            t0 = time.perf_counter()
            export_checkpoint(ckpt, d, images=images, parity_count=8, overwrite=True, input_dtype=dt, log=log)
            log(f"{name} {dt}: exported in {time.perf_counter() - t0:.0f} s")
        out[dt] = Bundle.load(d)
    return out


def end_to_end(bundles: dict[str, Bundle], folder: Path, rounds: int, limit: int, log: Callable[[str], None],
               min_pass_s: float = 3.0) -> dict[str, Any]:
    sides: dict[str, dict[str, Any]] = {}
    for dt, b in bundles.items():
        clf = load_model(b, RunnerOptions("onnxruntime", "fp32"), announce=None)
        sides[dt] = {"clf": clf, "images": load_folder(str(folder), b.preprocess, limit=limit), "e2e": [], "pure": [],
                     "stage": []}
    for r in range(rounds):
        order = ("float32", "uint8") if r % 2 == 0 else ("uint8", "float32")
        for dt in order:
            s, b = sides[dt], bundles[dt]
            m = measure(s["clf"], s["images"], b.labels, b.preprocess, BATCH, rounds=1, min_pass_s=min_pass_s)
            s["e2e"].append(m.e2e_ips)
            s["pure"].append(m.pure_ips)
            s["stage"].append(m.stage_ms_per_image)
            log(f"  round {r + 1}/{rounds} {dt}: e2e {m.e2e_ips:.1f} img/s, pure {m.pure_ips:.1f} img/s, ratio {m.ratio:.3f}")
    res: dict[str, Any] = {"rounds": rounds, "batch": BATCH, "images": len(sides["uint8"]["images"].paths),
                           "min_pass_s": min_pass_s}
    for dt, s in sides.items():
        s["clf"].close()
        ratios = [e / p for e, p in zip(s["e2e"], s["pure"])]
        iv = throughput_ratio_ci(s["e2e"], s["pure"])
        stage_keys = s["stage"][-1].keys()
        res[dt] = {"e2e_ips_median": statistics.median(s["e2e"]), "pure_ips_median": statistics.median(s["pure"]),
                   "e2e_over_pure": statistics.median(s["e2e"]) / statistics.median(s["pure"]),
                   "e2e_over_pure_ci95": [float(x) for x in iv] if iv is not None else None,
                   "round_ratios": [round(x, 4) for x in ratios],
                   "stage_ms_per_image_median": {k: statistics.median(st[k] for st in s["stage"]) for k in stage_keys},
                   "bytes_per_image": bundles[dt].preprocess.bytes_per_image}
    iv = throughput_ratio_ci(sides["uint8"]["e2e"], sides["float32"]["e2e"])
    res["e2e_uint8_over_float32"] = {"ratio": statistics.median(sides["uint8"]["e2e"]) / statistics.median(sides["float32"]["e2e"]),
                                     "ci95": [float(x) for x in iv] if iv is not None else None}
    return res


def demo_images(src: Path, dst: Path, per_set: int) -> Path:
    if dst.is_dir() and any(dst.iterdir()):
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for ds in ("digits", "mnist", "faces"):
        files = sorted((src / ds / "test").rglob("*.png"))
        step = max(1, len(files) // per_set)
        for p in files[::step][:per_set]:
            shutil.copy(p, dst / f"{ds}_{p.name}")
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/preprocess_uint8"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--host-rounds", type=int, default=5)
    ap.add_argument("--demo-images", type=Path, default=DEMO_DATA)
    ap.add_argument("--paper-limit", type=int, default=48, help="images of the 224 px end-to-end run")
    ap.add_argument("--models", default="demo,paper")
    ap.add_argument("--min-pass-s", type=float, default=3.0,
                    help="end to end: tile the folder until one pass of each side lasts this long")
    ap.add_argument("--host-only", action="store_true", help="only the host preprocessing timing (OUT/preprocess_uint8_host.json)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    from benchmarks.studies.paper_setting import write_photos

    args.out.mkdir(parents=True, exist_ok=True)
    photos = write_photos(args.out / "photos", log)
    demo = demo_images(args.demo_images, args.out / "demo_images", per_set=64)
    settings = {
        "demo": ("efficientnet_lite0", 64, ["digits", "mnist", "faces"], [10, 10, 2], demo, 192),
        "paper": ("resnet50", 224, ["cub", "cars"], [200, 196], photos, args.paper_limit),
    }
    report: dict[str, Any] = {"machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                                          "onnxruntime": __import__("onnxruntime").__version__, "opencv": cv2.__version__},
                              "command": "python -m benchmarks.studies.preprocess_uint8 " + " ".join(argv or __import__("sys").argv[1:])}
    for name in args.models.split(","):
        backbone, size, names, counts, folder, limit = settings[name]
        bundles = make_bundles(args.out, name, backbone, size, names, counts, photos, log)
        files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
        log(f"{name}: host preprocessing, {len(files)} images, batch {BATCH}")
        graph = graph_normalisation(bundles["uint8"], args.out / name)
        host = host_timing(files, bundles["float32"].preprocess, bundles["uint8"].preprocess, args.host_rounds, graph)
        log(json.dumps({k: host[k] for k in ("prep_speedup", "full_speedup", "prep_speedup_with_graph_on_cpu")}))
        lat = model_latency(bundles, folder, args.host_rounds, 10 if size < 100 else 2)
        log(json.dumps(lat))
        if args.host_only:
            report[name] = {"backbone": backbone, "input_size": size, "host": host, "model_latency_batch8": lat}
            (args.out / "preprocess_uint8_host.json").write_text(json.dumps(report, indent=1) + "\n")
            continue
        log(f"{name}: end to end against pure inference, {args.rounds} rounds")
        e2e = end_to_end(bundles, folder, args.rounds, limit, log, args.min_pass_s)
        report[name] = {"backbone": backbone, "input_size": size, "host": host, "model_latency_batch8": lat, "end_to_end": e2e,
                        "bytes_per_image": {dt: b.preprocess.bytes_per_image for dt, b in bundles.items()}}
        (args.out / "preprocess_uint8.json").write_text(json.dumps(report, indent=1) + "\n")
    log(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

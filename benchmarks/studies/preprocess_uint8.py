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
Goals (issue 14), each judged on its 95 % interval (benchmarks.stats.Verdict, never on a point value):
host preprocessing per image at least 2x lower at batch 8 (without and with decoding; interval over the
batches), uint8 end to end at least 0.97 (paper) / 0.85 (demo) of pure inference (interval over the rounds).
Every part records the machine's load (benchmarks.load).
Results: OUT/preprocess_uint8.json (rewritten after each model) with its raw samples beside it
(preprocess_uint8.samples.json.gz: every batch's and call's time, every round's images/s and stage times);
`python -m benchmarks.recompute OUT/preprocess_uint8.json` re-derives every figure and verdict.
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
from benchmarks.load import load_summary, recorded
from benchmarks.raw import RawSamples, rounded, samples_path, write_result
from benchmarks.stats import Interval, Verdict, throughput_ratio_ci
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.preprocess import PreprocessSpec, normalize, preprocess_into, resize_image
from erudite_edge.inference.batch_buffer import InputRing
from erudite_edge.inference.models import load_model

BATCH = 8
HOST_SPEEDUP_GOAL = 2.0  # issue 14: host preprocessing per image at least 2x lower at batch 8
E2E_GOALS = {"demo": 0.85, "paper": 0.97}  # issue 14: uint8 end to end / pure inference, per model
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
                graph: Any = None) -> dict[str, list[float]]:
    """Per-image ms of each batch of 8, before and after, alternating batch by batch (the raw samples,
    rounded). With `graph` (a session of the uint8 model's normalisation nodes), also their cost on
    ONNX Runtime CPU per image."""
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
    return {k: rounded(v) for k, v in out.items()}


def _ci(iv: Any) -> list[float] | None:
    return None if iv is None else [round(iv.lo, 5), round(iv.hi, 5)]


def host_figures(out: dict[str, list[float]]) -> dict[str, Any]:
    """Percentiles per side and the speed-ups median(before) / median(after), each with a paired bootstrap
    interval over the batches (benchmarks.stats)."""
    res: dict[str, Any] = {"n_batches": len(out["prep_before"]), "batch": BATCH}
    for k, v in out.items():
        res[k] = {"p50_ms_per_image": float(np.percentile(v, 50)), "p99_ms_per_image": float(np.percentile(v, 99)), "n": len(v)}
    for what in ("prep", "full"):
        before, after = out[f"{what}_before"], out[f"{what}_after"]
        iv = throughput_ratio_ci(before, after)  # paired by batch: median(before) / median(after)
        res[f"{what}_speedup"] = {"ratio": float(np.median(before) / np.median(after)), "ci95": _ci(iv),
                                  "units": None if iv is None else iv.units}
    if "graph_after" in out:  # the normalisation moved into the graph, counted against the after side (CPU backend)
        moved = [a + g for a, g in zip(out["prep_after"], out["graph_after"])]
        iv = throughput_ratio_ci(out["prep_before"], moved)
        res["prep_speedup_with_graph_on_cpu"] = {"ratio": float(np.median(out["prep_before"]) / np.median(moved)),
                                                 "ci95": _ci(iv), "units": None if iv is None else iv.units}
    return res


def model_latency(bundles: dict[str, Bundle], folder: Path, rounds: int, calls: int) -> dict[str, list[float]]:
    """Pure inference ms per batch of 8 of the float32 model (on host-normalised floats) and of the uint8
    model (on bytes, normalising in its graph), interleaved call block by call block: what the
    normalisation costs where it moved to, on ONNX Runtime CPU (on a GPU it runs on the device). The raw
    samples, rounded."""
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
    return {k: rounded(v) for k, v in ms.items()}


def latency_figures(ms: dict[str, list[float]]) -> dict[str, Any]:
    iv = throughput_ratio_ci(ms["uint8"], ms["float32"])
    out: dict[str, Any] = {dt: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)), "n": len(v)}
                           for dt, v in ms.items()}
    out["uint8_over_float32_p50"] = {"ratio": float(np.median(ms["uint8"]) / np.median(ms["float32"])), "ci95": _ci(iv),
                                     "units": None if iv is None else iv.units}
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
               raw: RawSamples, name: str, min_pass_s: float = 3.0) -> int:
    """End to end against pure inference, float32 and uint8 alternating round by round, into `raw`: each
    round's images/s of both sides (raw.end_to_end NAME/DTYPE), its stage times (values) and its load.
    Returns the number of images."""
    sides: dict[str, dict[str, Any]] = {}
    for dt, b in bundles.items():
        clf = load_model(b, RunnerOptions("onnxruntime", "fp32"), announce=None)
        sides[dt] = {"clf": clf, "images": load_folder(str(folder), b.preprocess, limit=limit)}
        raw.end_to_end[f"{name}/{dt}"] = {"e2e_ips": [], "pure_ips": []}
        raw.values[f"{name}/stage/{dt}"] = []
    for r in range(rounds):
        order = ("float32", "uint8") if r % 2 == 0 else ("uint8", "float32")
        for dt in order:
            s, b = sides[dt], bundles[dt]
            m = measure(s["clf"], s["images"], b.labels, b.preprocess, BATCH, rounds=1, min_pass_s=min_pass_s)
            raw.end_to_end[f"{name}/{dt}"]["e2e_ips"].append(m.e2e_rounds_ips[0])
            raw.end_to_end[f"{name}/{dt}"]["pure_ips"].append(m.pure_rounds_ips[0])
            raw.values[f"{name}/stage/{dt}"].append(rounded(m.stage_ms_per_image))
            if m.load:
                raw.loads[f"{name} end to end round {r + 1} {dt}"] = m.load
            log(f"  round {r + 1}/{rounds} {dt}: e2e {m.e2e_ips:.1f} img/s, pure {m.pure_ips:.1f} img/s, ratio {m.ratio:.3f}")
    for s in sides.values():
        s["clf"].close()
    return len(sides["uint8"]["images"].paths)


def e2e_figures(raw: RawSamples, name: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    e2e = {dt: raw.end_to_end[f"{name}/{dt}"] for dt in ("float32", "uint8")}
    for dt, r in e2e.items():
        stages = raw.values[f"{name}/stage/{dt}"]
        iv = throughput_ratio_ci(r["e2e_ips"], r["pure_ips"])
        res[dt] = {"e2e_ips_median": statistics.median(r["e2e_ips"]), "pure_ips_median": statistics.median(r["pure_ips"]),
                   "e2e_over_pure": statistics.median(r["e2e_ips"]) / statistics.median(r["pure_ips"]),
                   "e2e_over_pure_ci95": _ci(iv), "units": None if iv is None else iv.units,
                   "round_ratios": [round(e / p, 4) for e, p in zip(r["e2e_ips"], r["pure_ips"])],
                   "stage_ms_per_image_median": {k: statistics.median(st[k] for st in stages) for k in stages[-1]}}
    iv = throughput_ratio_ci(e2e["uint8"]["e2e_ips"], e2e["float32"]["e2e_ips"])
    res["e2e_uint8_over_float32"] = {"ratio": statistics.median(e2e["uint8"]["e2e_ips"]) / statistics.median(e2e["float32"]["e2e_ips"]),
                                     "ci95": _ci(iv), "units": None if iv is None else iv.units}
    return res


def goal(name: str, value: float, ci: Any, op: str, limit: float) -> dict[str, Any]:
    """A goal judged on its interval (benchmarks.stats.Verdict: never on the point value)."""
    iv = Interval.from_json(ci.get("ci95"), ci.get("units"))
    v = Verdict(iv, op, limit)
    return {"name": name, "value": value, "threshold": f"{op} {limit:g}", "ci95": ci.get("ci95"), "status": v.status,
            "reason": v.reason}


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): per model the
    host timings and speed-ups, the pure-inference latencies, end to end against pure inference, and the
    goals judged on their intervals: host preprocessing per image at least HOST_SPEEDUP_GOAL x lower
    (without and with decoding), uint8 end to end at least E2E_GOALS[model] of pure inference; the load."""
    out: dict[str, Any] = {}
    for name in settings["models"]:
        m: dict[str, Any] = {}
        host = {k.split("/")[-1]: v for k, v in raw.values.items() if k.startswith(f"{name}/host/")}
        m["host"] = host_figures(host)
        goals = [goal(f"host preprocessing speed-up, {w}", m["host"][f"{w}_speedup"]["ratio"], m["host"][f"{w}_speedup"],
                      ">=", HOST_SPEEDUP_GOAL) for w in ("prep", "full")]
        m["model_latency_batch8"] = latency_figures({dt: raw.values[f"{name}/model/{dt}"] for dt in ("float32", "uint8")})
        if f"{name}/uint8" in raw.end_to_end:
            m["end_to_end"] = e2e_figures(raw, name)
            u8 = m["end_to_end"]["uint8"]
            goals.append(goal("uint8 end to end / pure inference, batch 8", u8["e2e_over_pure"],
                              {"ci95": u8["e2e_over_pure_ci95"], "units": u8["units"]}, ">=", E2E_GOALS[name]))
        m["goals"] = goals
        out[name] = m
    out["load"] = load_summary(raw.load_records())
    return out


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


def measure_model(name: str, bundles: dict[str, Bundle], folder: Path, args: argparse.Namespace, limit: int,
                  raw: RawSamples, log: Callable[[str], None], work: Path) -> dict[str, Any]:
    """Time one model's float32 and uint8 bundles into `raw` (host, model latency and, unless
    --host-only, end to end, each with its load); returns the model's settings (what the figures need
    besides the samples)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    log(f"{name}: host preprocessing, {len(files)} images, batch {BATCH}")
    work.mkdir(parents=True, exist_ok=True)
    graph = graph_normalisation(bundles["uint8"], work)
    with recorded(raw.loads, f"{name} host"):
        host = host_timing(files, bundles["float32"].preprocess, bundles["uint8"].preprocess, args.host_rounds, graph)
    raw.values.update({f"{name}/host/{k}": v for k, v in host.items()})
    size = bundles["uint8"].preprocess.input_size[0]
    with recorded(raw.loads, f"{name} model latency"):
        lat = model_latency(bundles, folder, args.host_rounds, 10 if size < 100 else 2)
    raw.values.update({f"{name}/model/{dt}": v for dt, v in lat.items()})
    facts = {"host_images": len(files), "image_size": list(decode_before(np.fromfile(str(files[0]), dtype=np.uint8)).shape[:2]),
             "bytes_per_image": {dt: b.preprocess.bytes_per_image for dt, b in bundles.items()}}
    if not args.host_only:
        log(f"{name}: end to end against pure inference, {args.rounds} rounds")
        facts["e2e_images"] = end_to_end(bundles, folder, args.rounds, limit, log, raw, name, args.min_pass_s)
        facts["e2e_rounds"], facts["min_pass_s"] = args.rounds, args.min_pass_s
    return facts


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
    plans = {
        "demo": ("efficientnet_lite0", 64, ["digits", "mnist", "faces"], [10, 10, 2], demo, 192),
        "paper": ("resnet50", 224, ["cub", "cars"], [200, 196], photos, args.paper_limit),
    }
    settings: dict[str, Any] = {"models": {}, "host_rounds": args.host_rounds}
    report: dict[str, Any] = {"settings": settings,
                              "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                                          "onnxruntime": __import__("onnxruntime").__version__, "opencv": cv2.__version__},
                              "command": "python -m benchmarks.studies.preprocess_uint8 " + " ".join(argv or __import__("sys").argv[1:])}
    raw = RawSamples("preprocess_uint8")
    target = args.out / ("preprocess_uint8_host.json" if args.host_only else "preprocess_uint8.json")
    for name in args.models.split(","):
        backbone, size, names, counts, folder, limit = plans[name]
        bundles = make_bundles(args.out, name, backbone, size, names, counts, photos, log)
        facts = measure_model(name, bundles, folder, args, limit, raw, log, args.out / name)
        settings["models"][name] = {"backbone": backbone, "input_size": size, **facts}
        report.update(derive(raw, settings))
        write_result(target, report, raw)  # after every model: whatever finished is on disk with its samples
        log(json.dumps(report[name]["goals"], indent=1))
    log(f"wrote {target} and {samples_path(target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

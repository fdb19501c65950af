"""What the Python API costs on top of the model: `Classifier.predict` against the same steps called directly.

`predict` runs the pipeline `erudite-edge run` uses (a worker thread, the decode/preprocess pool, batching,
answers) for every call; "direct" is what it wraps, done by hand in the caller's thread: the bundle's
preprocess, the loaded model, the answerer. Both sides use one loaded Classifier and are interleaved call by
call in rounds; the overhead is p50(api) - p50(direct) per image, with the paired bootstrap interval of the
p50 ratio over rounds (benchmarks/stats.py). With --out, the raw samples (every call, round by round, and the
load over the timed rounds) go beside OUT.json as OUT.samples.json.gz; `python -m benchmarks.recompute OUT.json`
re-derives every figure from them.

    python -m benchmarks.studies.api_overhead --bundle BUNDLE [--rounds 20 --calls 40] [--out benchmarks/results/api]

Without --bundle it makes the tests' tiny nearest-colour ONNX bundle (16x16 input), where the model is nearly
free and the figure is the API's own cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.latency import Samples
from benchmarks.load import load_summary, recorded
from benchmarks.raw import RawSamples, quantise, write_result
from benchmarks.stats import latency_ratio_ci
from erudite_edge.core.fileio import write_text_atomic


def _tiny_bundle(root: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from onnx_fixtures import make_erudite_bundle

    make_erudite_bundle(root / "bundle")
    return root / "bundle"


def measure(bundle: Path, rounds: int, calls: int, batch: int) -> tuple[RawSamples, str]:
    """Every call's ms per image, round by round, for each side (and the load over the timed rounds);
    and the backend."""
    from erudite_edge import Classifier
    from erudite_edge.core.preprocess import preprocess

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(batch)]
    loads: dict[str, dict[str, Any]] = {}
    with Classifier(bundle, batch=max(8, batch), workers=2, threads=1) as clf:
        spec = clf.spec

        def direct(ims: list[np.ndarray]) -> Any:
            return clf.answerer(clf.model.predict(np.stack([preprocess(im, spec) for im in ims])))

        sides: dict[str, Callable[[], Any]] = {
            "api, 1 image/call": lambda: clf.predict(images[0], color="RGB"),
            "direct, 1 image/call": lambda: direct(images[:1]),
            f"api, {batch} images/call": lambda: clf.predict(images, color="RGB"),
            f"direct, {batch} images/call": lambda: direct(images),
        }
        per_image = {name: (batch if f"{batch} images" in name else 1) for name in sides}
        for f in sides.values():  # warm-up
            for _ in range(5):
                f()
        samples: dict[str, list[list[float]]] = {name: [] for name in sides}
        with recorded(loads, "timed rounds"):
            for _ in range(rounds):
                r: dict[str, list[float]] = {name: [] for name in sides}
                for _ in range(calls):
                    for name, f in sides.items():
                        t0 = time.perf_counter()
                        f()
                        r[name].append((time.perf_counter() - t0) * 1e3 / per_image[name])
                for name in sides:
                    samples[name].append(r[name])
        backend = clf.backend
    series = {name: quantise(Samples(round_latency_ms=rs)) for name, rs in samples.items()}
    return RawSamples("api_overhead", series, loads=loads), backend


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): per side n,
    p50 and p90 ms per image; per call size the overhead p50(api) - p50(direct) and the p50 ratio with
    its paired 95 % interval over the rounds; the load."""
    out: dict[str, Any] = {"sides": {}, "overhead": {}}
    for name, s in raw.series.items():
        out["sides"][name] = {"n": len(s.latency_ms), "p50_ms_per_image": float(np.percentile(s.latency_ms, 50)),
                              "p90_ms_per_image": float(np.percentile(s.latency_ms, 90))}
    for k in ("1 image/call", f"{settings['batch']} images/call"):
        a, d = raw.series[f"api, {k}"].round_latency_ms, raw.series[f"direct, {k}"].round_latency_ms
        ci = latency_ratio_ci(a, d, 50)
        pa, pd = out["sides"][f"api, {k}"]["p50_ms_per_image"], out["sides"][f"direct, {k}"]["p50_ms_per_image"]
        out["overhead"][k] = {"p50_ms_per_image": pa - pd, "p50_ratio": pa / pd,
                              "p50_ratio_ci95": None if ci is None else [round(ci.lo, 5), round(ci.hi, 5)],
                              "rounds": None if ci is None else ci.units}
    out["load"] = load_summary(raw.load_records())
    return out


def markdown(r: dict[str, Any], command: str) -> str:
    lines = ["# Python API overhead (`Classifier.predict` against the same steps called directly)", "",
             f"`{command}`", "", f"Bundle `{r['bundle']}`, backend {r['backend']}; {r['rounds']} rounds x "
             f"{r['calls_per_round']} calls per side, interleaved call by call.", "",
             "| side | n | p50 ms/image | p90 ms/image |", "| --- | --- | --- | --- |"]
    for name, s in r["sides"].items():
        lines.append(f"| {name} | {s['n']} | {s['p50_ms_per_image']:.3f} | {s['p90_ms_per_image']:.3f} |")
    lines += ["", "| call size | API overhead p50 ms/image | p50 ratio api/direct | 95 % CI |", "| --- | --- | --- | --- |"]
    for k, o in r["overhead"].items():
        ci = o["p50_ratio_ci95"]
        lines.append(f"| {k} | {o['p50_ms_per_image']:.3f} | {o['p50_ratio']:.2f} | "
                     f"{'-' if ci is None else f'{ci[0]:.2f} to {ci[1]:.2f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = a.bundle or _tiny_bundle(Path(tmp))
        raw, backend = measure(bundle, a.rounds, a.calls, a.batch)
    settings = {"batch": a.batch}
    r: dict[str, Any] = {"settings": settings, "bundle": str(a.bundle) if a.bundle else
                         "tests' tiny nearest-colour bundle (16x16 input)", "backend": backend, "rounds": a.rounds,
                         "calls_per_round": a.calls, **derive(raw, settings)}
    command = "python -m benchmarks.studies.api_overhead " + " ".join(argv if argv is not None else sys.argv[1:])
    md = markdown(r, command.strip())
    print(md)
    if a.out:
        write_result(a.out.with_suffix(".json"), r, raw)
        write_text_atomic(a.out.with_suffix(".md"), md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

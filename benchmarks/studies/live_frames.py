"""Frame age on a live source with a model slower than the camera: queued frames (before) against
latest-frame semantics (after).

    python -m benchmarks.studies.live_frames [--fps 30] [--model-ms 60] [--seconds 8] [--rounds 3] [--out benchmarks/results]

The source is `testsrc://FPS` (erudite_edge.sources.testsrc: `read()` blocks until the next frame is due, as a
camera's does). The model is the tiny real ONNX classifier of tests/onnx_fixtures run by ONNX Runtime,
plus a sleep of --model-ms per image standing in for a heavier network (so the model is slower than the
camera however fast this CPU is; the cost grows with the batch, as on a CPU).

- before: the live source queued like a file (every frame through the prefetch queue, batches of up to
  --batch taken greedily): what `run` did before latest-frame semantics. The Pipeline takes the newest-frame
  path only for a live source that has `latest()`; `QueuedLive` hides it, so the same Pipeline queues.
- after: a reader thread keeps only the newest frame; the model takes it when free (batch of one).

The two alternate for --rounds rounds. frame_age_ms = result time - capture time, per result, pooled
over rounds (the first tenth of each run's results left out as warm-up). Goal: after p99 <= 2 frame intervals + one
model call, judged on the after p99's 95 % bootstrap interval over the rounds (benchmarks.stats.Verdict: fewer
than 6 rounds is INCONCLUSIVE). The before/after p99 ratio has a paired 95 % bootstrap interval over the rounds.
Each run records the machine's load (benchmarks.load); the raw samples (every frame age, run by run) go beside
the JSON (live_frames.samples.json.gz), and `python -m benchmarks.recompute OUT/live_frames.json` re-derives
every figure and the verdict from them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from benchmarks.load import load_summary, recorded
from benchmarks.raw import RawSamples, rounded, write_result
from benchmarks.stats import Verdict, latency_ratio_ci, percentile_ci
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.fileio import write_text_atomic
from erudite_edge.inference.models import load_model
from erudite_edge.inference.pipeline import Pipeline
from erudite_edge.sources.base import Source, Task
from erudite_edge.sources.open import open_source

SIDES = ("before", "after")


class SlowModel:
    """A real classifier plus `ms` of sleep per image (a stand-in for a heavier network)."""

    def __init__(self, inner: Any, ms: float):
        self.inner = inner
        self.ms = ms
        self.backend = f"{inner.backend} + {ms:.0f} ms/image"
        self.role_ms = inner.role_ms

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.ms * len(batch) / 1e3)
        return self.inner.predict(batch)

    def close(self) -> None:
        self.inner.close()


class QueuedLive(Source):
    """A live source without `latest()`: the Pipeline's newest-frame path needs that method, so it queues
    every frame of this one through the prefetch queue like a file's (the before side). Everything else is
    the wrapped source's; no `__getattr__`, so `latest` cannot leak through."""

    live = True

    def __init__(self, inner: Source):  # Source.__init__ not called: uri, end_reason and stop are the inner's
        self.inner = inner
        self.kind = inner.kind

    @property
    def uri(self) -> str:  # type: ignore[override]
        return self.inner.uri

    @property
    def end_reason(self) -> str:  # type: ignore[override]
        return self.inner.end_reason

    @property
    def length(self) -> int | None:
        return self.inner.length

    @property
    def fps(self) -> float | None:
        return self.inner.fps

    @property
    def dropped(self) -> int:
        return int(getattr(self.inner, "dropped", 0))

    @property
    def losses(self) -> list[Any]:
        return list(getattr(self.inner, "losses", []))

    @property
    def reconnects(self) -> int:
        return int(getattr(self.inner, "reconnects", 0))

    def tasks(self) -> Iterator[Task]:
        return self.inner.tasks()

    def stop(self) -> None:
        self.inner.stop()

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


def one_run(bundle: Any, model: SlowModel, fps: float, seconds: float, latest: bool, batch: int) -> dict[str, Any]:
    frames = int(round(fps * seconds))
    src = open_source(f"testsrc://{fps:g}?size=320x240&frames={frames}", reconnect=0)
    if not latest:
        src = QueuedLive(src)
    t0 = time.perf_counter()
    summary = Pipeline(model, bundle.labels, bundle.preprocess, batch=batch, progress=False).run(src, [])
    wall = time.perf_counter() - t0
    ages = summary.frame_age_ms[len(summary.frame_age_ms) // 10:]  # the first tenth: warm-up
    return {"ages": ages, "results": summary.frames, "dropped": summary.dropped, "wall_s": wall,
            "fps": summary.frames / wall if wall else 0.0, "camera_frames": frames}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(bundle: Any, model: SlowModel, settings: dict[str, Any], log: Any = print) -> RawSamples:
    """The runs, before and after alternating round by round: every result's frame age per run (warm-up
    tenth left out), each run's results / dropped / results per second, and each run's load."""
    values: dict[str, Any] = {f"{k}/{side}": [] for k in ("ages_ms", "results", "dropped", "fps") for side in SIDES}
    loads: dict[str, dict[str, Any]] = {}
    for r in range(settings["rounds"]):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            with recorded(loads, f"round {r + 1} {side}"):
                res = one_run(bundle, model, settings["fps"], settings["seconds_per_run"], side == "after",
                              settings["before_batch"])
            values[f"ages_ms/{side}"].append(rounded([float(a) for a in res["ages"]]))
            values[f"results/{side}"].append(res["results"])
            values[f"dropped/{side}"].append(res["dropped"])
            values[f"fps/{side}"].append(rounded(float(res["fps"])))
            log(f"round {r + 1} {side}: {res['results']} results, p50 {pct(res['ages'], 50):.1f} ms, "
                f"p99 {pct(res['ages'], 99):.1f} ms, dropped {res['dropped']}")
    return RawSamples("live_frames", values=values, loads=loads)


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): per side the
    pooled percentiles; the before/after p99 ratio with its paired 95 % interval over the rounds; the
    goal (after p99 < 2 frame intervals + one model call) judged on the after p99's 95 % interval over
    the rounds (benchmarks.stats.Verdict; fewer than 6 rounds: INCONCLUSIVE)."""
    v = raw.values
    goal_ms = 2 * 1e3 / settings["fps"] + settings["model_ms_per_image"]
    out: dict[str, Any] = {"goal_p99_ms": round(goal_ms, 1)}
    for side in SIDES:
        ages = [a for run in v[f"ages_ms/{side}"] for a in run]
        out[side] = {
            "n": len(ages), "p50_ms": round(pct(ages, 50), 1), "p90_ms": round(pct(ages, 90), 1),
            "p99_ms": round(pct(ages, 99), 1), "max_ms": round(max(ages), 1) if ages else None,
            "results_per_run": v[f"results/{side}"], "dropped_per_run": v[f"dropped/{side}"],
            "results_fps": round(float(np.median(v[f"fps/{side}"])), 2),
        }
    ci = latency_ratio_ci(v["ages_ms/before"], v["ages_ms/after"], 99)
    out["p99_ratio_before_after"] = round(pct([a for r in v["ages_ms/before"] for a in r], 99)
                                          / pct([a for r in v["ages_ms/after"] for a in r], 99), 2)
    out["p99_ratio_ci95"] = None if ci is None else [round(ci.lo, 2), round(ci.hi, 2)]
    after_ci = percentile_ci(v["ages_ms/after"], 99)
    verdict = Verdict(after_ci, "<=", goal_ms)
    out["goal"] = {"name": "after p99 frame age <= 2 frame intervals + one model call", "value": out["after"]["p99_ms"],
                   "threshold": f"<= {goal_ms:.1f} ms", "ci95": None if after_ci is None else [round(after_ci.lo, 1), round(after_ci.hi, 1)],
                   "rounds": None if after_ci is None else after_ci.units, "status": verdict.status, "reason": verdict.reason}
    out["load"] = load_summary(raw.load_records())
    return out


def markdown(out: dict[str, Any]) -> str:
    s, b, a, g = out["settings"], out["before"], out["after"], out["goal"]
    ci = "-" if out["p99_ratio_ci95"] is None else f"{out['p99_ratio_ci95'][0]}-{out['p99_ratio_ci95'][1]}"
    gci = "" if g["ci95"] is None else f" [{g['ci95'][0]}, {g['ci95'][1]}]"
    md = [
        "# Frame age on a live source (before / after latest-frame semantics)",
        "",
        f"`{out['command'].strip()}` — synthetic {s['fps']:g} fps camera (`testsrc://`, 320x240), the tiny real ONNX "
        f"model (ONNX Runtime CPU) plus {s['model_ms_per_image']:g} ms of sleep per image standing in for a heavier network; "
        f"{s['rounds']} interleaved rounds of {s['seconds_per_run']:g} camera-seconds each, the first tenth of each run's results "
        "left out. frame age = result time - capture time. Raw samples: the JSON's `.samples.json.gz` "
        "(`python -m benchmarks.recompute` re-derives every figure).",
        "",
        f"Load: {out['load']['label']}.",
        "",
        "| | n | p50 ms | p90 ms | p99 ms | max ms | results/s | dropped per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| before (queued, --batch {s['before_batch']}) | {b['n']} | {b['p50_ms']} | {b['p90_ms']} | {b['p99_ms']} | "
        f"{b['max_ms']} | {b['results_fps']} | {b['dropped_per_run']} |",
        f"| after (newest frame) | {a['n']} | {a['p50_ms']} | {a['p90_ms']} | {a['p99_ms']} | {a['max_ms']} | "
        f"{a['results_fps']} | {a['dropped_per_run']} |",
        "",
        f"{g['status']}: {g['name']}: after p99 {g['value']} ms{gci} {g['threshold']}"
        + (f" ({g['reason']})" if g["reason"] else "") + " (95 % interval over the rounds). "
        f"before/after p99 ratio {out['p99_ratio_before_after']} (paired 95 % bootstrap interval over the rounds {ci}).",
        "",
        "The before side's age is set by how many frames wait in the prefetch queue, the after side's by one frame "
        "interval + one model call.",
        "",
    ]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--model-ms", type=float, default=60.0, help="sleep per image added to the real model")
    ap.add_argument("--seconds", type=float, default=8.0, help="camera seconds per run")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (a verdict needs at least 6)")
    ap.add_argument("--batch", type=int, default=8, help="--batch of the before side (run's default)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from onnx_fixtures import make_erudite_bundle

    settings = {"fps": args.fps, "model_ms_per_image": args.model_ms, "seconds_per_run": args.seconds,
                "rounds": args.rounds, "before_batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="live-frames-") as tmp:
        bundle = make_erudite_bundle(Path(tmp) / "bundle")
        model = SlowModel(load_model(bundle, RunnerOptions("onnxruntime", "fp32"), announce=None), args.model_ms)
        try:
            raw = measure(bundle, model, settings, log=lambda m: print(m, flush=True))
        finally:
            model.close()
    out: dict[str, Any] = {"settings": settings,
                           "command": "python -m benchmarks.studies.live_frames " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.update(derive(raw, settings))
    dest = Path(args.out)
    write_result(dest / "live_frames.json", out, raw)
    md = markdown(out)
    write_text_atomic(dest / "live_frames.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

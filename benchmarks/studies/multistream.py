"""Several cameras, one process (`run SRC SRC ...`) against one `run` process per camera.

    python -m benchmarks.studies.multistream [--sizes 1,2,4,8] [--models demo,resnet50] [--fps 30]
        [--seconds 6] [--rounds 6] [--out benchmarks/results]

For each model and each number N of synthetic cameras (`testsrc://FPS?size=320x240`, erudite_edge.sources.testsrc:
`read()` blocks until the next frame is due, as a camera's does), two sides alternate round by round:

- one process: `erudite-edge run --bundle B CAM_1 ... CAM_N -o OUT.jsonl` (the multi-stream batcher);
- N processes: N `erudite-edge run --bundle B CAM_i -o OUT_i.jsonl` at the same time.

Both on ONNX Runtime (CPU), each process with ONNX Runtime's own thread count. A side's measured window starts
1 s after the last of its streams gave its first result (model loading and warm-up left out) and lasts
--seconds; then every process gets SIGTERM. From the records (`captured_at`, `frame_age_ms`, `stream`):
aggregate classified FPS (results captured inside the window / its length), each stream's frame ages inside
it. Peak RSS: the sum over the side's processes of VmHWM (/proc/PID/status) read just before SIGTERM.

Models: "demo" (efficientnet_lite0 at 64 px, the demo's size) and "resnet50" (ResNet-50 at 224 px), random
weights exported to uint8-input bundles (timing does not depend on the weights); "tiny" (tests/onnx_fixtures'
nearest-colour model) for the study's own test.

Goals (issue 29, at N = 4): one process's aggregate FPS >= 1.3x the N processes' (paired bootstrap 95 %
interval over the rounds), its peak RSS <= 0.4x theirs, and no stream's p99 frame age more than 2x another's
(the max/min ratio of the streams' p99 in the one process, interval over the rounds); judged through
benchmarks.stats.Verdict (fewer than 6 rounds: INCONCLUSIVE). Each side's run records the machine's load
(benchmarks.load); raw samples go beside the JSON (multistream.samples.json.gz), and
`python -m benchmarks.recompute OUT/multistream.json` re-derives every figure and verdict.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import load_summary, recorded
from benchmarks.raw import RawSamples, rounded, write_result
from benchmarks.stats import Verdict, ratio_ci, throughput_ratio_ci
from erudite_edge.core.fileio import write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[2]
SIDES = ("one", "separate")
SIDE_NAMES = {"one": "one process", "separate": "N processes"}
MODELS = {"demo": ("efficientnet_lite0", 64, ["digits", "mnist", "faces"], [10, 10, 2]),
          "resnet50": ("resnet50", 224, ["cub", "cars"], [200, 196]),
          "tiny": ("nearest-colour", 16, ["warm", "cool"], [2, 2])}  # tests/onnx_fixtures' model: the study's own test
GOAL_N = 4
GOAL_FPS_RATIO = 1.3
GOAL_RSS_RATIO = 0.4
GOAL_AGE_SPREAD = 2.0
WARMUP_S = 1.0


def make_bundle(root: Path, name: str, log: Any) -> Path:
    """A random-weight bundle of `name` (uint8 input), made once under `root`."""
    from benchmarks.studies.paper_setting import make_checkpoint
    from export.onnx_export import export_checkpoint

    backbone, size, names, counts = MODELS[name]
    out = root / name / "bundle"
    if name == "tiny" and not (out / "bundle.json").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from onnx_fixtures import make_erudite_bundle

        make_erudite_bundle(out)
    if not (out / "bundle.json").is_file():
        ckpt = make_checkpoint(root / name / "checkpoint", "ours", names, counts, backbone, size, seed=0)
        t0 = time.perf_counter()
        export_checkpoint(ckpt, out, parity_count=4, overwrite=True, log=log)
        log(f"{name}: exported in {time.perf_counter() - t0:.0f} s")
    return out


def camera(fps: float, i: int) -> str:
    return f"testsrc://{fps:g}?size=320x240&hold={5 + i}"


def vm_hwm_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), MB; 0 where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _epoch(iso: str) -> float:
    """`2026-12-07T03:28:03.597Z` -> seconds since the epoch."""
    base, ms = iso.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1e3


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            continue
    return out


def one_side(bundle: Path, n: int, side: str, fps: float, seconds: float, work: Path,
             timeout: float = 300.0) -> dict[str, Any]:
    """Start the side's process(es), wait for every stream's first result, measure the window, SIGTERM.
    {"fps": aggregate, "rss_mb": summed peaks, "ages_ms": [per stream, in the window], "frames": [per stream]}."""
    for old in work.glob("*.jsonl"):
        old.unlink()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cams = [camera(fps, i) for i in range(n)]
    base = [sys.executable, "-m", "erudite_edge.cli.app", "run", "--bundle", str(bundle), "--backend", "onnxruntime",
            "--reconnect", "0"]
    if side == "one":
        outs = [work / "one.jsonl"]
        cmds = [base + cams + ["-o", str(outs[0])]]
    else:
        outs = [work / f"sep{i}.jsonl" for i in range(n)]
        cmds = [base + [cams[i], "-o", str(outs[i])] for i in range(n)]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]

    def per_stream() -> list[list[dict[str, Any]]]:
        if side == "one":
            recs = _records(outs[0])
            return [[r for r in recs if r["stream"]["index"] == i] for i in range(n)]
        return [_records(o) for o in outs]

    try:
        end = time.monotonic() + timeout
        while not all(per_stream()):
            if any(p.poll() is not None for p in procs) or time.monotonic() > end:
                errs = [p.stderr.read() if p.poll() is not None and p.stderr else "" for p in procs]
                raise RuntimeError(f"{side} x{n}: a stream gave no result: {' | '.join(e[-500:] for e in errs)}")
            time.sleep(0.1)
        start = max(_epoch(s[0]["captured_at"]) for s in per_stream()) + WARMUP_S
        time.sleep(max(0.0, start + seconds - time.time()))
        stop = time.time()
        rss = sum(vm_hwm_mb(p.pid) for p in procs)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    streams = per_stream()
    inside = [[r for r in s if start <= _epoch(r["captured_at"]) <= stop] for s in streams]
    return {"fps": sum(len(s) for s in inside) / (stop - start), "rss_mb": rss,
            "ages_ms": [[float(r["frame_age_ms"]) for r in s] for s in inside], "frames": [len(s) for s in inside]}


def measure(bundles: dict[str, Path], settings: dict[str, Any], work: Path, log: Any = print) -> RawSamples:
    """Every model, size and round, the two sides alternating which goes first."""
    values: dict[str, Any] = {}
    loads: dict[str, dict[str, Any]] = {}
    for model, bundle in bundles.items():
        for n in settings["sizes"]:
            for r in range(settings["rounds"]):
                for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                    key = f"{model}/{n}/{side}"
                    with recorded(loads, f"{key} round {r + 1}"):
                        res = one_side(bundle, n, side, settings["fps"], settings["seconds"], work)
                    values.setdefault(f"{key}/fps", []).append(rounded(res["fps"]))
                    values.setdefault(f"{key}/rss_mb", []).append(rounded(res["rss_mb"]))
                    values.setdefault(f"{key}/ages_ms", []).append(rounded(res["ages_ms"]))
                    p99 = [pct(a, 99) for a in res["ages_ms"]]
                    log(f"{model} x{n} {SIDE_NAMES[side]} round {r + 1}: {res['fps']:.1f} FPS, {res['rss_mb']:.0f} MB, "
                        f"p99 per stream {[round(v, 1) for v in p99]} ms")
    return RawSamples("multistream", values=values, loads=loads)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _ci(iv: Any, nd: int = 3) -> list[float] | None:
    return None if iv is None else [round(iv.lo, nd), round(iv.hi, nd)]


def _goal(name: str, value: float, iv: Any, op: str, limit: float) -> dict[str, Any]:
    v = Verdict(iv, op, limit)
    return {"name": name, "value": round(value, 3), "threshold": f"{op} {limit:g}", "ci95": _ci(iv),
            "rounds": None if iv is None else iv.units, "status": v.status, "reason": v.reason}


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again)."""
    v = raw.values
    out: dict[str, Any] = {"models": {}}
    for model in settings["models"]:
        rows = {}
        for n in settings["sizes"]:
            row: dict[str, Any] = {}
            for side in SIDES:
                key = f"{model}/{n}/{side}"
                rounds_ages = v[f"{key}/ages_ms"]  # [round][stream][ages]
                pooled = [[a for rnd in rounds_ages for a in rnd[i]] for i in range(n)]
                p99 = [round(pct(a, 99), 1) for a in pooled]
                row[side] = {"fps_median": round(float(np.median(v[f"{key}/fps"])), 2), "fps_rounds": v[f"{key}/fps"],
                             "rss_mb_median": round(float(np.median(v[f"{key}/rss_mb"])), 1),
                             "p99_age_ms_per_stream": p99, "p50_age_ms": round(pct([a for s in pooled for a in s], 50), 1),
                             "p99_age_ms_max": max(p99), "results": sum(len(a) for a in pooled)}
            one, sep = v[f"{model}/{n}/one/fps"], v[f"{model}/{n}/separate/fps"]
            one_rss, sep_rss = v[f"{model}/{n}/one/rss_mb"], v[f"{model}/{n}/separate/rss_mb"]
            fps_iv = throughput_ratio_ci(one, sep)
            rss_iv = ratio_ci(one_rss, sep_rss)
            spread = [max(pct(s, 99) for s in rnd) for rnd in v[f"{model}/{n}/one/ages_ms"]]
            floor = [min(pct(s, 99) for s in rnd) for rnd in v[f"{model}/{n}/one/ages_ms"]]
            spread_iv = ratio_ci(spread, floor) if n > 1 else None
            row["fps_ratio"] = round(float(np.median(one)) / float(np.median(sep)), 3)
            row["fps_ratio_ci95"] = _ci(fps_iv)
            row["rss_ratio"] = round(float(np.median(one_rss)) / float(np.median(sep_rss)), 3)
            row["rss_ratio_ci95"] = _ci(rss_iv)
            row["p99_spread"] = round(float(np.median(spread)) / float(np.median(floor)), 3)
            row["p99_spread_ci95"] = _ci(spread_iv)
            if n == GOAL_N:
                fps_goal = _goal(f"aggregate FPS, one process / {n} processes", row["fps_ratio"], fps_iv, ">=", GOAL_FPS_RATIO)
                cams = n * float(settings["fps"])
                if row["one"]["fps_median"] >= 0.95 * cams and row["separate"]["fps_median"] >= 0.95 * cams:
                    fps_goal.update(status="N/A", reason=f"both sides classify every frame the cameras give ({cams:g} fps "
                                    "in all): the cameras set the pace, so no side can be 1.3x the other")
                row["goals"] = [
                    fps_goal,
                    _goal(f"peak RSS, one process / {n} processes", row["rss_ratio"], rss_iv, "<=", GOAL_RSS_RATIO),
                    _goal("p99 frame age, slowest stream / fastest stream (one process)", row["p99_spread"],
                          spread_iv, "<=", GOAL_AGE_SPREAD)]
            rows[str(n)] = row
        out["models"][model] = rows
    out["load"] = load_summary(raw.load_records())
    return out


def markdown(out: dict[str, Any]) -> str:
    s = out["settings"]
    md = [
        "# Several cameras: one process against one process per camera",
        "",
        f"`{out['command'].strip()}` — N synthetic {s['fps']:g} fps cameras (`testsrc://`, 320x240), ONNX Runtime CPU, "
        f"random-weight uint8 bundles; {s['rounds']} interleaved rounds, a {s['seconds']:g} s window per side after "
        "warm-up. Raw samples: the JSON's `.samples.json.gz` (`python -m benchmarks.recompute` re-derives every "
        "figure).",
        "",
        f"Load: {out['load']['label']}. The ratios are paired round by round."
        + ("" if out["load"]["label"] == "quiet" else " Other work shared the machine, so the absolute FPS are low and "
           "noisy."),
        "",
    ]
    for model, rows in out["models"].items():
        backbone, size = MODELS[model][:2]
        md += [f"## {model} ({backbone}, {size} px)", "",
               "| N | side | aggregate FPS (median) | peak RSS MB (median) | frame age p50 ms | p99 per stream ms |",
               "| --- | --- | --- | --- | --- | --- |"]
        for n, row in rows.items():
            for side in SIDES:
                r = row[side]
                md.append(f"| {n} | {SIDE_NAMES[side]} | {r['fps_median']} | {r['rss_mb_median']} | {r['p50_age_ms']} | "
                          f"{', '.join(str(x) for x in r['p99_age_ms_per_stream'])} |")
        md += ["", "| N | FPS one / N processes (95 % CI) | RSS one / N processes (95 % CI) | p99 max/min across streams (one process) |",
               "| --- | --- | --- | --- |"]
        for n, row in rows.items():
            def ci(x: Any) -> str:
                return "" if x is None else f" [{x[0]}, {x[1]}]"
            md.append(f"| {n} | {row['fps_ratio']}{ci(row['fps_ratio_ci95'])} | {row['rss_ratio']}{ci(row['rss_ratio_ci95'])} | "
                      f"{row['p99_spread']}{ci(row['p99_spread_ci95'])} |")
        md.append("")
        cams = s["fps"]
        capped = [n for n, row in rows.items() if row["one"]["fps_median"] >= 0.95 * int(n) * cams
                  and row["separate"]["fps_median"] >= 0.95 * int(n) * cams]
        if capped:
            md.append(f"At N = {', '.join(capped)} both sides classify (nearly) every frame the cameras give "
                      f"({cams:g} fps each): the cameras, not the model, set the FPS, so its ratio stays near 1 there.")
        if "1" in rows:
            md.append(f"N = 1 runs the same command on both sides: its FPS ratio ({rows['1']['fps_ratio']}) shows how "
                      "far the machine's load alone moves a figure in this run.")
        md.append("")
        for g in rows.get(str(GOAL_N), {}).get("goals", []):
            md.append(f"- {g['status']}: {g['name']} = {g['value']} (goal {g['threshold']}"
                      + (f", 95 % CI {g['ci95']}" if g["ci95"] else "") + ")" + (f": {g['reason']}" if g["reason"] else ""))
        md.append("")
    if out["load"]["label"] != "quiet":
        md += ["Under load, Linux shares the cores among runnable threads: N processes run N times the ONNX Runtime "
               "threads of one, so against the other work they may get more of the CPU; that favours the N-process side "
               "wherever the model, not the camera, sets the pace (a likely reason, not measured separately). Judge the "
               "FPS goal on a quiet machine, with `--rounds 6` or more for a verdict.", ""]
    else:
        md += ["Where the cameras set the pace (both sides classify every frame) the FPS goal cannot be met by either "
               "side: 1.3x the aggregate FPS of N processes that already keep up with their cameras is more frames than "
               "the cameras give. The goal can only be judged where the model sets the pace.", ""]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,2,4,8", help="numbers of cameras")
    ap.add_argument("--models", default="demo,resnet50")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=6.0, help="measured window per side and round")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (a verdict needs at least 6)")
    ap.add_argument("--work", type=Path, default=None, help="where bundles are made (kept for the next run)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--from-json", type=Path, help="derive this multistream.json again from its raw samples and write multistream.md; measure nothing")
    args = ap.parse_args(argv)
    if args.from_json is not None:  # figures derived again from the raw samples beside it (today's derive), then rendered
        out = json.loads(args.from_json.read_text())
        out.update(derive(RawSamples.read(args.from_json), out["settings"]))
        write_json_atomic(args.from_json, out)
        write_text_atomic(Path(args.out) / "multistream.md", markdown(out))
        return 0
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"--models: {', '.join(unknown)}; known: {', '.join(MODELS)}")
    settings = {"sizes": [int(x) for x in args.sizes.split(",")], "models": models, "fps": args.fps,
                "seconds": args.seconds, "rounds": args.rounds}

    def log(msg: str) -> None:
        print(msg, flush=True)

    with tempfile.TemporaryDirectory(prefix="multistream-") as tmp:
        root = args.work or Path(tmp)
        bundles = {m: make_bundle(root, m, log) for m in models}
        work = Path(tmp) / "outs"
        work.mkdir()
        raw = measure(bundles, settings, work, log)
    out: dict[str, Any] = {"settings": settings,
                           "command": "python -m benchmarks.studies.multistream " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.update(derive(raw, settings))
    dest = Path(args.out)
    write_result(dest / "multistream.json", out, raw)
    md = markdown(out)
    write_text_atomic(dest / "multistream.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

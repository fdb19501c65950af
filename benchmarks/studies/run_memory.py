"""Peak memory of `erudite-edge run` over a folder of 1080p JPEGs, before and after queued items stopped holding
their decoded frames and --batch got its bounds (issue 25 item 4).

    python -m benchmarks.studies.run_memory --before /path/to/checkout-of-e9fb40f [--images 64] [--batches 8,32,64]
                                            [--reps 3] [--workers 4] [--out benchmarks/results]

Each measurement is a fresh `python -m erudite_edge run FOLDER --bundle B --batch N --workers W -o FILE` with
PYTHONPATH set to one side's checkout (before: --before; after: this one), wrapped in GNU time
(`/usr/bin/time -f %M`: the child's peak resident set size, ru_maxrss, KiB; time's own pages are not the
child's). The sides and batch sizes take turns in every repetition (the order rotated), so machine noise hits
all alike; every repetition's raw value is kept, with the 1-minute load average read before and after it.

The bundle is the tiny real ONNX classifier of tests/onnx_fixtures at 224 x 224 float32 (ONNX Runtime, CPU): its
own memory is small, so what differs is the pipeline's (the frames and model inputs it holds). The images are
smooth random pictures with noise, 1920 x 1080, JPEG quality 90 (written once per --images count).

Extra cells on the after side: `--batch 100000` (refused by the memory budget: one line, exit 2) and, where
--save-batch is given, `--save FOLDER` at that batch (an output that draws on the frames: they are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TIME = "/usr/bin/time"


def write_images(folder: Path, n: int, size: tuple[int, int] = (1920, 1080)) -> Path:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n):
        base = rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def make_bundle(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from onnx_fixtures import make_erudite_bundle

    if not (root / "bundle.json").exists():
        make_erudite_bundle(root, size=224)
    return root


def one_run(tree: Path, folder: Path, bundle: Path, batch: int, workers: int, work: Path,
            save: bool = False) -> dict[str, Any]:
    out = work / "out.jsonl"
    peak = work / "time.txt"
    cmd = [TIME, "-o", str(peak), "-f", "%M", sys.executable, "-m", "erudite_edge", "run", str(folder),
           "--bundle", str(bundle), "--batch", str(batch), "--workers", str(workers), "-o", str(out), "--overwrite"]
    if save:
        shutil.rmtree(work / "annotated", ignore_errors=True)
        cmd += ["--save", str(work / "annotated")]
    env = dict(os.environ, PYTHONPATH=str(tree))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(work))
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "warning:"))]
    results = sum(1 for _ in out.open()) if out.exists() and proc.returncode == 0 else 0
    return {"rss_mb": int(peak.read_text().split()[-1]) / 1024.0, "wall_s": round(wall, 3), "rc": proc.returncode,
            "results": results, "load1_before": load_before, "load1_after": load_after, "messages": lines}


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """run_memory.md from the report (also `--from-json`: the table again without measuring)."""
    runs, summary = report["runs"], report["summary"]
    md = [
        "# Peak memory of `erudite-edge run` over a folder of 1080p JPEGs (before / after issue 25 item 4)",
        "",
        f"`{report['command'].strip()}` — {report['images']} real {report['image_size']} files, --workers "
        f"{report['workers']}, {report['bundle']}. Peak RSS = GNU time's %M (ru_maxrss of the `erudite-edge run` "
        "process), one fresh process per value; the cells took turns in every repetition (order rotated). "
        "Before: main at e9fb40f; after: this branch.",
        "",
        "| command | peak RSS MB, median (min-max) | every repetition, MB | exit | results | 1-min load before -> after each |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, s in summary.items():
        reps = ", ".join(f"{r['rss_mb']:.0f}" for r in runs[key])
        loads = ", ".join(f"{r['load1_before']:.2f}->{r['load1_after']:.2f}" for r in runs[key])
        md.append(f"| `run --batch {key.split('--batch ', 1)[1]}` ({key.split(' ', 1)[0]}) | {s['median_mb']} "
                  f"({s['min_mb']}-{s['max_mb']}) | {reps} | {'/'.join(map(str, s['rc']))} | "
                  f"{'/'.join(map(str, s['results']))} | {loads} |")
    said: dict[str, str] = {}  # one example of each message about --batch (the budget's figures vary run to run)
    for rs in runs.values():
        for r in rs:
            for m in r["messages"]:
                if m.startswith(("error: --batch", "warning: --batch")):
                    said.setdefault(m.split(":", 1)[0] + m.split(":", 2)[1], m)
    if said:
        md += ["", "What the after side said (one example of each):", ""] + [f"- `{m}`" for m in said.values()]
    pairs = [(b, summary.get(f"before --batch {b}"), summary.get(f"after --batch {b}")) for b in report.get("batches", [])]
    lines = [f"--batch {b}: {bf['median_mb']} -> {af['median_mb']} MB ({bf['median_mb'] / af['median_mb']:.2f}x)"
             for b, bf, af in pairs if bf and af]
    if lines:
        md += ["", "Before -> after, medians: " + "; ".join(lines) + "."]
    md += ["", "Before, every queued item kept its decoded frame (1920 x 1080 x 3 = 6.2 MB): the queue is 2 x --batch "
           "items deep (2 x --workers at least), so from --batch 32 on it held all 64 frames. After, a queued item "
           "keeps its model input (588 KiB here) and the frame goes once resized, unless an output draws on it: "
           "with --save the frames are kept as before (the --save row). After, --batch 64 runs batches of 32 (the "
           "ONNX Runtime session's batch profile), so that row is --batch 32's; --batch 100000 is refused by the "
           "default memory budget before the model loads."]
    env = report.get("environment", {})
    md += ["", f"Machine: {env.get('cpu_model')}, {env.get('cpu_cores')} cores, {env.get('memory_total_mb')} MB of "
           "memory, shared with other jobs (the load column).", ""]
    path.write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, help="a checkout of the code before (main at e9fb40f)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="decode threads (a Jetson's default: 4)")
    ap.add_argument("--save-batch", type=int, default=64, help="an after-side cell with --save at this batch (0: none)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "erudite-run-memory")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--from-json", type=Path, help="write run_memory.md from this run_memory.json; measure nothing")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        write_markdown(json.loads(args.from_json.read_text()), args.out / "run_memory.md")
        return 0
    if not Path(TIME).exists():
        print(f"{TIME} (GNU time) is needed: apt install time", file=sys.stderr)
        return 2

    folder = write_images(args.cache / f"jpeg1080p_{args.images}", args.images)
    bundle = make_bundle(args.cache / "bundle224")
    batches = [int(b) for b in args.batches.split(",")]
    cells: list[tuple[str, int, bool]] = [("after", b, False) for b in batches]
    if args.before is not None:
        cells += [("before", b, False) for b in batches]
    if args.save_batch:
        cells.append(("after", args.save_batch, True))
    cells.append(("after", 100_000, False))
    trees = {"after": REPO, "before": args.before}
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="run-memory-") as tmp:
        work = Path(tmp)
        for rep in range(args.reps):
            k = rep % len(cells)
            for side, batch, save in cells[k:] + cells[:k]:
                key = f"{side} --batch {batch}" + (" --save" if save else "")
                r = one_run(trees[side], folder, bundle, batch, args.workers, work, save)  # type: ignore[arg-type]
                runs.setdefault(key, []).append(r)
                print(f"rep {rep + 1} {key}: {r['rss_mb']:.0f} MB, rc {r['rc']}, {r['results']} results, "
                      f"{r['wall_s']:.1f} s, load {r['load1_before']:.2f}->{r['load1_after']:.2f}", flush=True)

    summary = {key: {"median_mb": round(statistics.median(r["rss_mb"] for r in rs), 1),
                     "min_mb": round(min(r["rss_mb"] for r in rs), 1), "max_mb": round(max(r["rss_mb"] for r in rs), 1),
                     "rc": sorted({r["rc"] for r in rs}), "results": sorted({r["results"] for r in rs})}
               for key, rs in runs.items()}
    from benchmarks.environment import environment

    report = {"command": "python -m benchmarks.studies.run_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
              "images": args.images, "batches": batches, "image_size": "1920x1080 JPEG q90", "workers": args.workers,
              "bundle": "tests/onnx_fixtures nearest-colour ONNX model, 224x224 float32, ONNX Runtime CPU",
              "before": str(args.before) if args.before else None, "summary": summary, "runs": runs,
              "environment": environment()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "run_memory.md")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

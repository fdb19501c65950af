"""Demo accuracy of stage II on fresh backbone features against reused ones (`--meta-features`), over seeds.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.studies.meta_features_accuracy \\
        --data /work/shared_demo/demo/data --out runs/meta_features --seeds 0,1,2

The setting is the full demo's `ours` training as it was when this was first measured (train/demo.py's
full plan and TrainConfig before the demo moved to 2 epochs of 8 with precise BN; written out in demo_config): EfficientNet-Lite0 with its ImageNet weights, 5 epochs, 16 images per data set per batch,
64 px, embed/hidden 256, lr 0.05 / backbone 0.005, CPU, 0 workers) on the demo's data sets (digits, mnist,
faces in ImageFolder layout, as `erudite-edge demo` writes them), with only `meta_features` (fresh | reuse)
and `seed` varying. Each run is evaluated as the demo evaluates it: train.evaluate_run on the test
splits, top-1 in the joint label space.

Runs go one at a time in the order seed 0 fresh, seed 0 reuse, seed 1 fresh, ... so that whatever has
finished is paired. Each run's result is written (atomically) to OUT/results/NAME.json as soon as it is
evaluated, and the summary (OUT/summary.json, OUT/summary.md) is rewritten after every run. A second
invocation skips the finished runs, evaluates a trained but unevaluated one, resumes an interrupted
training from its last checkpoint (its timing is then marked as resumed: the interrupted part's time is
not in it) and moves aside (never deletes) a run folder that holds no checkpoint yet.

Wall and CPU seconds (user + system of this process, from getrusage; workers=0, so no child processes)
are taken per training. On a shared machine they are measured under the other processes' load: the load
average before and after, and the load record of benchmarks.load (other work and steal over the training),
are recorded next to them. OUT/summary.json has its raw samples beside it (summary.samples.json.gz: each
run's top-1 and its training's load); `python -m benchmarks.recompute OUT/summary.json` re-derives the
summary from them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.load import LoadRecord, load_summary, snapshot
from benchmarks.raw import RawSamples, write_result

SETTINGS = ("fresh", "reuse")
DATASETS = ("digits", "mnist", "faces")  # the demo's joint-label order (train/demo_data.py)


# ---------------------------------------------------------------------------------------------- aggregation
def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1); the std is None below two values."""
    vals = list(values)
    return {"n": len(vals), "mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) >= 2 else None}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Student-t interval of the mean (None below two values)."""
    from scipy.stats import t

    vals = list(values)
    if len(vals) < 2:
        return None
    m, s = statistics.fmean(vals), statistics.stdev(vals)
    half = float(t.ppf(0.5 + level / 2, len(vals) - 1)) * s / math.sqrt(len(vals))
    return (m - half, m + half)


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """results: one mapping per finished run with `setting`, `seed`, `mean_top1` and `top1` (data set -> top-1),
    fractions in [0, 1]. Returns per setting the mean and sample std over seeds of the mean top-1 and of each
    data set's top-1, and the paired differences fresh - reuse for the seeds that both settings finished."""
    by = {(r["setting"], int(r["seed"])): r for r in results}
    datasets = list(dict.fromkeys(d for r in results for d in r["top1"]))
    per_setting: dict[str, Any] = {}
    for setting in dict.fromkeys(r["setting"] for r in results):
        runs = sorted((r for (s, _), r in by.items() if s == setting), key=lambda r: int(r["seed"]))
        per_setting[setting] = {
            "seeds": [int(r["seed"]) for r in runs],
            "mean_top1": mean_std([r["mean_top1"] for r in runs]),
            "top1": {d: mean_std([r["top1"][d] for r in runs if d in r["top1"]]) for d in datasets},
        }
    paired_seeds = sorted(seed for (s, seed) in by if s == "fresh" and ("reuse", seed) in by)
    diffs = [by["fresh", s]["mean_top1"] - by["reuse", s]["mean_top1"] for s in paired_seeds]
    per_ds = {d: [by["fresh", s]["top1"][d] - by["reuse", s]["top1"][d] for s in paired_seeds] for d in datasets}
    paired = {"seeds": paired_seeds, "mean_top1_diff": diffs, **mean_std(diffs), "ci95": t_interval(diffs),
              "fresh_better": sum(x > 0 for x in diffs), "reuse_better": sum(x < 0 for x in diffs),
              "ties": sum(x == 0 for x in diffs),
              "top1_diff": {d: {"per_seed": v, **mean_std(v)} for d, v in per_ds.items()}}
    return {"datasets": datasets, "settings": per_setting, "paired_fresh_minus_reuse": paired}


def pct(x: float | None, digits: int = 2, sign: bool = False) -> str:
    """A fraction as a percentage (points with `sign`), "-" for None."""
    if x is None:
        return "-"
    return f"{100 * x:+.{digits}f}" if sign else f"{100 * x:.{digits}f}"


def mean_pm(stats: Mapping[str, Any], sign: bool = False) -> str:
    """mean +- std in %, the mean alone where one value gives no std."""
    m = pct(stats["mean"], sign=sign)
    return m if stats["std"] is None else f"{m} +- {pct(stats['std'])}"


def markdown(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], command: str) -> str:
    """The summary as Markdown tables (top-1 in %, differences in percentage points)."""
    ds = summary["datasets"]
    lines = ["# Demo accuracy: `--meta-features fresh` against `reuse`", "",
             "Top-1 % on the test splits in the joint label space (train.evaluate_run, as `erudite-edge demo`).", "",
             "    " + command, "",
             "## Per run", "",
             "| setting | seed | " + " | ".join(ds) + " | mean | train wall s | train CPU s | load avg (1 min) before / after |",
             "| --- | ---: | " + " | ".join("---:" for _ in ds) + " | ---: | ---: | ---: | --- |"]
    for r in sorted(results, key=lambda r: (int(r["seed"]), SETTINGS.index(r["setting"]) if r["setting"] in SETTINGS else 9)):
        t = r.get("train_time") or {}
        wall = f"{t['wall_s']:.0f}" + (" (resumed)" if t.get("resumed") else "") if t else "-"
        cpu = f"{t['cpu_s']:.0f}" if t else "-"
        load = f"{t['loadavg_before'][0]:.1f} / {t['loadavg_after'][0]:.1f}" if t else "-"
        lines.append(f"| {r['setting']} | {r['seed']} | " + " | ".join(pct(r["top1"].get(d)) for d in ds)
                     + f" | {pct(r['mean_top1'])} | {wall} | {cpu} | {load} |")
    lines += ["", "Wall and CPU seconds (user + system of the training process) per training, measured under load from "
              "other processes on the shared machine: compare them only with care.", "",
              "## Per setting (mean +- sample std over seeds)", "",
              "| setting | seeds | " + " | ".join(ds) + " | mean |",
              "| --- | --- | " + " | ".join("---:" for _ in ds) + " | ---: |"]
    for setting, s in summary["settings"].items():
        lines.append(f"| {setting} | {','.join(map(str, s['seeds']))} | " + " | ".join(mean_pm(s["top1"][d]) for d in ds)
                     + f" | {mean_pm(s['mean_top1'])} |")
    p = summary["paired_fresh_minus_reuse"]
    lines += ["", "## Paired difference fresh - reuse (percentage points, same seed)", "",
              "| seed | " + " | ".join(ds) + " | mean |", "| ---: | " + " | ".join("---:" for _ in ds) + " | ---: |"]
    for i, seed in enumerate(p["seeds"]):
        lines.append(f"| {seed} | " + " | ".join(pct(p["top1_diff"][d]["per_seed"][i], sign=True) for d in ds)
                     + f" | {pct(p['mean_top1_diff'][i], sign=True)} |")
    if p["seeds"]:
        lines.append("| mean +- std | " + " | ".join(mean_pm(p["top1_diff"][d], sign=True) for d in ds)
                     + f" | {mean_pm(p, sign=True)} |")
        ci = p["ci95"]
        lines += ["", f"Mean paired difference of the mean top-1: {pct(p['mean'], sign=True)} points over "
                  f"{len(p['seeds'])} seed(s)" + (f", 95 % t interval {pct(ci[0], sign=True)} to {pct(ci[1], sign=True)}"
                                                  if ci else "")
                  + f"; fresh ahead on {p['fresh_better']}, reuse ahead on {p['reuse_better']}, tied on {p['ties']}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- running
def demo_config(data: list[str], out: Path, meta_features: str, seed: int, epochs: int | None = None,
                steps_per_epoch: int | None = None) -> Any:
    """The full demo's `ours` TrainConfig as it was when seeds 0 and 1 were measured (5 epochs, 16 images per
    data set per batch, no precise BN), meta_features and seed varying. Written out rather than read from
    train/demo.py's DemoPlan: the demo has since moved to 2 epochs of 8 with precise BN (to fit its time
    budget), and every seed of this comparison must train the same way."""
    from train.config import TrainConfig

    return TrainConfig(
        data=data, out=str(out), variant="ours", backbone="efficientnet_lite0", pretrained=True,
        epochs=epochs or 5, batch_per_dataset=16, input_size=64,
        embed_dim=256, hidden=256, lr=0.05, backbone_lr=0.005, workers=0, steps_per_epoch=steps_per_epoch,
        device="cpu", seed=seed, meta_features=meta_features)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(data: list[str], out: Path, setting: str, seed: int, epochs: int | None, steps: int | None) -> dict[str, Any]:
    from erudite_edge.core.fileio import write_json_atomic
    from train.checkpoint import has_checkpoint
    from train.entry import train
    from train.evaluate_run import evaluate_run

    name = f"{setting}-seed{seed}"
    run_dir, res_dir = out / "runs" / name, out / "results"
    result_file, train_file = res_dir / f"{name}.json", res_dir / f"{name}.train.json"
    if result_file.is_file():
        print(f"[{name}] done earlier: {result_file}", file=sys.stderr, flush=True)
        return json.loads(result_file.read_text())
    res_dir.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(data, run_dir, setting, seed, epochs, steps)
    if not train_file.is_file():
        resumed = has_checkpoint(run_dir)
        if run_dir.exists() and not resumed:  # started but no checkpoint yet: keep it, start again beside it
            aside = run_dir.with_name(f"{name}.incomplete-{time.strftime('%Y%m%dT%H%M%S')}")
            run_dir.rename(aside)
            print(f"[{name}] no checkpoint in {run_dir}; moved it to {aside}", file=sys.stderr, flush=True)
        print(f"[{name}] {'resuming' if resumed else 'training'} ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
        load0, wall0, cpu0, snap0 = os.getloadavg(), time.perf_counter(), _cpu_s(), snapshot()
        train(cfg, resume=resumed, progress=False)
        timing = {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_s() - cpu0, "resumed": resumed,
                  "load": LoadRecord.between(snap0, snapshot()).to_dict(),
                  "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()),
                  "torch_threads": _torch_threads(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(train_file, timing)
    timing = json.loads(train_file.read_text())
    wall0, cpu0 = time.perf_counter(), _cpu_s()
    metrics, _ = evaluate_run(run_dir, data, workers=0, device="cpu")
    result = {"setting": setting, "seed": seed, "run": str(run_dir),
              "mean_top1": metrics["mean_top1"], "top1": {d: m["top1"] for d, m in metrics["datasets"].items()},
              "images": {d: m["images"] for d, m in metrics["datasets"].items()},
              "train_time": timing, "eval_time": {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_s() - cpu0},
              "train_config": cfg.to_dict()}
    write_json_atomic(result_file, result)
    print(f"[{name}] mean top-1 {100 * result['mean_top1']:.2f} % "
          + ", ".join(f"{d} {100 * v:.2f}" for d, v in result["top1"].items())
          + f"; training {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU", file=sys.stderr, flush=True)
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


RAW_KEYS = ("setting", "seed", "mean_top1", "top1", "images")


def raw_samples(results: Sequence[Mapping[str, Any]]) -> RawSamples:
    """What the summary is computed from: each finished run's top-1 (per data set and mean, with its test
    image counts), and each training's load where it was recorded."""
    runs = [{k: r[k] for k in RAW_KEYS if k in r} for r in results]
    loads = {f"{r['setting']}-seed{r['seed']}": r["train_time"]["load"] for r in results
             if (r.get("train_time") or {}).get("load")}
    return RawSamples("meta_features_accuracy", values={"runs": runs}, loads=loads)


def derive(raw: RawSamples, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): the summary over
    seeds and the paired differences; the load of the trainings."""
    return {"summary": summarize(raw.values["runs"]), "load": load_summary(raw.load_records())}


def write_summary(out: Path, results: list[dict[str, Any]], command: str) -> dict[str, Any]:
    """OUT/summary.json with its raw samples beside it (summary.samples.json.gz) and OUT/summary.md."""
    from erudite_edge.core.fileio import write_text_atomic

    raw = raw_samples(results)
    derived = derive(raw, {})
    write_result(out / "summary.json", {"command": command, "runs": results, **derived}, raw)
    write_text_atomic(out / "summary.md", markdown(results, derived["summary"], command))
    return derived["summary"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared_demo/demo/data", help="the demo's data folder (digits/, mnist/, faces/)")
    ap.add_argument("--out", default="runs/meta_features")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="fresh,reuse (the order within each seed)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the full demo's (5); smaller only for a smoke run")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="cap, for a smoke run only")
    args = ap.parse_args(argv)
    root, out = Path(args.data), Path(args.out)
    missing = [d for d in DATASETS if not (root / d / "train").is_dir()]
    if missing:
        print(f"error: --data {root}: no {', '.join(missing)} (with train/ and test/) in it; give the folder "
              "`erudite-edge demo` wrote its data to (OUT/data)", file=sys.stderr)
        return 2
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if not settings or any(s not in SETTINGS for s in settings):
        print(f"error: --settings {args.settings}: a comma-separated list of {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        print(f"error: --seeds {args.seeds}: a comma-separated list of integers", file=sys.stderr)
        return 2
    data = [f"{d}={root / d}" for d in DATASETS]
    threads = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
    command = (f"{threads} PYTHONPATH=. python -m benchmarks.studies.meta_features_accuracy "
               + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    for seed in seeds:
        for setting in settings:
            results.append(run_one(data, out, setting, seed, args.epochs, args.steps_per_epoch))
            summary = write_summary(out, results, command)
    assert summary is not None
    p = summary["paired_fresh_minus_reuse"]
    print(f"summary: {out / 'summary.md'}; paired fresh - reuse over {len(p['seeds'])} seed(s): "
          f"{pct(p['mean'], sign=True)} points", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Demo accuracy of baseline, baseline+, ours and single over seeds, with paired differences (issue 27, item 2).

    nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.studies.accuracy_seeds \\
        --out benchmarks/results/accuracy_demo --seeds 0,1,2 --threads 1

Each variant trains as `erudite-edge demo` trains it (train/demo.py's full plan, DemoPlan.train_config; single
with its fair schedule, train/single_schedule.py), the seed varying, on the demo mixture (written to OUT/data
unless --data gives it). Each run is evaluated as the demo evaluates it (train.evaluate_run on the test splits,
top-1 in the joint label space).

Runs go seed by seed (seed 0: every variant, then seed 1...), so whatever has finished is paired. Each result
goes to OUT/results/VARIANT.sSEED.json (raw, atomically) as soon as it is evaluated, with the platform it ran on
(CPU model and ISA flags, threads, torch and oneDNN versions, determinism settings): the same code moved results
by up to 3.5 points between two machines of the same kind (issue 27), as much as a seed does. OUT/summary.json
and OUT/accuracy.md are rewritten after every run: per variant mean +- std over seeds, per data set and mean;
paired differences (same seed) of ours against each other variant and of baseline+ against baseline, with 95 %
Student-t intervals across seeds. A second invocation skips finished runs and resumes an interrupted one.

`--set KEY=VALUE` (repeatable) changes training options of every run from the demo's (e.g. `--set meta_bn=eval`);
with it give `--tag TAG`: the runs are then named VARIANT@TAG (results OUT/results/VARIANT.TAG.sSEED.json), so they
never mix with the demo's own settings in the same OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.studies.meta_features_accuracy import mean_pm, mean_std, pct, t_interval

VARIANTS = ("baseline", "baseline+", "ours", "single")
PAIRS = (("ours", "baseline"), ("ours", "baseline+"), ("ours", "single"), ("baseline+", "baseline"))
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "sve")


# ---------------------------------------------------------------------------------------------- platform
def platform_record() -> dict[str, Any]:
    """What moves CPU training results besides the seed: the CPU and its ISA, threads, the kernels' versions, determinism."""
    import torch

    cpu_model, flags = None, set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^(model name|Model)\s*:\s*(.+)$", info, re.M)
        cpu_model = m.group(2).strip() if m else None
        f = re.search(r"^(flags|Features)\s*:\s*(.+)$", info, re.M)
        flags = set(f.group(2).split()) if f else set()
    except OSError:
        pass
    onednn = re.search(r"(?:oneDNN|MKL-DNN) v([\w.]+)", torch.__config__.show())  # torch 2.14 still prints "MKL-DNN"
    return {
        "cpu_model": cpu_model or platform.processor() or None, "machine": platform.machine(),
        "isa_flags": sorted(flags & set(ISA_FLAGS)), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "mkl_num_threads": os.environ.get("MKL_NUM_THREADS"),
        "torch": torch.__version__, "onednn": onednn.group(1) if onednn else None,
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic, "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------- aggregation
def summarize(results: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]] = PAIRS) -> dict[str, Any]:
    """results: one mapping per finished run (`variant`, `seed`, `mean_top1`, `top1`: data set -> top-1, fractions).
    Per variant: mean and sample std over seeds; per pair (a, b) of `pairs`: the paired differences a - b of the
    seeds both finished, their mean, std and 95 % t interval, and how many seeds each side won."""
    by = {(r["variant"], int(r["seed"])): r for r in results}
    datasets = list(dict.fromkeys(d for r in results for d in r["top1"]))
    variants = [v for v in dict.fromkeys(r["variant"] for r in results)]
    per_variant = {}
    for v in variants:
        runs = sorted((r for (name, _), r in by.items() if name == v), key=lambda r: int(r["seed"]))
        per_variant[v] = {"seeds": [int(r["seed"]) for r in runs], "mean_top1": mean_std([r["mean_top1"] for r in runs]),
                          "top1": {d: mean_std([r["top1"][d] for r in runs if d in r["top1"]]) for d in datasets}}
    paired = {}
    for a, b in pairs:
        seeds = sorted(s for (v, s) in by if v == a and (b, s) in by)
        if not seeds:
            continue
        diffs = [by[a, s]["mean_top1"] - by[b, s]["mean_top1"] for s in seeds]
        per_ds = {d: [by[a, s]["top1"][d] - by[b, s]["top1"][d] for s in seeds] for d in datasets}
        paired[f"{a} - {b}"] = {
            "seeds": seeds, "per_seed": diffs, **mean_std(diffs), "ci95": t_interval(diffs),
            "first_better": sum(x > 0 for x in diffs), "second_better": sum(x < 0 for x in diffs),
            "top1": {d: {"per_seed": v, **mean_std(v), "ci95": t_interval(v)} for d, v in per_ds.items()}}
    return {"datasets": datasets, "variants": per_variant, "paired": paired}


def markdown(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], command: str,
             title: str = "Demo accuracy over seeds: baseline, baseline+, ours, single") -> str:
    ds = summary["datasets"]
    lines = [f"# {title}", "",
             "Top-1 % on the test splits in the joint label space (train.evaluate_run, as `erudite-edge demo`).", "",
             "    " + command, "", "## Per run", "",
             "| variant | seed | " + " | ".join(ds) + " | mean | train CPU s |",
             "| --- | ---: | " + " | ".join("---:" for _ in ds) + " | ---: | ---: |"]
    for r in sorted(results, key=lambda r: (int(r["seed"]), r["variant"])):
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(pct(r["top1"].get(d)) for d in ds)
                     + f" | {pct(r['mean_top1'])} | {r['train_cpu_s']:.0f} |")
    lines += ["", "## Per variant (mean +- sample std over seeds)", "",
              "| variant | seeds | " + " | ".join(ds) + " | mean |", "| --- | --- | " + " | ".join("---:" for _ in ds) + " | ---: |"]
    for v, s in summary["variants"].items():
        lines.append(f"| {v} | {','.join(map(str, s['seeds']))} | " + " | ".join(mean_pm(s["top1"][d]) for d in ds)
                     + f" | {mean_pm(s['mean_top1'])} |")
    lines += ["", "## Paired differences (same seed; percentage points; 95 % t interval across seeds)", "",
              "| pair | seeds | " + " | ".join(ds) + " | mean | 95 % interval (mean) | ahead / behind |",
              "| --- | --- | " + " | ".join("---:" for _ in ds) + " | ---: | --- | --- |"]
    for pair, p in summary["paired"].items():
        ci = p["ci95"]
        lines.append(f"| {pair} | {','.join(map(str, p['seeds']))} | " + " | ".join(mean_pm(p["top1"][d], sign=True) for d in ds)
                     + f" | {mean_pm(p, sign=True)} | {f'{pct(ci[0], sign=True)} to {pct(ci[1], sign=True)}' if ci else '- (one seed)'}"
                     + f" | {p['first_better']} / {p['second_better']} |")
    lines += ["", "A difference is shown only where its interval excludes 0; with fewer than two seeds nothing is.", "",
              "## Platform", "", "```", json.dumps(results[0]["platform"] if results else {}, indent=1), "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- running
def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as training options (values read as YAML: 0.1, true, null, eval); an unknown key or a
    value of the wrong type is a one-line UsageError."""
    import yaml

    from erudite_edge.errors import UsageError
    from train.config import TrainConfig

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item}: expected KEY=VALUE (a training option), e.g. meta_bn=eval")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
    TrainConfig.from_dict(out, where="--set")  # names and types checked before any training
    return out


def same_settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two runs' train_config the same but for where they were written (`out`); a key one side lacks (a run from
    before the option existed) counts as the option's default."""
    from train.config import TrainConfig

    default = TrainConfig().to_dict()
    keys = (set(a) | set(b)) - {"out"}
    return all(a.get(k, default.get(k)) == b.get(k, default.get(k)) for k in keys)


def result_name(variant: str, seed: int, tag: str | None = None) -> str:
    """OUT/results/NAME: VARIANT[.TAG].sSEED.json ('+' written 'p')."""
    return f"{variant.replace('+', 'p')}{f'.{tag}' if tag else ''}.s{seed}.json"


def run_one(cfg: Any, result_path: Path, variant: str, seed: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train (or resume) one variant at one seed, evaluate it on the test splits, write its raw result (with `extra`'s
    keys, e.g. the study's setting)."""
    from erudite_edge.core.fileio import write_json_atomic
    from train.entry import train
    from train.evaluate_run import evaluate_run

    run = Path(cfg.out)
    resume = (run / "run.json").is_file()
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    train(cfg, resume=resume, progress=False)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t0
    metrics, _ = evaluate_run(run, cfg.data, workers=0, device="cpu")
    result = {"variant": variant, "seed": seed, "mean_top1": metrics["mean_top1"],
              "top1": {k: d["top1"] for k, d in metrics["datasets"].items()},
              "train_wall_s": wall, "train_cpu_s": (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime),
              "resumed": resume, "run": str(run), "train_config": cfg.to_dict(), "platform": platform_record(),
              **(extra or {})}
    write_json_atomic(result_path, result)
    return result


def add_small_settings(ap: argparse.ArgumentParser, epochs: bool = True) -> None:
    """The options the accuracy studies' own tests shrink a training with: a tiny backbone, a few steps."""
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--no-pretrained", action="store_true")
    if epochs:
        ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--steps-per-epoch", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)


def small_overrides(args: Any) -> dict[str, Any]:
    """The training options add_small_settings' flags change (those given), for dataclasses.replace."""
    given = {"backbone": args.backbone, "epochs": getattr(args, "epochs", None), "steps_per_epoch": args.steps_per_epoch,
             "pretrained": False if args.no_pretrained else None}
    return {k: v for k, v in given.items() if v is not None}


def demo_setup(args: Any, quick: bool = False) -> tuple[Any, list[str]]:
    """The demo's training plan and data, as the accuracy studies share them: `args.threads` torch threads, the
    full (or quick) plan at `args.input_size` where given, and `args.data` or the demo mixture written to
    OUT/data."""
    import dataclasses

    import torch

    from train.demo import DemoPlan

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = DemoPlan.make(quick)
    if args.input_size:
        plan = dataclasses.replace(plan, image_size=args.input_size)
    data = args.data
    if not data:
        from train.demo_data import write_mixture

        data = write_mixture(args.out / "data", max_per_dataset=plan.max_per_dataset, size=plan.image_size)
    return plan, data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.accuracy_seeds", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy_demo"))
    ap.add_argument("--data", action="append", default=[], help="NAME=PATH (default: the demo mixture written to OUT/data)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="the quick demo's plan instead of the full one")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (recorded with each result)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a training option changed from the demo's for every run (needs --tag)")
    ap.add_argument("--tag", default=None, help="names the --set runs: VARIANT@TAG, results VARIANT.TAG.sSEED.json")
    add_small_settings(ap)  # for the study's own test
    args = ap.parse_args(argv)

    import dataclasses

    from erudite_edge.core.fileio import write_json_atomic, write_text_atomic

    if args.overrides and not args.tag:
        ap.error("--set changes the demo's settings: give --tag NAME so these runs are not taken for the demo's")
    if args.tag and not re.fullmatch(r"[\w=-]+", args.tag):
        ap.error(f"--tag {args.tag}: letters, digits, _ - and = only (it is part of file names)")
    settings = parse_overrides(args.overrides)
    plan, data = demo_setup(args, args.quick)
    overrides = small_overrides(args) | settings
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.studies.accuracy_seeds " + " ".join(argv if argv is not None else sys.argv[1:])
    label = (lambda v: f"{v}@{args.tag}") if args.tag else (lambda v: v)
    pairs = [(label(a), label(b)) for a, b in PAIRS]
    results: list[dict[str, Any]] = []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            name = result_name(variant, seed, args.tag)
            path = args.out / "results" / name
            if path.is_file():
                results.append(json.loads(path.read_text()))
            else:
                cfg = plan.train_config(data, args.out / "runs" / name.removesuffix(".json"), variant)
                cfg = dataclasses.replace(cfg, seed=seed, **overrides)
                print(f"accuracy_seeds: {label(variant)} seed {seed}", file=sys.stderr)
                results.append(run_one(cfg, path, label(variant), seed, {"settings": settings} if settings else None))
            summary = summarize(results, pairs)
            write_json_atomic(args.out / "summary.json", {"command": command, "summary": summary, "results": results})
            write_text_atomic(args.out / "accuracy.md", markdown(results, summary, command))
    print(f"accuracy_seeds: {len(results)} runs; {args.out / 'accuracy.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

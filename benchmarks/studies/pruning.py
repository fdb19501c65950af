"""Structured pruning on the demo mixture: for each ratio, `prune` -> `train --finetune` -> `export onnx`, then
parameters, MACs, ONNX Runtime latency interleaved with the unpruned model (the bench's timer, a paired 95 %
interval of the p50 ratio over the rounds) and mean / per-data-set top-1 on the test splits.

    python -m benchmarks.studies.pruning --work runs/pruning --ratios 0.2,0.4,0.6 --json benchmarks/results/pruning.json

The unpruned model is the demo's `ours` on EfficientNet-Lite0 with ImageNet weights (train.demo's plan:
--quick is its quick plan); each pruned model is fine-tuned from it with `train --finetune`'s defaults
(a quarter of the run's epochs, at least 1, at 0.1x its learning rates) unless --finetune-epochs or
--finetune-lr-factor is given (TAO's retrain: the run's own schedule, `--finetune-epochs 2 --finetune-lr-factor 1`),
and with --distill from the unpruned run. Each fine-tuning setting has its own run (SEED/r0.4-ft-e2-lr1-kd).
The issue's goal compares a pruned model's top-1 with the model it was pruned from, which got no extra epochs;
--as-long adds the control: the unpruned model trained its epochs + the fine-tuning's from the start, per seed,
so that what pruning costs is told apart from what the extra training gives. Every figure is judged by measured latency, never by
MACs. With --json the raw samples (every timed call, round by round, with the load) and each run's top-1
go beside it: `python -m benchmarks.recompute FILE` re-derives the figures, and the Pareto plot (latency vs mean top-1,
benchmarks/studies/pruning_plot.py) goes beside it as NAME_pareto.svg. Needs torch, Torch-Pruning, onnx,
onnxruntime and matplotlib. The paper setting (ResNet-50 224, N = 2 and 4, the erudite network against the
zoo pruned alike; latency and size, no accuracy) is benchmarks/studies/pruning_paper.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.latency import Contender, interleaved, summarize
from benchmarks.load import load_summary
from benchmarks.raw import RawSamples, quantise, write_result
from benchmarks.stats import Verdict, latency_ratio_ci
from benchmarks.studies.meta_features_accuracy import t_interval

UNPRUNED = "unpruned"
AS_LONG = "unpruned, as long"  # --as-long: the control, trained its epochs + the fine-tuning's from the start
LATENCY_GOAL = 0.6  # the goal: a pruned model at <= 0.6x the unpruned latency (the interval below it)


def _name(ratio: float) -> str:
    return f"pruned {ratio:g}"


def tuned_dir(root: Path, ratio: float, epochs: int | None, lr_factor: float | None, distill: bool) -> Path:
    """Where a ratio's fine-tuned run lives: named by every fine-tuning setting that changes it, so that a second
    invocation with other settings trains its own run instead of reusing one tuned otherwise (r0.4-ft: train
    --finetune's defaults without --distill; r0.4-ft-e4-lr1-kd: 4 epochs at 1x the run's learning rates, distilled)."""
    tag = "".join([f"-e{epochs}" if epochs else "", f"-lr{lr_factor:g}" if lr_factor is not None else "", "-kd" if distill else ""])
    return root / f"r{ratio:g}-ft{tag}"


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _step(sess: Any, name: str, batch: np.ndarray) -> Callable[[], float | None]:
    def step() -> float | None:
        sess.run(None, {name: batch})
        return None

    return step


def _model_facts(run: Path, size: int) -> dict[str, int]:
    import torch

    from benchmarks.complexity import torch_macs, torch_params
    from train.checkpoint import load_checkpoint

    graph = load_checkpoint(run, warn=None).build_model().inference_graph().eval()
    return {"params": torch_params(graph), "macs": torch_macs(graph, (torch.zeros(1, 3, size, size),))}


def top1_record(run: Path, data: list[str]) -> dict[str, float]:
    """A run's top-1 on the test splits: the mean over the data sets and each data set's."""
    from train.evaluate_run import evaluate_run

    metrics, _ = evaluate_run(run, data, split="test", workers=0, device="cpu")
    return {"mean": metrics["mean_top1"], **{k: v["top1"] for k, v in metrics["datasets"].items()}}


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[dict[str, Any], RawSamples]:
    from erudite_edge.core.bundle import Bundle
    from export.onnx_export import export_checkpoint
    from train.config import TrainConfig, default_finetune_epochs, finetune_values
    from train.demo import DemoPlan
    from train.demo_data import write_mixture
    from train.entry import train
    from train.prune import PruneOptions
    from train.prune_run import prune_run

    work = Path(args.work)
    plan = DemoPlan.make(quick=args.quick)
    data = write_mixture(work / "data", max_per_dataset=plan.max_per_dataset, size=plan.image_size)
    raw = RawSamples("pruning")
    facts: dict[str, Any] = {"plan": "quick" if args.quick else "full", "image_size": plan.image_size, "seeds": args.seeds,
                             "threads": args.threads, "runs": {}}
    paths: dict[str, Path] = {}
    for seed in range(args.seeds):
        root = work / f"seed{seed}"
        base = root / UNPRUNED
        if not (base / "best").is_dir():
            log(f"seed {seed}: training the unpruned model")
            cfg = plan.train_config(data, base, "ours")
            cfg.seed = seed
            train(cfg, progress=False)
        runs = {UNPRUNED: base}
        if args.as_long:  # the unpruned model trained as many epochs in total as a pruned one gets
            total = plan.epochs + (args.finetune_epochs or default_finetune_epochs(plan.epochs))
            control = root / f"{UNPRUNED}-e{total}"
            if not (control / "best").is_dir():
                log(f"seed {seed}: training the unpruned model {total} epochs (the control: as long as a pruned one)")
                cfg = plan.train_config(data, control, "ours")
                cfg.seed, cfg.epochs = seed, total
                train(cfg, progress=False)
            raw.values[f"top1/{seed}/{AS_LONG}"] = top1_record(control, data)
            facts["runs"].setdefault(AS_LONG, {})[str(seed)] = str(control)
        for ratio in args.ratios:
            pruned = root / f"r{ratio:g}"
            tuned = tuned_dir(root, ratio, args.finetune_epochs, args.finetune_lr_factor, args.distill)
            if not (tuned / "best").is_dir():
                log(f"seed {seed}: pruning {ratio:g} and fine-tuning")
                if not pruned.exists():
                    prune_run(base, pruned, PruneOptions(ratio=ratio))
                given: dict[str, Any] = {"out": str(tuned), "workers": 0, "device": "cpu"}
                if args.finetune_epochs:
                    given["epochs"] = args.finetune_epochs
                if args.distill:
                    given["distill"] = str(base)
                lr = {} if args.finetune_lr_factor is None else {"lr_factor": args.finetune_lr_factor}
                train(TrainConfig.from_dict(finetune_values(pruned, given, **lr)), progress=False)
            runs[_name(ratio)] = tuned
        for name, run in runs.items():
            raw.values[f"top1/{seed}/{name}"] = top1_record(run, data)
            if seed == 0:
                raw.values[f"facts/{name}"] = _model_facts(run, plan.image_size)
                bundle = work / "bundles" / run.name  # the run's own (unpruned, r0.4-ft-e2-lr1-kd): never one tuned otherwise
                if not (bundle / "bundle.json").exists():
                    export_checkpoint(run, bundle, data=data, parity_count=8, log=log)
                loaded = Bundle.load(bundle)
                paths[name] = loaded.path(loaded.entry("main"))
                facts["runs"][name] = str(run)
    sessions = {name: _session(p, args.threads) for name, p in paths.items()}
    inp = sessions[UNPRUNED].get_inputs()[0]
    shape = [args.batch if not isinstance(d, int) else d for d in inp.shape]
    dtype = np.uint8 if "uint8" in inp.type else np.float32
    x = (np.random.default_rng(0).random(shape) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    log(f"timing {', '.join(sessions)} interleaved, batch {args.batch}, {args.rounds} rounds")
    samples = interleaved([Contender(n, args.batch, _step(s, inp.name, x)) for n, s in sessions.items()],
                          warmup=args.warmup, iters=args.iters, rounds=args.rounds)
    for name in sessions:
        raw.series[name] = quantise(samples[name])
    return facts, raw


ACCURACY_WITHIN = -1.0  # the goal: mean top-1 after fine-tuning within 1 point of the unpruned model's ...
ACCURACY_FLOOR = -3.0  # ... and the paired interval's lower end above -3 points (seeds alone move results ~3 points)


def accuracy_verdict(mean: float, ci: tuple[float, float] | None) -> tuple[str, str]:
    """The accuracy goal on the paired per-seed differences (points): PASS when the mean is within 1 point and
    the 95 % t interval's lower end above -3; FAIL when the whole interval lies more than 1 point below; else
    NOT SHOWN (one interval from 3 seeds cannot settle it: more seeds could)."""
    if ci is None:
        return "NOT SHOWN", "fewer than 2 seeds: no interval"
    lo, hi = ci
    if mean >= ACCURACY_WITHIN and lo > ACCURACY_FLOOR:
        return "PASS", f"mean {mean:+.2f} >= {ACCURACY_WITHIN:g} and lower end {lo:+.2f} > {ACCURACY_FLOOR:g}"
    if hi < ACCURACY_WITHIN:
        return "FAIL", f"the whole interval [{lo:+.2f}, {hi:+.2f}] is below {ACCURACY_WITHIN:g}"
    return "NOT SHOWN", (f"mean {mean:+.2f}, interval [{lo:+.2f}, {hi:+.2f}]: needs mean >= {ACCURACY_WITHIN:g} "
                         f"and lower end > {ACCURACY_FLOOR:g}")


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples: per model its parameters and MACs (x unpruned), its p50 latency
    against the unpruned model's with the paired 95 % interval over the rounds and the goal (<= 0.6x)
    judged on it, and its top-1 (mean and per data set, the mean over seeds, and the paired difference
    to the unpruned model of the same seed); the load."""
    names = [k.removeprefix("facts/") for k in raw.values if k.startswith("facts/")]
    base_facts = raw.values[f"facts/{UNPRUNED}"]
    base = raw.series[UNPRUNED]
    base_p50 = summarize(base, settings["batch"]).p50_ms
    seeds = sorted({int(k.split("/")[1]) for k in raw.values if k.startswith("top1/")})
    models: dict[str, Any] = {}
    for i, name in enumerate(names):
        f = raw.values[f"facts/{name}"]
        st = summarize(raw.series[name], settings["batch"])
        row: dict[str, Any] = {"params": f["params"], "macs": f["macs"],
                               "params_vs_unpruned": round(f["params"] / base_facts["params"], 4),
                               "macs_vs_unpruned": round(f["macs"] / base_facts["macs"], 4),
                               "p50_ms": round(st.p50_ms, 4), "p50_vs_unpruned": round(st.p50_ms / base_p50, 4)}
        if name != UNPRUNED:
            ci = latency_ratio_ci(raw.series[name].round_latency_ms, base.round_latency_ms, 50, seed=(i, 1))
            v = Verdict(ci, "<=", LATENCY_GOAL)
            row.update(p50_vs_unpruned_ci95=None if ci is None else [round(ci.lo, 4), round(ci.hi, 4)],
                       latency_goal=v.status, latency_reason=v.reason)
        tops = [raw.values[f"top1/{s}/{name}"] for s in seeds]
        row["top1_mean"] = round(float(np.mean([t["mean"] for t in tops])), 4)
        row["top1_per_dataset"] = {k: round(float(np.mean([t[k] for t in tops])), 4) for k in tops[0] if k != "mean"}
        paired = paired_top1(raw, name, UNPRUNED, seeds)
        row["top1_vs_unpruned_points"] = paired["points"]
        if name != UNPRUNED and len(seeds) >= 2:  # the goal is judged on seeds (a one-seed run states the mean only)
            row.update(top1_vs_unpruned_per_seed=paired["per_seed"], top1_vs_unpruned_ci95=paired["ci95"],
                       accuracy_goal=paired["accuracy_goal"], accuracy_reason=paired["accuracy_reason"])
        models[name] = row
    out: dict[str, Any] = {"models": models, "load": load_summary(raw.load_records())}
    if all(f"top1/{s}/{AS_LONG}" in raw.values for s in seeds):
        out["as_long"] = as_long(raw, names, seeds)
    return out


def as_long(raw: RawSamples, names: list[str], seeds: list[int]) -> dict[str, Any]:
    """Against the control (--as-long): each pruned model's top-1 minus that of the unpruned model trained as
    many epochs in total, paired by seed, judged by the same rule: what pruning costs once the extra training
    a fine-tuning gives is given to the unpruned model too."""
    tops = [raw.values[f"top1/{s}/{AS_LONG}"]["mean"] for s in seeds]
    block: dict[str, Any] = {"top1_mean": round(float(np.mean(tops)), 4), "models": {}}
    for name in names:
        if name == UNPRUNED:
            continue
        block["models"][name] = paired_top1(raw, name, AS_LONG, seeds)
    return block


def paired_top1(raw: RawSamples, name: str, reference: str, seeds: list[int]) -> dict[str, Any]:
    """`name`'s mean top-1 minus `reference`'s, in points, paired by seed: the mean, each seed's, the 95 % t
    interval and the accuracy goal judged on them (accuracy_verdict)."""
    diffs = [100 * (raw.values[f"top1/{s}/{name}"]["mean"] - raw.values[f"top1/{s}/{reference}"]["mean"]) for s in seeds]
    ci = t_interval(diffs)
    goal, reason = accuracy_verdict(float(np.mean(diffs)), ci)
    return {"points": round(float(np.mean(diffs)), 2), "per_seed": [round(d, 2) for d in diffs],
            "ci95": None if ci is None else [round(ci[0], 2), round(ci[1], 2)],
            "accuracy_goal": goal, "accuracy_reason": reason}


def render(result: dict[str, Any]) -> str:
    lines = [f"Load: {result['load']['label']}.", "",
             "| model | params (x) | MACs (x) | p50 ms (x unpruned [95 % interval], <= 0.6x?) | mean top-1 (points vs unpruned [95 % t], goal?) | per data set |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, m in result["models"].items():
        ci = m.get("p50_vs_unpruned_ci95")
        lat = f"{m['p50_ms']:.2f} ({m['p50_vs_unpruned']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}], {m['latency_goal']})" if ci else ")")
        per = ", ".join(f"{k} {100 * v:.1f}" for k, v in m["top1_per_dataset"].items())
        tci = m.get("top1_vs_unpruned_ci95")
        acc = f"{m['top1_vs_unpruned_points']:+.1f}" + (f" [{tci[0]:+.1f}, {tci[1]:+.1f}], {m['accuracy_goal']}" if tci else "")
        lines.append(f"| {name} | {m['params'] / 1e6:.2f} M ({m['params_vs_unpruned']:.2f}) | {m['macs'] / 1e6:.1f} M "
                     f"({m['macs_vs_unpruned']:.2f}) | {lat} | {100 * m['top1_mean']:.1f} % ({acc}) | {per} |")
    control = result.get("as_long")
    if control:
        lines += ["", f"Against the unpruned model trained as long ({100 * control['top1_mean']:.1f} %, --as-long: its epochs "
                  "+ the fine-tuning's, from the start), paired by seed:", ""]
        for name, c in control["models"].items():
            ci = c["ci95"]
            lines.append(f"- {name}: {c['points']:+.1f} points" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}], {c['accuracy_goal']}" if ci else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.pruning", description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the data, runs and bundles (reused when present)")
    ap.add_argument("--ratios", default="0.2,0.4,0.6")
    ap.add_argument("--quick", action="store_true", help="the demo's quick plan (150 images per data set, 48 px, 1 epoch)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=None, help="default: train --finetune's own")
    ap.add_argument("--finetune-lr-factor", type=float, default=None,
                    help="the fine-tuning's learning rates: the unpruned run's times this (default: train --finetune's own, 0.1)")
    ap.add_argument("--distill", action="store_true", help="fine-tune with --distill from the unpruned run")
    ap.add_argument("--as-long", action="store_true",
                    help="also train the unpruned model its epochs + the fine-tuning's from the start, per seed: the "
                         "control that separates what pruning costs from what the extra training gives")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (1: steadiest on a shared machine)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too (raw samples beside it)")
    args = ap.parse_args(argv)
    args.ratios = [float(r) for r in args.ratios.split(",") if r.strip()]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    facts, raw = measure(args, log)
    settings = {"batch": args.batch, "warmup": args.warmup, "iters": args.iters, "rounds": args.rounds, "ratios": args.ratios,
                "finetune": {"epochs": args.finetune_epochs, "lr_factor": args.finetune_lr_factor, "distill": args.distill},
                "as_long": args.as_long}
    result = {"settings": settings, **facts, **derive(raw, settings), "versions": versions(),
              "command": "python -m benchmarks.studies.pruning " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(render(result))
    if args.json:
        write_result(args.json, result, raw)
        from benchmarks.studies.pruning_plot import plot

        plot(result, args.json.with_name(f"{args.json.stem}_pareto.svg"))  # latency vs mean top-1
    return 0


def versions() -> dict[str, str | None]:
    """As installed (importlib.metadata): Torch-Pruning 1.6.1 reports itself as 1.6.0 in torch_pruning.__version__."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("torch", "torch-pruning", "nvidia-modelopt", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


if __name__ == "__main__":
    sys.exit(main())

"""Stage II's BatchNorm regime (`--meta-bn train|eval|frozen`, train/meta_bn.py) on the demo mixture (issue 27 item 4).

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.studies.meta_bn --out benchmarks/results/meta_bn \\
        --data digits=D/digits --data mnist=D/mnist --data faces=D/faces --threads 1 --reuse /work/runs/acc/results

Two parts (`--part cosines|accuracy|both`):

- cosines: the full demo's `ours` run (train/demo.py's plan, seed --cosine-seed) trained in this process; after 0, 1
  and 2 epochs (--states) theta's meta gradient is computed from that same model state under the three modes, on
  --batches balanced training batches (the next epoch's), with every data set of the batch in turn as meta-test
  (stage II's fresh backbone features, alpha = theta's learning rate then). Per state and pair of modes: the mean
  cosine between the two gradients and its 95 % t interval over the (batch, meta-test data set) samples, the
  gradients' norm ratio; raw samples in OUT/cosines.json, the table in OUT/cosines.md.
- accuracy: `ours` of the full demo plan per mode and seed, trained and evaluated as benchmarks.studies.accuracy_seeds
  does (its run_one, summarize, markdown): OUT/results/ours.meta_bn-MODE.sSEED.json (raw, with the platform),
  OUT/summary.json, OUT/accuracy.md with the paired differences of eval and frozen against train. A result of the
  default mode (train) found in --reuse DIR (accuracy_seeds' ours.sSEED.json) is copied instead of trained again
  when its training options are the same (accuracy_seeds.same_settings). Finished results are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.studies.accuracy_seeds import (
    add_small_settings,
    demo_setup,
    markdown,
    platform_record,
    result_name,
    run_one,
    same_settings,
    small_overrides,
    summarize,
)
from benchmarks.studies.meta_features_accuracy import t_interval

MODES = ("train", "eval", "frozen")
MODE_PAIRS = (("train", "eval"), ("train", "frozen"), ("eval", "frozen"))


def label(mode: str) -> str:
    return f"ours@meta_bn-{mode}"


# ---------------------------------------------------------------------------------------------- cosines
def gradient_samples(trainer: Any, batches: int, epoch: int) -> list[dict[str, Any]]:
    """From the trainer's model as it is: per training batch of `epoch` and per meta-test data set, theta's meta
    gradient under each mode; returns their pairwise cosines, norms and L_meta."""
    import torch

    from train.two_stage import frozen_bn_stats, meta_gradient

    net = trainer.model
    net.train()
    alpha = trainer.step.current_alpha
    trainer.sampler.set_epoch(epoch)
    out = []
    for i, batch in enumerate(trainer.loader):
        if i >= batches:
            break
        x, ids, joint, local = (batch[k] for k in ("image", "dataset", "joint", "local"))
        with torch.no_grad(), frozen_bn_stats(net):
            feats = net.meta_input(x)
        for test in torch.unique(ids).tolist():
            grads, losses = {}, {}
            with frozen_bn_stats(net):
                for mode in MODES:
                    g, l_meta = meta_gradient(net, feats, ids, joint, local, test, alpha, mode)
                    grads[mode] = torch.cat([t.reshape(-1) for t in g]).double()
                    losses[mode] = float(l_meta)
            out.append({"batch": i, "meta_test": trainer.splits[test].name,
                        "alpha": alpha, "norm": {m: float(g.norm()) for m, g in grads.items()}, "l_meta": losses,
                        "cosine": {f"{a}-{b}": float(torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0))
                                   for a, b in MODE_PAIRS}})
    return out


def summarize_cosines(states: Mapping[Any, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per state (epochs trained) and pair: mean cosine, 95 % t interval, min, n; the mean norm ratio of the pair; alpha;
    the mean cosine per meta-test data set. The interval counts the samples as independent, though a batch's samples
    (one per meta-test data set) share its rows."""
    table = {}
    for epochs, samples in states.items():
        row: dict[str, Any] = {"alpha": statistics.fmean(s["alpha"] for s in samples), "by_meta_test": {
            name: {f"{a}-{b}": statistics.fmean(s["cosine"][f"{a}-{b}"] for s in samples if s["meta_test"] == name)
                   for a, b in MODE_PAIRS} for name in dict.fromkeys(s["meta_test"] for s in samples)}}
        for a, b in MODE_PAIRS:
            cos = [s["cosine"][f"{a}-{b}"] for s in samples]
            ratio = [s["norm"][a] / s["norm"][b] for s in samples if s["norm"][b] > 0]
            row[f"{a}-{b}"] = {"mean": statistics.fmean(cos), "ci95": t_interval(cos), "min": min(cos), "n": len(cos),
                               "norm_ratio_mean": statistics.fmean(ratio) if ratio else None}
        table[str(epochs)] = row
    return table


def cosines_markdown(summary: dict[str, Any], command: str, cpu_s: float, platform: dict[str, Any]) -> str:
    lines = ["# theta's meta gradient under `--meta-bn` train, eval, frozen (demo mixture)", "",
             "Cosine between theta's meta gradients computed from the same model state, batch and meta-test data set, "
             "the head's BatchNorm in two modes; mean over (batch, meta-test data set) samples with its 95 % t interval, "
             "the smallest, and the mean ratio of the two gradients' norms.", "", "    " + command, "",
             "| epochs trained | alpha | pair | mean cosine | 95 % interval | min | n | norm ratio |",
             "| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |"]
    for epochs, row in summary.items():
        for a, b in MODE_PAIRS:
            s = row[f"{a}-{b}"]
            ci = s["ci95"]
            lines.append(f"| {epochs} | {row['alpha']:.3g} | {a}-{b} | {s['mean']:.3f} | "
                         f"{f'{ci[0]:.3f} to {ci[1]:.3f}' if ci else '-'} | {s['min']:.3f} | {s['n']} | {s['norm_ratio_mean']:.2f} |")
    lines += ["", "Per meta-test data set (mean cosine):", "",
              "| epochs trained | meta-test | " + " | ".join(f"{a}-{b}" for a, b in MODE_PAIRS) + " |",
              "| ---: | --- | " + " | ".join("---:" for _ in MODE_PAIRS) + " |"]
    for epochs, row in summary.items():
        for name, cos in row["by_meta_test"].items():
            lines.append(f"| {epochs} | {name} | " + " | ".join(f"{cos[f'{a}-{b}']:.3f}" for a, b in MODE_PAIRS) + " |")
    lines += ["", "The intervals count the samples as independent; a batch's samples (one per meta-test data set) share its "
              "rows. alpha is theta's learning rate at the state (the demo's cosine schedule ends at 0 after its 2 epochs: "
              "there L_meta has no second-order term and only the normalisation differs)."]
    lines += ["", f"CPU time of this part (training to the states and the gradients): {cpu_s:.0f} s.", "",
              "## Platform", "", "```", json.dumps(platform, indent=1), "```"]
    return "\n".join(lines) + "\n"


def run_cosines(cfg: Any, states: Sequence[int], batches: int, out: Path, command: str) -> dict[str, Any]:
    import resource
    import tempfile

    from erudite_edge.core.fileio import write_json_atomic, write_text_atomic
    from train.loop import Trainer

    c0 = resource.getrusage(resource.RUSAGE_SELF)
    samples: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="meta_bn_cosines_") as tmp:
        trainer = Trainer(dataclasses.replace(cfg, out=tmp, epochs=max(cfg.epochs, *states)), progress=False)
        trained = 0
        for state in sorted(states):
            while trained < state:  # as Trainer.run trains an epoch: the step, then precise BN
                trainer.train_epoch(trained)
                if cfg.precise_bn_batches:
                    trainer.precise_bn(cfg.precise_bn_batches, trained)
                trained += 1
            t0 = time.perf_counter()
            samples[state] = gradient_samples(trainer, batches, epoch=state)
            print(f"meta_bn: cosines after {state} epoch(s): {len(samples[state])} samples, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    summary = summarize_cosines(samples)
    platform = platform_record()
    record = {"command": command, "train_config": cfg.to_dict(), "states": list(states), "batches": batches,
              "cpu_s": cpu, "platform": platform, "summary": summary, "samples": {str(k): v for k, v in samples.items()}}
    write_json_atomic(out / "cosines.json", record)
    write_text_atomic(out / "cosines.md", cosines_markdown(summary, command, cpu, platform))
    return record


# ---------------------------------------------------------------------------------------------- accuracy
def run_accuracy(base: Any, seeds: Sequence[int], modes: Sequence[str], out: Path, reuse: Path | None, command: str) -> list[dict[str, Any]]:
    from erudite_edge.core.fileio import write_json_atomic, write_text_atomic

    (out / "results").mkdir(parents=True, exist_ok=True)
    pairs = [(label(a), label("train")) for a in modes if a != "train"] + [(label("frozen"), label("eval"))]
    results: list[dict[str, Any]] = []
    for seed in seeds:
        for mode in modes:
            name = result_name("ours", seed, f"meta_bn-{mode}")
            path = out / "results" / name
            cfg = dataclasses.replace(base, seed=seed, meta_bn=mode, out=str(out / "runs" / name.removesuffix(".json")))
            earlier = reuse / result_name("ours", seed) if reuse else None
            if not path.is_file() and mode == "train" and earlier and earlier.is_file():
                old = json.loads(earlier.read_text())
                if same_settings(old["train_config"], cfg.to_dict()):
                    write_json_atomic(path, {**old, "variant": label(mode), "reused_from": str(earlier)})
                    print(f"meta_bn: {label(mode)} seed {seed} reused from {earlier}", file=sys.stderr)
                else:
                    print(f"meta_bn: {earlier} trained with other settings; training {label(mode)} seed {seed}", file=sys.stderr)
            if path.is_file():
                results.append(json.loads(path.read_text()))
            else:
                print(f"meta_bn: {label(mode)} seed {seed}", file=sys.stderr)
                results.append(run_one(cfg, path, label(mode), seed, {"settings": {"meta_bn": mode}}))
            summary = summarize(results, pairs)
            write_json_atomic(out / "summary.json", {"command": command, "summary": summary, "results": results})
            write_text_atomic(out / "accuracy.md", markdown(results, summary, command, "Demo accuracy of ours per --meta-bn, over seeds"))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.meta_bn", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/meta_bn"))
    ap.add_argument("--data", action="append", default=[], help="NAME=PATH (default: the demo mixture written to OUT/data)")
    ap.add_argument("--part", choices=("cosines", "accuracy", "both", "report"), default="both",
                    help="report: the cosines' summary and OUT/cosines.md again from OUT/cosines.json's samples (no training)")
    ap.add_argument("--states", default="0,1,2", help="cosines: epochs trained before each measurement")
    ap.add_argument("--batches", type=int, default=16, help="cosines: training batches per state")
    ap.add_argument("--cosine-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0,1,2", help="accuracy: seeds")
    ap.add_argument("--modes", default=",".join(MODES), help="accuracy: modes")
    ap.add_argument("--reuse", type=Path, default=None, help="accuracy: accuracy_seeds' results folder holding ours.sSEED.json")
    ap.add_argument("--threads", type=int, default=None)
    add_small_settings(ap)  # for the study's own test
    args = ap.parse_args(argv)
    if args.part == "report":
        from erudite_edge.core.fileio import write_json_atomic, write_text_atomic

        rec = json.loads((args.out / "cosines.json").read_text())
        rec["summary"] = summarize_cosines(rec["samples"])
        write_json_atomic(args.out / "cosines.json", rec)
        write_text_atomic(args.out / "cosines.md", cosines_markdown(rec["summary"], rec["command"], rec["cpu_s"], rec["platform"]))
        return 0



    plan, data = demo_setup(args)
    overrides = small_overrides(args)
    base = dataclasses.replace(plan.train_config(data, args.out / "runs", "ours"), **overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.studies.meta_bn " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.part in ("cosines", "both"):
        states = [int(s) for s in args.states.split(",") if s.strip()]
        run_cosines(dataclasses.replace(base, seed=args.cosine_seed), states, args.batches, args.out, command)
    if args.part in ("accuracy", "both"):
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        run_accuracy(base, seeds, modes, args.out, args.reuse, command)
    print(f"meta_bn: done; {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where does the method help? `ours` against `baseline` on the demo mixture, one factor at a time around the demo's
setting, over seeds (issue 27 item 5). A study, not a test: about 30 CPU trainings.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.studies.method_factors --out /work/runs/factors \\
        --data digits=D/digits --data mnist=D/mnist --data faces=D/faces --threads 1 --reuse /work/runs/acc/results

Stage 1, training length: the demo's full plan (train/demo.py) at --lengths epochs (2, 5, 10), ours and baseline, every
seed. The best length is the one where ours' mean top-1 over the seeds is highest (the shorter on a tie; chosen on the
test splits, which this study reports on: a choice to look at, not a tuned model); --best-epochs fixes it instead.
Stage 2, at that length, one factor changed at a time from the demo's setting:
  theta_lr 0.1 (the paper's) and 0.002 (the released code's), alpha following theta's learning rate in both
  (meta_alpha: lr; the demo's theta learning rate is its lr, 0.05); gate dense (the demo's is channel); precise BN off
  (precise_bn_batches 0; the demo's is 16). Baseline has no theta and no gate: those settings are paired with baseline
  at the same length; precise BN changes baseline too, so it trains baseline without it as well.

Each run is accuracy_seeds' run_one (trained and evaluated as the demo does; raw result with its train CPU time and
platform) to OUT/results/VARIANT.TAG.sSEED.json. A second invocation skips finished runs and resumes an interrupted
one (--max-runs N stops after N new runs). OUT/summary.json and OUT/factors.md are rewritten after every run: per
setting ours and baseline over seeds, the paired difference ours - baseline with its 95 % t interval, and sentences
that say only what the intervals show. A default-setting run (2 epochs) found in --reuse DIR (accuracy_seeds'
VARIANT.sSEED.json) with the same training options is copied instead of trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.studies.accuracy_seeds import (
    add_small_settings,
    demo_setup,
    platform_record,
    result_name,
    run_one,
    same_settings,
    small_overrides,
    summarize,
)
from benchmarks.studies.meta_features_accuracy import mean_pm, pct

DEMO_EPOCHS = 2
LENGTHS = (2, 5, 10)
FACTORS: dict[str, tuple[dict[str, Any], bool]] = {  # name -> (options changed from the demo's, changes baseline too)
    "theta_lr-0.1": ({"theta_lr": 0.1}, False),
    "theta_lr-0.002": ({"theta_lr": 0.002}, False),
    "gate-dense": ({"gate": "dense"}, False),
    "precise_bn-off": ({"precise_bn_batches": 0}, True),
}


@dataclasses.dataclass(frozen=True)
class Setting:
    tag: str  # names the runs: e5, e5-gate-dense ...
    epochs: int
    options: Mapping[str, Any]
    baseline_tag: str  # the baseline this setting's ours is paired with


def length_settings(lengths: Sequence[int]) -> list[Setting]:
    return [Setting(f"e{e}", e, {}, f"e{e}") for e in lengths]


def factor_settings(epochs: int, factors: Sequence[str]) -> list[Setting]:
    out = []
    for name in factors:
        options, changes_baseline = FACTORS[name]
        tag = f"e{epochs}-{name}"
        out.append(Setting(tag, epochs, options, tag if changes_baseline else f"e{epochs}"))
    return out


def best_length(results: Sequence[Mapping[str, Any]], lengths: Sequence[int], seeds: Sequence[int]) -> int | None:
    """The length where ours' mean top-1 over the seeds is highest (shorter on a tie); None until every seed of every
    length has finished."""
    by = {(r["variant"], int(r["seed"])): r["mean_top1"] for r in results}
    means = {}
    for e in lengths:
        vals = [by.get((f"ours@e{e}", s)) for s in seeds]
        if any(v is None for v in vals):
            return None
        means[e] = sum(vals) / len(vals)  # type: ignore[arg-type]
    return max(sorted(means), key=lambda e: (means[e], -e))


# ---------------------------------------------------------------------------------------------- report
def verdict(pair: Mapping[str, Any]) -> str:
    """What the paired differences ours - baseline show: 'ahead' (interval above 0 and ours ahead on every seed),
    'behind' (interval below 0), or 'undecided'."""
    ci = pair.get("ci95")
    if ci is None:
        return "undecided"
    if ci[0] > 0 and pair["second_better"] == 0:
        return "ahead"
    if ci[1] < 0:
        return "behind"
    return "undecided"


def sentences(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per setting, then one on the whole, each saying only what the intervals show."""
    out = []
    for r in rows:
        p = r["pair"]
        if p is None:
            continue
        n = len(p["seeds"])
        ci = p["ci95"]
        span = f"95 % interval {pct(ci[0], sign=True)} to {pct(ci[1], sign=True)} points" if ci else "one seed, no interval"
        v = verdict(p)
        what = {"ahead": "ours is ahead of baseline", "behind": "ours is behind baseline",
                "undecided": "the seeds do not decide between ours and baseline"}[v]
        out.append(f"At {r['setting']}, {what}: mean difference {pct(p['mean'], sign=True)} points ({span}; ours ahead on "
                   f"{p['first_better']} of {n} seeds).")
    verdicts = {r["setting"]: verdict(r["pair"]) for r in rows if r["pair"] is not None and r["pair"]["ci95"] is not None}
    ahead = [s for s, v in verdicts.items() if v == "ahead"]
    waiting = [r["setting"] for r in rows if r["pair"] is None or r["pair"]["ci95"] is None]
    if waiting:
        out.append(f"Fewer than two seeds paired yet (no interval, nothing said): {', '.join(waiting)}.")
    if not verdicts:
        return out
    if ahead:
        out.append(f"ours >= baseline holds across seeds at: {', '.join(ahead)}.")
    elif all(v == "behind" for v in verdicts.values()):
        out.append("At no setting with an interval is ours >= baseline on this data: every interval lies below 0.")
    else:
        out.append("At no setting with an interval does ours >= baseline hold across seeds on this data; where the "
                   "intervals hold 0 more seeds would be needed to say more.")
    return out


def table_rows(summary: Mapping[str, Any], settings: Sequence[Setting]) -> list[dict[str, Any]]:
    rows = []
    for st in settings:
        key = f"ours@{st.tag} - baseline@{st.baseline_tag}"
        rows.append({"setting": describe(st), "tag": st.tag, "ours": summary["variants"].get(f"ours@{st.tag}"),
                     "baseline": summary["variants"].get(f"baseline@{st.baseline_tag}"), "pair": summary["paired"].get(key)})
    return rows


def describe(st: Setting) -> str:
    changed = ", ".join(f"{k} {v}" for k, v in st.options.items())
    return f"{st.epochs} epochs" + (f", {changed}" if changed else "")


def markdown(rows: Sequence[Mapping[str, Any]], command: str, best: int | None, cpu_s: float, platform: Mapping[str, Any],
             measured_best: int | None = None) -> str:
    """`best`: the length stage 2 ran at; `measured_best`: stage 1's best where --best-epochs set another."""
    def pm(s: Mapping[str, Any] | None) -> str:
        return "-" if not s else f"{mean_pm(s['mean_top1'])} ({s['mean_top1']['n']})"

    lines = ["# Where does the method help? ours - baseline on the demo mixture, one factor at a time", "",
             "Top-1 % (mean over the three data sets' test splits, joint label space), mean +- std over seeds (seeds); "
             "paired differences ours - baseline per seed, 95 % Student-t interval across seeds.", "", "    " + command, "",
             "Best length (ours' mean top-1 over seeds, stage 1): "
             + (f"{measured_best}; stage 2 ran at {best} epochs (--best-epochs)" if measured_best not in (None, best)
                else f"{best if best is not None else 'not yet (stage 1 unfinished)'}"), "",
             "| setting | ours | baseline | ours - baseline | 95 % interval | ours ahead / behind | shows |",
             "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    for r in rows:
        p = r["pair"]
        diff = "-" if p is None else pct(p["mean"], sign=True)
        ci = "-" if p is None or p["ci95"] is None else f"{pct(p['ci95'][0], sign=True)} to {pct(p['ci95'][1], sign=True)}"
        ab = "-" if p is None else f"{p['first_better']} / {p['second_better']}"
        lines.append(f"| {r['setting']} | {pm(r['ours'])} | {pm(r['baseline'])} | {diff} | {ci} | {ab} | "
                     f"{'-' if p is None else verdict(p)} |")
    lines += ["", "## What the intervals show", "", *[f"- {s}" for s in sentences(rows)], "",
              f"Training CPU time of the finished runs: {cpu_s:.0f} s (each run's in its raw result).", "",
              "## Platform", "", "```", json.dumps(dict(platform), indent=1), "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- running
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.method_factors", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/factors"))
    ap.add_argument("--data", action="append", default=[], help="NAME=PATH (default: the demo mixture written to OUT/data)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="stage 1: epochs")
    ap.add_argument("--factors", default=",".join(FACTORS), help=f"stage 2: of {', '.join(FACTORS)}")
    ap.add_argument("--best-epochs", type=int, default=None, help="stage 2's length, in place of stage 1's best")
    ap.add_argument("--reuse", type=Path, default=None, help="accuracy_seeds' results folder (VARIANT.sSEED.json)")
    ap.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (resume later)")
    ap.add_argument("--threads", type=int, default=None)
    add_small_settings(ap, epochs=False)  # for the study's own test (each setting sets its epochs)
    args = ap.parse_args(argv)

    from erudite_edge.core.fileio import write_json_atomic, write_text_atomic

    factors = [f.strip() for f in args.factors.split(",") if f.strip()]
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        ap.error(f"--factors {','.join(unknown)}: one of {', '.join(FACTORS)}")
    plan, data = demo_setup(args)
    small = small_overrides(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    lengths = [int(e) for e in args.lengths.split(",") if e.strip()]
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.studies.method_factors " + " ".join(argv if argv is not None else sys.argv[1:])
    results: list[dict[str, Any]] = []
    new_runs = 0

    def config(variant: str, st: Setting, seed: int) -> Any:
        name = result_name(variant, seed, st.tag).removesuffix(".json")
        cfg = plan.train_config(data, args.out / "runs" / name, variant)
        return dataclasses.replace(cfg, seed=seed, epochs=st.epochs, **small, **st.options)

    def report(settings: Sequence[Setting], best: int | None) -> None:
        pairs = [(f"ours@{s.tag}", f"baseline@{s.baseline_tag}") for s in settings]
        summary = summarize(results, pairs)
        rows = table_rows(summary, settings)
        cpu = sum(r["train_cpu_s"] for r in results)
        measured = best_length(results, lengths, seeds)
        write_json_atomic(args.out / "summary.json", {"command": command, "best_epochs": best, "stage1_best_epochs": measured,
                                                      "train_cpu_s": cpu,
                                                      "rows": rows, "sentences": sentences(rows), "summary": summary,
                                                      "results": results})
        write_text_atomic(args.out / "factors.md", markdown(rows, command, best, cpu,
                                                            results[0]["platform"] if results else platform_record(),
                                                            measured_best=measured))

    def ensure(variant: str, st: Setting, seed: int) -> bool:
        """The run's result into `results` (finished, reused or trained now); False where --max-runs stops it."""
        nonlocal new_runs
        path = args.out / "results" / result_name(variant, seed, st.tag)
        cfg = config(variant, st, seed)
        earlier = args.reuse / result_name(variant, seed) if args.reuse else None
        if not path.is_file() and not st.options and earlier and earlier.is_file():
            old = json.loads(earlier.read_text())
            if same_settings(old["train_config"], cfg.to_dict()):
                write_json_atomic(path, {**old, "variant": f"{variant}@{st.tag}", "reused_from": str(earlier)})
        if path.is_file():
            results.append(json.loads(path.read_text()))
            return True
        if args.max_runs is not None and new_runs >= args.max_runs:
            return False
        print(f"method_factors: {variant}@{st.tag} seed {seed}", file=sys.stderr)
        results.append(run_one(cfg, path, f"{variant}@{st.tag}", seed, {"setting": st.tag, "options": dict(st.options)}))
        new_runs += 1
        return True

    def run_all(settings: Sequence[Setting], done: list[Setting], best: int | None) -> bool:
        """Every run of `settings` (appended to `done` as they start: the report shows the unfinished one too)."""
        for st in settings:
            done.append(st)
            for seed in seeds:
                for variant in ("ours", "baseline"):
                    if variant == "baseline" and st.baseline_tag != st.tag:
                        continue  # paired with the baseline of the same length (stage 1's)
                    if not ensure(variant, st, seed):
                        return False
                    report(done, best)
        return True

    done: list[Setting] = []
    finished = run_all(length_settings(lengths), done, None)
    best = args.best_epochs or (best_length(results, lengths, seeds) if finished else None)
    if finished and best is not None:
        stage2 = factor_settings(best, factors)
        if best not in lengths:  # a forced length: its reference first
            finished = run_all(length_settings([best]), done, best)
        finished = finished and run_all(stage2, done, best)
    report(done or length_settings(lengths), best)
    print(f"method_factors: {len(results)} results, {new_runs} trained now{'' if finished else ' (stopped: --max-runs)'}; "
          f"{args.out / 'factors.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

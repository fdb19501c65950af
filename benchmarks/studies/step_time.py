"""Training step time of `ours` against `baseline+` and `baseline`, measured side by side.

    python -m benchmarks.studies.step_time --backbone resnet50 --input-size 224 --batch-per-dataset 16 --datasets 2 --device cuda

Each variant gets its model, its optimisers (train.optim.build_optimizers) and its step
(train.two_stage.TwoStageStep): for `ours` stage I on every parameter but theta, then stage II, the
second-order meta step on theta over backbone features recomputed with the backbone stage I just
stepped (`--meta-features fresh`, the default: one more backbone forward, without a graph);
`ours-reuse` the same on stage I's own features (`--meta-features reuse`: no second backbone run);
`baseline+` stage I only, with the data-set heads; `baseline` stage I on backbone + one classifier.
A balanced batch (the same number of images of each data set, as in training) of random images stays
on the device; the variants take turns over interleaved rounds and each figure is the median over
steps, each ratio with a 95 % bootstrap interval over the rounds (benchmarks.stats). The goal: an
`ours` step well under twice a `baseline+` step, judged on the interval (PASS only when all of it is
at or below 2; fewer than 6 rounds: INCONCLUSIVE). With --json the raw samples go beside it
(FILE.samples.json.gz; `python -m benchmarks.recompute FILE` re-derives the figures), with the load
the study ran under (benchmarks.load).

Learning rates are small (timing only): a step's cost does not depend on them, and sane values
keep the arithmetic free of overflow. torch is needed here (this is the training side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.latency import Contender, Samples, interleaved, percentile
from benchmarks.load import describe, run_quiet
from benchmarks.raw import RawSamples, quantise, write_result

# contender -> (training variant, stage II's features)
CONTENDERS = {"ours": ("ours", "fresh"), "ours-reuse": ("ours", "reuse"), "baseline+": ("baseline+", "fresh"),
              "baseline": ("baseline", "fresh")}
VARIANTS = tuple(CONTENDERS)
STEP_RATIO_GOAL = 2.0  # ours / baseline+ must stay well under this
DEFAULT_COUNTS = {2: [200, 196], 3: [200, 196, 100], 4: [200, 196, 100, 102]}


@dataclass
class StepTimeConfig:
    backbone: str = "resnet50"
    input_size: int = 224
    batch_per_dataset: int = 16
    class_counts: Sequence[int] = (200, 196)
    device: str = "cpu"
    variants: Sequence[str] = VARIANTS
    warmup: int = 2
    iters: int = 10
    rounds: int = 5
    amp: bool = True  # on CUDA: mixed precision as training uses it (bf16 where supported)
    embed_dim: int = 512
    hidden: int = 512
    seed: int = 0


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from erudite_edge.errors import UsageError

        raise UsageError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return torch.device(name)


def make_step(variant: str, cfg: StepTimeConfig, device: Any) -> Callable[[], None]:
    """One training step of `variant` on a fixed balanced batch, synchronised on CUDA."""
    import torch

    from train.loop import amp_settings
    from train.model import build_model
    from train.model_spec import ModelConfig
    from train.optim import OptimConfig, build_optimizers
    from train.two_stage import TwoStageStep

    counts = list(cfg.class_counts)
    variant, meta_features = CONTENDERS[variant]
    torch.manual_seed(cfg.seed)
    net = build_model(ModelConfig(variant=variant, backbone=cfg.backbone, class_counts=counts, embed_dim=cfg.embed_dim,
                                  hidden=cfg.hidden, pretrained=False)).to(device).train()
    ocfg = OptimConfig(lr=1e-3, backbone_lr=1e-4)
    main_opt, theta_opt = build_optimizers(net, ocfg)
    amp_dtype, scaler = amp_settings(device, cfg.amp)
    step = TwoStageStep(net, main_opt, theta_opt, ocfg.alpha_value, meta_features=meta_features, amp_dtype=amp_dtype,
                        scaler=scaler, seed=cfg.seed)

    g = torch.Generator().manual_seed(cfg.seed)
    per = cfg.batch_per_dataset
    ids = torch.arange(len(counts)).repeat_interleave(per)
    local = torch.cat([torch.randint(k, (per,), generator=g) for k in counts])
    offsets = torch.tensor([0] + list(torch.tensor(counts).cumsum(0)[:-1].tolist()))
    joint = offsets[ids] + local
    images = torch.randn(len(ids), 3, cfg.input_size, cfg.input_size, generator=g)
    images, ids, joint, local = (t.to(device) for t in (images, ids, joint, local))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run() -> None:
        step(images, ids, joint, local)
        sync()

    return run


def measure(cfg: StepTimeConfig, on_call: Callable[[], None] | None = None) -> tuple[dict[str, Any], RawSamples]:
    import torch

    device = _device(cfg.device)
    batch = cfg.batch_per_dataset * len(cfg.class_counts)
    contenders = []
    for v in cfg.variants:
        run = make_step(v, cfg, device)

        def step(run: Callable[[], None] = run) -> None:
            run()
            return None

        contenders.append(Contender(v, batch, step))
    samples = interleaved(contenders, warmup=cfg.warmup, iters=cfg.iters, rounds=cfg.rounds, on_call=on_call)
    raw = RawSamples("step_time", {v: quantise(sm) for v, sm in samples.items()})
    settings = {"backbone": cfg.backbone, "input_size": cfg.input_size, "batch_per_dataset": cfg.batch_per_dataset,
                "class_counts": list(cfg.class_counts), "device": str(device), "amp": bool(cfg.amp and device.type == "cuda"),
                "warmup": cfg.warmup, "iters": cfg.iters, "rounds": min(cfg.rounds, cfg.iters),
                "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "threads": torch.get_num_threads()}
    out = {"settings": settings, **derive(raw.series, settings)}
    loads = [sm.load for sm in samples.values()][:1]
    out["load"] = {"label": describe(loads), "quiet": run_quiet(loads), "series": loads}
    return out, raw


def derive(samples: dict[str, Samples], settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the study from its samples (what `python -m benchmarks.recompute` runs again):
    per variant its median step, each ratio with its paired 95 % interval over the rounds, and the
    goal judged on the ours / baseline+ interval (benchmarks.stats.Verdict: never on the point ratio)."""
    from benchmarks.stats import Verdict, latency_ratio_ci

    per_variant: dict[str, dict[str, Any]] = {v: {"median_ms": statistics.median(s.latency_ms), "p90_ms": percentile(s.latency_ms, 90),
                       "min_ms": min(s.latency_ms), "steps": len(s.latency_ms),
                       "images_per_s": statistics.median(s.round_ips), "samples_ms": [round(v, 2) for v in s.latency_ms]} for v, s in samples.items()}
    out: dict[str, Any] = {
        "variants": per_variant,
        "ratio_of_fastest_steps": ({"ours_over_baseline_plus": per_variant["ours"]["min_ms"] / per_variant["baseline+"]["min_ms"]}
                                   if "ours" in per_variant and "baseline+" in per_variant else {}),
    }
    intervals: dict[str, dict[str, Any]] = {}
    cis = {}
    for num, den in (("ours", "ours-reuse"), ("ours", "baseline+"), ("ours-reuse", "baseline+"), ("ours", "baseline")):
        if num in samples and den in samples:
            ci = cis[num, den] = latency_ratio_ci(samples[num].round_latency_ms, samples[den].round_latency_ms, 50)
            intervals[f"{num}/{den}"] = {"median_ratio": per_variant[num]["median_ms"] / per_variant[den]["median_ms"],
                                         "ci95": [round(ci[0], 5), round(ci[1], 5)] if ci else None,
                                         "rounds": ci.units if ci else None}
    if "ours" in per_variant and "baseline+" in per_variant:
        ratio = per_variant["ours"]["median_ms"] / per_variant["baseline+"]["median_ms"]
        out["ratio_ours_over_baseline_plus"] = ratio
        v = Verdict(cis["ours", "baseline+"], "<=", STEP_RATIO_GOAL)
        out["goal"] = {"name": "ours step / baseline+ step", "value": ratio, "threshold": f"<= {STEP_RATIO_GOAL:g}",
                       "status": v.status, "ci95": intervals["ours/baseline+"]["ci95"], "reason": v.reason}
    if "ours" in per_variant and "baseline" in per_variant:
        out["ratio_ours_over_baseline"] = per_variant["ours"]["median_ms"] / per_variant["baseline"]["median_ms"]
    out["ratios"] = intervals
    return out


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    s = result["settings"]
    t = Table(title=f"training step time: {s['backbone']} at {s['input_size']} px, {s['batch_per_dataset']} images x "
                    f"{len(s['class_counts'])} data sets, {s['device']}{' (AMP)' if s['amp'] else ''}", title_justify="left")
    for col in ("variant", "median ms", "p90 ms", "min ms", "images/s", "steps"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for v, r in result["variants"].items():
        t.add_row(v, f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['images_per_s']:.1f}", str(r["steps"]))
    console.print(t)
    if "ratio_ours_over_baseline_plus" in result:
        console.print(f"ours / baseline+: {result['ratio_ours_over_baseline_plus']:.3f}", markup=False)
    if "ratio_ours_over_baseline" in result:
        console.print(f"ours / baseline: {result['ratio_ours_over_baseline']:.3f}", markup=False)
    fastest = result.get("ratio_of_fastest_steps", {}).get("ours_over_baseline_plus")
    if fastest is not None:
        console.print(f"fastest steps, ours / baseline+: {fastest:.3f} (a check on a noisy shared machine)", markup=False)
    for name, r in result.get("ratios", {}).items():
        ci = f" (95 % CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})" if r["ci95"] else ""
        console.print(f"median step {name}: {r['median_ratio']:.3f}{ci}", markup=False)
    g = result.get("goal")
    if g:
        ci = f" [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}]" if g.get("ci95") else ""
        why = f" ({g['reason']})" if g.get("reason") else ""
        console.print(f"{g['status']}: {g['name']}: {g['value']:.3f}{ci} {g['threshold']}{why}; {result['load']['label']}",
                      style="green" if g["status"] == "PASS" else "red", markup=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.step_time", description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--batch-per-dataset", type=int, default=16)
    ap.add_argument("--datasets", type=int, default=2, help="N, with the paper's class counts (2: CUB+Cars, 3: +Aircraft, 4: +Flowers)")
    ap.add_argument("--class-counts", default=None, help="comma-separated class counts (overrides --datasets)")
    ap.add_argument("--embed-dim", type=int, default=512, help="width of each projection head (the demo: 256)")
    ap.add_argument("--hidden", type=int, default=512, help="classifier hidden width (the demo: 256)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (a verdict needs at least 6)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (on a CPU shared with other work, 1 avoids threads spinning against it)")
    ap.add_argument("--no-amp", action="store_true", help="on CUDA, time fp32 steps instead of mixed precision")
    ap.add_argument("--json", type=Path, default=None, help="also write the result to this JSON file")
    args = ap.parse_args(argv)
    if args.class_counts:
        counts = [int(v) for v in args.class_counts.split(",") if v.strip()]
    elif args.datasets in DEFAULT_COUNTS:
        counts = DEFAULT_COUNTS[args.datasets]
    else:
        ap.error("--datasets is 2, 3 or 4 (or give --class-counts)")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"--variants: each one of {', '.join(VARIANTS)}")
    if args.iters < 1 or args.batch_per_dataset < 1:
        ap.error("--iters and --batch-per-dataset must be at least 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = StepTimeConfig(backbone=args.backbone, input_size=args.input_size, batch_per_dataset=args.batch_per_dataset,
                         class_counts=counts, device=args.device, variants=variants, warmup=args.warmup, iters=args.iters,
                         rounds=args.rounds, amp=not args.no_amp, embed_dim=args.embed_dim, hidden=args.hidden)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from benchmarks.report import stdout_console
    from erudite_edge.errors import EruditeError

    console = stdout_console()
    total = len(variants) * (max(0, args.warmup) + args.iters)
    try:
        with Progress(TextColumn("training steps"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("steps", total=total)
            result, raw = measure(cfg, on_call=lambda: progress.advance(task))
    except EruditeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    render(result, console)
    if args.json:
        write_result(args.json, result, raw)  # the raw samples first: a summary never lies on disk without them
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`erudite-edge bench`: the erudite bundle against the two-stage zoo, side by side, in one run.

Both models are loaded at every precision asked for, on the same backend; for each batch size all
of them (erudite and zoo, each precision) are timed in interleaved rounds, so machine noise hits
every contender alike: latency mean / p50 / p90 / p99, throughput, device compute time where the
backend separates it. (`--no-interleave-precisions` loads one precision at a time, for devices short
of memory; erudite and zoo still alternate.) The zoo's timing input is a mixed batch whose routing
is forced to split evenly across the data sets (benchmarks.instrument). Then, on request, end-to-end
folder throughput against pure inference (`--source`), top-1 per data set (`--data`), and top-1
agreement between precisions. Complexity (params, MACs) comes from the fp32 ONNX graphs, model
sizes from the files.

Timing is time-based as trtexec's (benchmarks.latency: at least --warmup calls and --warmup-ms, at
least --iters calls and --min-duration-s per series); each series gets its CV and an `unstable` flag;
every erudite/zoo ratio gets a paired bootstrap 95 % interval over the interleaved rounds
(benchmarks.stats), the goals are judged on it (benchmarks.goals), and MLPerf's scenarios are named
(benchmarks.scenarios). Peak memory is measured in fresh processes after the timing
(benchmarks.memory), and every result carries the machine's record (benchmarks.environment) and,
per series, its measured load (benchmarks.load: the run is "quiet" only if every series was). The
raw per-round samples go beside bench.json (benchmarks.raw); `python -m benchmarks.recompute
bench.json` re-derives every interval and verdict from them.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import sys
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import accuracy as acc
from benchmarks.complexity import ComplexityUnavailable, bundle_complexity, model_files_mb
from benchmarks.end_to_end import FolderImages, load_folder, measure
from benchmarks.environment import PowerMeter, environment
from benchmarks.goals import evaluate
from benchmarks.instrument import Instrumented
from benchmarks.latency import Contender, Samples, blocks_total, interleaved, percentile, split_rounds, summarize
from benchmarks.load import QUIET_OTHER, QUIET_STEAL, busy_reasons, run_label
from benchmarks.memory import measure_memory
from benchmarks.raw import RawSamples, quantise
from benchmarks.scenarios import scenarios
from benchmarks.stats import LEVEL, RESAMPLES, latency_ratio_ci, throughput_ratio_ci
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import PRECISIONS, Bundle
from erudite_edge.errors import BundleError, UsageError
from export.eval_set import read_eval_set

ZOO_ROUTING = ("Zoo timing input: a mixed batch whose routing is forced to split evenly across the data sets "
               "(image i to data set (i + k) mod N): the coarse model runs on all B images, each fine model on its "
               "B/N; at batch 1 the image goes to each fine model in turn.")
INTERVALS = (f"{100 * LEVEL:g} % paired bootstrap intervals: the interleaved rounds resampled ({RESAMPLES} times, "
             "the same rounds for both sides of a ratio), latency percentiles over the pooled calls of the "
             "resampled rounds, throughput the median of their images/s; percentile interval, seeded")
FORMAT = "erudite-edge-bench"
FORMAT_VERSION = 1


@dataclass
class BenchConfig:
    bundle: Path
    zoo: Path | None = None
    backend: str = "auto"
    precisions: list[str] | None = None  # None: every precision both bundles hold for every role
    batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    warmup: int = 3  # at least this many warm-up calls per contender and batch size ...
    warmup_ms: float = 200.0  # ... and at least this long (trtexec's --warmUp)
    iters: int = 20  # at least this many timed calls per contender and batch size ...
    min_duration_s: float = 3.0  # ... and at least this long (trtexec's --duration)
    rounds: int = 10
    cv_threshold: float = 0.10  # a series whose latencies vary more (stdev / mean) is flagged unstable
    memory_repeats: int = 3  # fresh processes per model and precision for peak memory (0: not measured)
    cuda_graph: bool = False  # TensorRT: execute through a captured CUDA graph (trtexec --useCudaGraph)
    data_transfers: bool = True  # False: TensorRT times compute only, no host<->device copies (trtexec --noDataTransfers)

    def runner_options(self, precision: str = "auto") -> RunnerOptions:
        """How the bench loads its models (one RunnerOptions for every contender; load_runner gives the
        TensorRT-only options to the backends that take them, the others warn and ignore them)."""
        return RunnerOptions(backend=self.backend, precision=precision, threads=self.threads, spinning=self.ort_spinning,
                             cuda_graph=self.cuda_graph, data_transfers=self.data_transfers)
    threads: int | None = None
    ort_spinning: bool = False  # ONNX Runtime thread spinning (off: sessions taking turns do not slow each other)
    source: Path | None = None
    source_limit: int | None = None
    data: list[str] = field(default_factory=list)
    data_limit: int | None = None
    workers: int | None = None
    e2e_rounds: int = 6  # a verdict on the end-to-end ratio's interval needs 6 rounds (benchmarks.stats.MIN_UNITS)
    interleave_precisions: bool = True  # load every precision at once and time them interleaved too
    seed: int = 0
    command: str = ""

    def validate(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise UsageError(f"--batch: positive batch sizes, e.g. 1,8,32 (got {self.batches})")
        if self.iters < 1 or self.warmup < 0 or self.rounds < 1:
            raise UsageError("--iters and --rounds must be at least 1, --warmup at least 0")
        if self.warmup_ms < 0 or self.min_duration_s < 0 or self.cv_threshold <= 0 or self.memory_repeats < 0:
            raise UsageError("--warmup-ms, --min-duration-s and --memory-repeats must be 0 or more, --cv-threshold above 0")
        bad = [p for p in self.precisions or [] if p not in PRECISIONS]
        if bad:
            raise UsageError(f"--precision {','.join(bad)}: each one of {', '.join(PRECISIONS)}")


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} {text!r}: comma-separated whole numbers, e.g. 1,8,32") from None
    if not out:
        raise UsageError(f"{what}: give at least one value")
    return sorted(dict.fromkeys(out))


def parse_precisions(text: str | None) -> list[str] | None:
    if text is None or text.strip().lower() in ("", "all"):
        return None
    out = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in out if p not in PRECISIONS]
    if bad:
        raise UsageError(f"--precision {text}: each one of {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(out))


def bundle_precisions(bundle: Bundle) -> list[str]:
    """Precisions for which every role of the bundle has a model (ONNX or engine)."""
    have = {(m.role, m.precision) for m in bundle.models}
    return [p for p in PRECISIONS if all((r, p) in have for r in bundle.roles())]


def resolve_precisions(erudite: Bundle, zoo: Bundle | None, asked: list[str] | None) -> list[str]:
    both = [p for p in bundle_precisions(erudite) if zoo is None or p in bundle_precisions(zoo)]
    if asked is None:
        if not both:
            raise BundleError("the bundles share no precision with a model for every role")
        return both
    for p in asked:
        for b in (erudite, zoo):
            if b is not None and p not in bundle_precisions(b):
                hint = {"fp16": "`erudite-edge export fp16 --bundle DIR`",
                        "int8": "`erudite-edge export int8 --bundle DIR --calib IMAGES`"}.get(p, "re-export it")
                raise BundleError(f"{b.root}: no {p} model for every role (has: {', '.join(bundle_precisions(b)) or 'none'}); "
                                  f"make one with {hint}, or leave {p} out of --precision")
    return asked


def check_pair(erudite: Bundle, zoo: Bundle | None, warn: Callable[[str], None]) -> None:
    if erudite.kind != "erudite":
        raise BundleError(f"{erudite.root}: a {erudite.kind} bundle; pass it with --zoo, and the erudite one with --bundle")
    if zoo is None:
        return
    if zoo.kind != "zoo":
        raise BundleError(f"{zoo.root}: an {zoo.kind} bundle, not a zoo (--zoo takes the bundle of coarse + fine models)")
    mine = dict(zip(erudite.labels.datasets, erudite.labels.sizes))
    theirs = dict(zip(zoo.labels.datasets, zoo.labels.sizes))
    if mine == theirs and list(mine) != list(theirs):
        raise UsageError(f"the erudite bundle and the zoo hold the same data sets in another order ({', '.join(mine)} vs "
                         f"{', '.join(theirs)}), so their joint class numbers differ: train both with --data in the same order")
    if list(erudite.labels.datasets) != list(zoo.labels.datasets) or erudite.labels.sizes != zoo.labels.sizes:
        raise UsageError(f"the erudite bundle covers {dict(zip(erudite.labels.datasets, erudite.labels.sizes))} but the zoo "
                         f"{dict(zip(zoo.labels.datasets, zoo.labels.sizes))}: bench models of the same data sets")
    if erudite.preprocess.input_size != zoo.preprocess.input_size:
        warn(f"input sizes differ (erudite {erudite.preprocess.input_size}, zoo {zoo.preprocess.input_size}): "
             "timings compare different amounts of work")


def int8_facts(b: Bundle) -> dict[str, Any] | None:
    """How the bundle's INT8 models were made (bundle.json): what the INT8 accuracy depends on."""
    if "int8" not in bundle_precisions(b):
        return None
    info = b.entry(b.roles()[0], "int8").info or {}
    mixed = info.get("mixed_precision") or {}
    return {"method": info.get("method"), "target": info.get("target", "tensorrt"), "seed": info.get("seed"),
            "quantizer": info.get("quantizer"), "calibration": info.get("calibration"),
            "float_nodes": {role: len(m.get("nodes", [])) for role, m in mixed.items()}}


def bundle_facts(b: Bundle, path: Path) -> dict[str, Any]:
    return {"path": str(path), "kind": b.kind, "variant": b.variant, "backbone": b.backbone,
            "datasets": list(b.labels.datasets), "num_datasets": b.labels.num_datasets,
            "num_classes": b.labels.num_classes, "input_size": list(b.preprocess.input_size),
            "precisions": bundle_precisions(b), "int8": int8_facts(b)}


def host_facts() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime as ort

        ort_version: str | None = ort.__version__
    except ImportError:
        ort_version = None
    return {"machine": f"{platform.system()} {platform.machine()}", "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort_version}


def synthetic_batch(bundle: Bundle, batch: int, seed: int) -> np.ndarray:
    """Model input of the bundle's shape and dtype: normalised images are roughly standard normal; a uint8
    model takes random bytes."""
    return bundle.preprocess.random_batch(batch, seed)


class _Progress:
    """A rich progress bar on the console (when it is a terminal), advanced in calls / images."""

    def __init__(self, console: Any, enabled: bool):
        self.bar: Any = None
        self.task: Any = None
        if enabled and console is not None and getattr(console, "is_terminal", False):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("bench", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def add_total(self, n: int) -> None:
        if self.bar is not None:
            t = self.bar.tasks[0].total or 0
            self.bar.update(self.task, total=t + n)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)


def run_bench(cfg: BenchConfig, console: Any = None, progress: bool = True) -> tuple[dict[str, Any], RawSamples]:
    """Measure everything the config asks for; return the result (JSON-ready, goals included) and the
    raw samples it was computed from (benchmarks.raw; report.write_outputs writes both)."""
    from erudite_edge.inference.models import load_model

    cfg.validate()

    def say(msg: str, style: str | None = None) -> None:
        if console is not None:
            console.print(msg, style=style, markup=False, highlight=False)
        else:
            print(msg, file=sys.stderr, flush=True)

    warn = lambda msg: say(f"warning: {msg}", "yellow")  # noqa: E731

    busy_measured_list, busy_average = busy_reasons()
    busy = "; ".join(busy_measured_list + busy_average) or None
    busy_measured = "; ".join(busy_measured_list) or None
    if busy_measured:
        warn(f"this machine is busy ({busy}): the timings will be labelled \"under load\" and their intervals "
             "wider; for figures to publish, run on a quiet machine")
    elif busy:
        warn(f"this machine was busy lately ({busy}): if other work goes on, the timings will be labelled \"under load\"")
    raw = RawSamples("bench")

    # Cheap checks first: bundles, precisions, eval sets, source folder.
    erudite = Bundle.load(cfg.bundle)
    zoo = Bundle.load(cfg.zoo) if cfg.zoo is not None else None
    check_pair(erudite, zoo, warn)
    precisions = resolve_precisions(erudite, zoo, cfg.precisions)
    batches = sorted(dict.fromkeys(cfg.batches))
    models = ["erudite"] + (["zoo"] if zoo is not None else [])
    bundles = {"erudite": erudite, **({"zoo": zoo} if zoo is not None else {})}
    eval_sets = [read_eval_set(s, erudite.labels, cfg.data_limit, cfg.seed) for s in cfg.data]
    folder: FolderImages | None = None
    if cfg.source is not None:
        folder = load_folder(str(cfg.source), erudite.preprocess, cfg.source_limit, warn)
    eval_batch = min(32, max(batches))
    meter = PowerMeter()  # a Jetson's board power monitor: energy per image where readable
    power_on = meter.available

    result: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
        "host": host_facts(),
        "environment": environment(meter),
        "load": {"busy_at_start": busy, "busy_measured_at_start": busy_measured},
        "settings": {
            "backend": cfg.backend, "precisions": precisions, "batches": batches, "warmup": cfg.warmup,
            "warmup_ms": cfg.warmup_ms, "iters": cfg.iters, "min_duration_s": cfg.min_duration_s,
            "rounds": len(split_rounds(cfg.iters, cfg.rounds)), "cv_threshold": cfg.cv_threshold,
            "intervals": INTERVALS, "memory_repeats": cfg.memory_repeats,
            "cuda_graph": cfg.cuda_graph, "data_transfers": cfg.data_transfers, "threads": cfg.threads, "ort_spinning": cfg.ort_spinning,
            "seed": cfg.seed,
            "zoo_routing": ZOO_ROUTING if zoo is not None else "",
            "source": str(cfg.source) if cfg.source is not None else None,
            "source_images": len(folder.paths) if folder else 0, "e2e_rounds": cfg.e2e_rounds, "workers": cfg.workers,
            "interleave_precisions": cfg.interleave_precisions,
            "data": list(cfg.data), "data_limit": cfg.data_limit,
        },
        "bundles": {name: bundle_facts(b, Path(getattr(cfg, "bundle" if name == "erudite" else "zoo"))) for name, b in bundles.items()},
        "latency": [],
        "end_to_end": [],
    }

    # Complexity from the fp32 graphs (or the first precision there is), sizes from the files.
    comp_prec = "fp32" if "fp32" in bundle_precisions(erudite) and (zoo is None or "fp32" in bundle_precisions(zoo)) else precisions[0]
    try:
        comp = {name: bundle_complexity(bdl, comp_prec) for name, bdl in bundles.items()}
        result["complexity"] = {name: c.to_dict() for name, c in comp.items()}
        result["complexity"]["counter"] = next(iter(comp["erudite"].roles.values())).counter
        result["complexity"]["precision"] = comp_prec
        if zoo is not None:
            result["complexity"]["ratio"] = {"params": comp["erudite"].params / comp["zoo"].params,
                                             "macs": comp["erudite"].macs_per_image / comp["zoo"].macs_per_image}
    except (ComplexityUnavailable, BundleError) as e:
        warn(f"complexity not counted: {e}")
        result["complexity"] = {"error": str(e)}
    sizes: dict[str, Any] = {}
    for p in precisions:
        mb = {name: model_files_mb(bdl, p) for name, bdl in bundles.items()}
        e_mb, z_mb = mb.get("erudite"), mb.get("zoo")
        sizes[p] = {**mb, **({"ratio": e_mb / z_mb} if e_mb and z_mb else {})}
    result["size_mb"] = sizes

    preds: dict[str, dict[str, np.ndarray]] = {m: {} for m in models}
    accuracy: dict[str, dict[str, Any]] = {m: {} for m in models}
    announce = lambda msg: say(msg, "dim")  # noqa: E731
    # Precisions measured together (loaded at once, timed interleaved) unless memory forbids it.
    groups = [precisions] if cfg.interleave_precisions else [[p] for p in precisions]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    unstable: list[str] = []
    ignored_options: list[str] = []
    kept: dict[tuple[str, str, int], Samples] = {}  # every series' samples, for the scenarios' intervals

    with _Progress(console, progress) as bar:
        per_batch = blocks_total(len(models), cfg.iters, cfg.rounds) + len(models)  # in blocks of calls
        bar.add_total(per_batch * len(batches) * len(precisions))
        if folder is not None:
            bar.add_total(len(batches) * len(models) * 2 * max(1, cfg.e2e_rounds))
        agree_images = sum(len(s) for s in eval_sets) if eval_sets else (len(folder.paths) if folder else 0)
        bar.add_total(agree_images * len(models) * len(precisions))
        bar.add_total(cfg.memory_repeats * (len(models) + 1) * len(precisions))

        for group in groups:
            with ExitStack() as stack:
                inst: dict[tuple[str, str], Instrumented] = {}
                for p in group:
                    for name, bdl in bundles.items():
                        bar.describe(f"loading {name} {p}")
                        with warnings.catch_warnings(record=True) as caught:
                            warnings.simplefilter("always", RuntimeWarning)
                            c = load_model(bdl, cfg.runner_options(p), announce=announce)
                        for msg in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)):
                            if msg not in ignored_options:
                                ignored_options.append(msg)
                                warn(f"{name} {p}: {msg}")
                        inst[name, p] = Instrumented(c, forced_routing=True)
                        stack.callback(inst[name, p].close)
                for p in group:
                    backends = {name: inst[name, p].classifier.backend for name in bundles}
                    if len(set(backends.values())) > 1:
                        warn(f"{p}: the models run on different backends ({', '.join(f'{k} {v}' for k, v in backends.items())}); "
                             "the ratios compare backends too: build the zoo's engines as well, or pass --backend")
                if "providers" not in result["host"]:
                    desc = inst["erudite", group[0]].recorders["main"].describe()
                    result["host"]["providers"] = list(desc.get("providers") or [])

                for b in batches:
                    bar.describe(f"timing {'/'.join(group)} batch {b}")
                    x = synthetic_batch(erudite, b, cfg.seed)
                    power: dict[str, list[float]] = {}
                    contenders = [Contender(f"{name}/{p}", b, _with_power(inst[name, p].timed_step(x), meter,
                                                                           power.setdefault(f"{name}/{p}", []))
                                            if power_on else inst[name, p].timed_step(x))
                                  for p in group for name in models]
                    for i in inst.values():
                        i.reset()
                    samples = interleaved(contenders, warmup=cfg.warmup, iters=cfg.iters, rounds=cfg.rounds,
                                          warmup_ms=cfg.warmup_ms, min_duration_s=cfg.min_duration_s,
                                          on_block=bar.advance)
                    for sm in samples.values():
                        quantise(sm)  # the raw file's precision, before any figure is computed
                    for p in group:
                        row: dict[str, Any] = {"precision": p, "batch": b,
                                               "backend": {name: inst[name, p].backend for name in models},
                                               "images_total": {name: inst[name, p].images_seen() for name in models}}
                        calls = {}
                        for name in models:  # one more call each, to show how one batch is split over the models
                            inst[name, p].reset()
                            inst[name, p].predict(x)
                            calls[name] = inst[name, p].calls_seen()
                            bar.advance()
                        row["calls"] = calls
                        row["load"] = samples[f"erudite/{p}"].load
                        for name in models:
                            raw.series[series_name(name, p, b)] = samples[f"{name}/{p}"]
                            row[name] = summarize(samples[f"{name}/{p}"], b).to_dict()
                            pw = power.get(f"{name}/{p}") or []
                            row[name]["power_mw"] = statistics.median(pw) if pw else None
                            row[name]["energy_mj_per_image"] = (row[name]["power_mw"] * row[name]["p50_ms"] / 1e3 / b
                                                                if pw else None)
                            cv = row[name]["cv"]
                            row[name]["unstable"] = cv is not None and cv > cfg.cv_threshold
                            if row[name]["unstable"]:
                                unstable.append(f"{name} {p} batch {b}: CV {100 * cv:.1f} %")
                                warn(f"unstable: {name} {p} batch {b}: latency CV {100 * cv:.1f} % > "
                                     f"{100 * cfg.cv_threshold:g} % (n={row[name]['n']}); other work on this machine?")
                        for name in models:
                            kept[name, p, b] = samples[f"{name}/{p}"]
                        if zoo is not None:
                            row["ratio"], row["ratio_ci95"] = erudite_zoo_ratios(
                                samples[f"erudite/{p}"], samples[f"zoo/{p}"], row,
                                seed=ratio_seed(cfg.seed, b, precisions.index(p)))
                        rows[p, b] = row

                if folder is not None and precisions[0] in group:
                    p = precisions[0]
                    for b in batches:
                        bar.describe(f"end to end {p} batch {b}")
                        e2e_row: dict[str, Any] = {"precision": p, "batch": b}
                        for name in models:
                            m = measure(inst[name, p].classifier, folder, bundles[name].labels,
                                        bundles[name].preprocess, b, cfg.e2e_rounds, cfg.workers, bar.advance,
                                        # each side's passes add up to a series' --min-duration-s
                                        min_pass_s=cfg.min_duration_s / max(1, cfg.e2e_rounds),
                                        seed=e2e_seed(cfg.seed, b, name))
                            raw.end_to_end[e2e_name(p, b, name)] = {"e2e_ips": m.e2e_rounds_ips, "pure_ips": m.pure_rounds_ips}
                            e2e_row[name] = m.to_dict()
                        result["end_to_end"].append(e2e_row)

                # Accuracy and agreement: the zoo routes by its own coarse model here.
                for i in inst.values():
                    i.set_forced_routing(False)
                for p in group:
                    for name in models:
                        if eval_sets:
                            bar.describe(f"accuracy {name} {p}")
                            pr = acc.predict_sets(inst[name, p].predict, eval_sets, bundles[name].preprocess, eval_batch,
                                                  warn=warn if name == "erudite" and p == precisions[0] else None,
                                                  on_batch=bar.advance)
                            accuracy[name][p] = acc.top1(pr, eval_sets)
                            preds[name][p] = acc.concat(pr)
                        elif folder is not None:
                            bar.describe(f"agreement {name} {p}")
                            out = []
                            for start in range(0, len(folder.tensors), eval_batch):
                                chunk = folder.tensors[start : start + eval_batch]
                                out.append(np.asarray(inst[name, p].predict(chunk)).argmax(axis=1))
                                bar.advance(len(chunk))
                            preds[name][p] = np.concatenate(out)

        if cfg.memory_repeats:
            result["memory"] = {}
            for p in precisions:
                bar.describe(f"memory {p} (fresh processes)")
                try:
                    result["memory"][p] = mem = measure_memory(
                        {name: Path(getattr(cfg, "bundle" if name == "erudite" else "zoo")) for name in models},
                        cfg.runner_options(p), batches=batches, repeats=cfg.memory_repeats, seed=cfg.seed,
                        on_child=bar.advance)
                    raw.memory[p] = {k: mem[k]["peak_rss_mb"] for k in (*models, "baseline")}
                except RuntimeError as e:
                    warn(f"memory {p} not measured: {e}")
                    result["memory"][p] = {"error": str(e)}

    result["latency"] = [rows[p, b] for p in precisions for b in batches]
    result["precision_ratios"] = precision_ratios(kept, precisions, batches, models, cfg.seed,
                                                  paired=cfg.interleave_precisions)
    series_loads = [r.get("load") for r in result["latency"]] + [e[m].get("load") for e in result["end_to_end"]
                                                                 for m in models if m in e]
    quiet, label = run_label(series_loads, busy_measured)
    result["load"].update(quiet=quiet, label=label, series=len(series_loads),
                          thresholds={"other_fraction": QUIET_OTHER, "steal_fraction": QUIET_STEAL})
    result["settings"]["runner_options_ignored"] = ignored_options
    result["stability"] = {"cv_threshold": cfg.cv_threshold, "unstable": unstable}
    result["scenarios"] = scenarios(result["latency"], kept, precisions, batches, models, cfg.seed)
    accuracy = {m: {p: accuracy[m][p] for p in precisions if p in accuracy[m]} for m in models}
    if eval_sets:
        result["accuracy"] = {"sets": [{"dataset": s.dataset, "images": len(s), "reader": s.reader} for s in eval_sets],
                              **accuracy}
    if any(preds[m] for m in models):
        ag: dict[str, Any] = {"on": "--data test" if eval_sets else "--source",
                              "images": int(len(next(iter(preds["erudite"].values()))))}
        for name in models:
            if "fp32" in preds[name]:
                ag[name] = {f"{p}_vs_fp32": acc.agreement(preds[name][p], preds[name]["fp32"])
                            for p in precisions if p != "fp32"}
        if zoo is not None:
            ag["erudite_vs_zoo"] = {p: acc.agreement(preds["erudite"][p], preds["zoo"][p]) for p in precisions}
        if any(ag.get(k) for k in (*models, "erudite_vs_zoo")):
            result["agreement"] = ag
    result["goals"] = [g.to_dict() for g in evaluate(result)]
    return _finite(result), raw


def series_name(model: str, precision: str, batch: int) -> str:
    """The key of a timed series in the raw samples file."""
    return f"{model}/{precision}/{batch}"


def e2e_name(precision: str, batch: int, model: str) -> str:
    return f"{precision}/{batch}/{model}"


def e2e_seed(seed: int, batch: int, model: str) -> tuple[int, ...]:
    return (seed, batch, 7, 0 if model == "erudite" else 1)


def ratio_seed(seed: int, batch: int, k: int) -> tuple[int, int, int]:
    """The seed of the erudite/zoo intervals at one batch and precision (k: its index in the run's precisions)."""
    return (seed, batch, k)


def precision_ratios(samples: dict[tuple[str, str, int], Samples], precisions: list[str], batches: list[int],
                     models: list[str], seed: int, paired: bool = True) -> list[dict[str, Any]]:
    """Each non-fp32 precision against fp32, per model and batch: the p50 latency ratio and its bootstrap
    95 % interval, paired over rounds where the precisions were timed interleaved, unpaired where they
    were timed apart (--no-interleave-precisions)."""
    out: list[dict[str, Any]] = []
    if "fp32" not in precisions:
        return out
    for p in precisions:
        if p == "fp32":
            continue
        for b in batches:
            for j, m in enumerate(models):
                q, f = samples.get((m, p, b)), samples.get((m, "fp32", b))
                if q is None or f is None or not q.latency_ms or not f.latency_ms:
                    continue
                ci = latency_ratio_ci(q.round_latency_ms, f.round_latency_ms, 50, paired=paired,
                                      seed=(seed, b, 11, j, precisions.index(p)))
                out.append({"model": m, "precision": p, "batch": b,
                            "latency_p50": percentile(q.latency_ms, 50) / percentile(f.latency_ms, 50),
                            "ci95": None if ci is None else [round(ci[0], 5), round(ci[1], 5)],
                            "units": None if ci is None else ci.units, "paired": paired})
    return out


def _with_power(step: Callable[[], Any], meter: PowerMeter, readings: list[float]) -> Callable[[], Any]:
    """The step, then one reading of the board's power (mW) while the model's work is fresh: the
    monitor averages over its own window, so a reading right after a call reflects that call."""

    def run() -> Any:
        out = step()
        mw = meter.read()
        if mw is not None:
            readings.append(mw)
        return out

    return run


def erudite_zoo_ratios(e: Samples, z: Samples, row: dict[str, Any],
                       seed: Any = 0) -> tuple[dict[str, float], dict[str, list[float] | None]]:
    """erudite / zoo p50 and p90 latency and throughput, and their paired bootstrap 95 % intervals
    over the interleaved rounds (benchmarks.stats). Both were timed in the same rounds, so the
    intervals are paired; rounds that do not pair raise stats.PairingError rather than fall back."""
    ratio = {"latency_p50": row["erudite"]["p50_ms"] / row["zoo"]["p50_ms"],
             "latency_p90": row["erudite"]["p90_ms"] / row["zoo"]["p90_ms"],
             "throughput": row["erudite"]["throughput_ips"] / row["zoo"]["throughput_ips"]}
    ci: dict[str, Any] = {
        "latency_p50": latency_ratio_ci(e.round_latency_ms, z.round_latency_ms, 50, seed=seed),
        "latency_p90": latency_ratio_ci(e.round_latency_ms, z.round_latency_ms, 90, seed=seed),
        "throughput": throughput_ratio_ci(e.round_ips, z.round_ips, seed=seed),
    }
    return ratio, {k: (None if v is None else [round(v[0], 5), round(v[1], 5)]) for k, v in ci.items()}


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: such values become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj

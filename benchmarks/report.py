"""The bench report in four forms from one result dict: rich tables on the terminal, bench.json,
bench.md (the same tables in Markdown) and bench.png (latency and throughput against batch size,
erudite vs zoo, one line per precision), with the raw samples beside them (bench.samples.json.gz,
benchmarks.raw). Every file is written atomically (erudite_edge.core.fileio). The timing tables'
titles say "quiet" or "under load (...)" from the run's measured load (benchmarks.load)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from benchmarks.goals import evaluate, goal_line, setting_note
from benchmarks.raw import RawSamples
from erudite_edge.core.fileio import atomic_path, write_json_atomic, write_text_atomic

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "bench.json", "bench.md", "bench.png"


@dataclass
class TableSpec:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _f(v: Any, fmt: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _pct(v: float | None) -> str:
    return _f(None if v is None else 100.0 * v)


def _scaled(v: float | None, scale: float, fmt: str = ".2f") -> str:
    return _f(None if v is None else v / scale, fmt)


def models_table(result: dict[str, Any]) -> TableSpec:
    bundles = result["bundles"]
    precs = result["settings"]["precisions"]
    comp = result.get("complexity", {})
    header = ["model", "backbone", "N", "input", "params (M)", "GMACs/image"] + [f"size {p} (MB)" for p in precs]
    rows = []
    for name in ("erudite", "zoo"):
        if name not in bundles:
            continue
        b, c = bundles[name], comp.get(name) or {}
        rows.append([name, b["backbone"], str(b["num_datasets"]), "x".join(str(v) for v in b["input_size"]),
                     _scaled(c.get("params"), 1e6), _scaled(c.get("macs_per_image"), 1e9, ".3f")]
                    + [_f((result.get("size_mb", {}).get(p) or {}).get(name), ".1f") for p in precs])
    if "zoo" in bundles:
        r = comp.get("ratio") or {}
        rows.append(["erudite/zoo", "", "", "", _f(r.get("params"), ".3f"), _f(r.get("macs"), ".3f")]
                    + [_f((result.get("size_mb", {}).get(p) or {}).get("ratio"), ".3f") for p in precs])
    note = ("Counted from the fp32 ONNX graphs at batch 1 with " + (comp.get("counter") or "onnx-tool") +
            "; the zoo's MACs: coarse + one fine model per image, its params and size: all its models."
            if "error" not in comp else f"complexity not counted: {comp['error']}")
    return TableSpec("Models", header, rows, note)


def load_label(result: dict[str, Any]) -> str:
    """'quiet' or 'under load (...)', as the run measured it (benchmarks.load); older results: not measured."""
    return (result.get("load") or {}).get("label") or "load not measured"


def latency_table(result: dict[str, Any]) -> TableSpec:
    header = ["precision", "batch", "model", "n", "mean ms", "p50 ms", "p90 ms", "p99 ms", "CV %", "timed s",
              "images/s", "device p50 ms", "mJ/image"]
    rows = []
    for r in result.get("latency", []):
        for name in ("erudite", "zoo"):
            if name in r:
                st = r[name]
                cv = _pct(st.get("cv")) + (" (!)" if st.get("unstable") else "")
                rows.append([r["precision"], str(r["batch"]), name, str(st["n"]), _f(st["mean_ms"]), _f(st["p50_ms"]),
                             _f(st["p90_ms"]), _f(st["p99_ms"]), cv, _f(st.get("duration_s"), ".1f"),
                             _f(st["throughput_ips"], ".1f"), _f(st.get("compute_p50_ms")),
                             _f(st.get("energy_mj_per_image"), ".1f")])
    s = result["settings"]
    note = (f"n: timed calls behind each percentile. Each model: at least {s['iters']} calls and "
            f"{s.get('min_duration_s', 0):g} s, after at least {s['warmup']} warm-up calls and {s.get('warmup_ms', 0):g} ms; "
            f"the models (and precisions) interleaved over {s['rounds']} rounds; images/s is the median over rounds; "
            "CV: stdev / mean of the call latencies; device time only where the backend separates it; "
            "mJ/image: board input power during the calls x p50 latency / batch, where a power monitor is readable (Jetson).")
    return TableSpec(f"Latency per batch and throughput, {load_label(result)}", header, rows, note)


def _ci(v: Any) -> str:
    return "-" if not v else f"[{v[0]:.3f}, {v[1]:.3f}]"


def ratio_table(result: dict[str, Any]) -> TableSpec | None:
    rows = []
    for r in result.get("latency", []):
        if "ratio" not in r:
            continue
        ci = r.get("ratio_ci95") or {}
        n = f"{r['erudite']['n']} / {r['zoo']['n']}"
        rows.append([r["precision"], str(r["batch"]), n, str(r["erudite"].get("rounds", "-")),
                     _f(r["ratio"]["latency_p50"], ".3f"), _ci(ci.get("latency_p50")),
                     _f(r["ratio"].get("latency_p90"), ".3f"), _ci(ci.get("latency_p90")),
                     _f(r["ratio"]["throughput"], ".3f"), _ci(ci.get("throughput"))])
    if not rows:
        return None
    return TableSpec(f"erudite / zoo, {load_label(result)}", ["precision", "batch", "n erudite / zoo", "rounds", "p50 latency ratio", "95 % CI",
                                       "p90 latency ratio", "95 % CI", "throughput ratio", "95 % CI"], rows,
                     "Below 1 for latency and above 1 for throughput: the erudite model is the faster. "
                     + result["settings"].get("intervals", "") + ".")


def scenario_table(result: dict[str, Any]) -> TableSpec | None:
    """MLPerf's single-stream (p90 latency at batch 1) and offline (best throughput over the batch
    sizes), and the zoo's mixed batch."""
    sc = result.get("scenarios") or {}
    names = [m for m in ("erudite", "zoo") if m in result.get("bundles", {})]
    rows = []
    for e in sc.get("single_stream", []):
        rows.append(["single-stream", e["precision"], "1", "p90 ms"]
                    + [f"{_f(e[m]['p90_ms'])} (n={e[m]['n']})" for m in names]
                    + ([_f(e.get("ratio"), ".3f"), _ci(e.get("ratio_ci95"))] if "zoo" in names else []))
    for e in sc.get("offline", []):
        batch = " / ".join(str(e[m]["best_batch"]) for m in names)
        rows.append(["offline", e["precision"], batch, "images/s, best batch"]
                    + [f"{_f(e[m]['throughput_ips'], '.1f')} (n={e[m]['n']})" for m in names]
                    + ([_f(e.get("ratio"), ".3f"), _ci(e.get("ratio_ci95"))] if "zoo" in names else []))
    for e in sc.get("mixed_batch", []):
        rows.append(["mixed batch (zoo split " + "+".join(str(sum(v)) for k, v in e["zoo_split"].items() if k != "coarse") + ")",
                     e["precision"], str(e["batch"]), "images/s"]
                    + [f"{_f(e[m]['throughput_ips'], '.1f')} (n={e[m]['n']})" for m in names]
                    + [_f(e.get("ratio"), ".3f"), _ci(e.get("ratio_ci95"))])
    if not rows:
        return None
    header = ["scenario", "precision", "batch", "metric"] + names + (["erudite/zoo", "95 % CI"] if "zoo" in names else [])
    return TableSpec("Scenarios (MLPerf Inference names)", header, rows,
                     "single-stream: one image per query, p90 latency; offline: the highest throughput over the batch "
                     "sizes measured, at each model's own best batch (erudite / zoo; an unpaired interval where they "
                     "differ); mixed batch: the zoo's batch split evenly across its data sets (fine models' images).")


def routing_table(result: dict[str, Any]) -> TableSpec | None:
    """How one timed zoo batch was split: the images each model ran on, per batch size (first precision)."""
    rows_in = [r for r in result.get("latency", []) if "zoo" in r.get("calls", {})]
    if not rows_in:
        return None
    first = rows_in[0]["precision"]
    roles = list(rows_in[0]["calls"]["zoo"])
    rows = [[str(r["batch"])] + ["+".join(str(c) for c in r["calls"]["zoo"].get(role, [])) or "0" for role in roles]
            for r in rows_in if r["precision"] == first]
    return TableSpec("Zoo: images each model ran on in one timed batch", ["batch"] + roles, rows,
                     result["settings"].get("zoo_routing", ""))


def end_to_end_table(result: dict[str, Any]) -> TableSpec | None:
    e2e = result.get("end_to_end") or []
    if not e2e:
        return None
    header = ["precision", "batch", "model", "images", "end to end images/s", "pure inference images/s", "end to end / pure"]
    rows = []
    for r in e2e:
        for name in ("erudite", "zoo"):
            if name in r:
                e = r[name]
                rows.append([r["precision"], str(r["batch"]), name, str(e["images"]), _f(e["e2e_ips"], ".1f"),
                             _f(e["pure_ips"], ".1f"), _f(e["ratio"], ".3f")])
    return TableSpec(f"End to end on {result['settings'].get('source')}", header, rows,
                     "End to end: `erudite-edge run FOLDER`'s pipeline (decode + preprocess in threads, inference, top-k); "
                     "pure: the same images preprocessed in memory. Medians over alternating rounds.")


def stage_table(result: dict[str, Any]) -> TableSpec | None:
    """Where an end-to-end image's time goes, stage by stage (p50 / p99 ms per image, as trtexec reports)."""
    e2e = result.get("end_to_end") or []
    stages = ("decode", "preprocess", "h2d", "compute", "d2h", "inference", "postprocess")
    rows = []
    for r in e2e:
        for name in ("erudite", "zoo"):
            st = (r.get(name) or {}).get("stage_ms") or {}
            if not st:
                continue
            cells = [f"{st[k]['p50']:.3f} / {st[k]['p99']:.3f}" if k in st else "-" for k in stages]
            n = max(int(v["n"]) for v in st.values())
            rows.append([r["precision"], str(r["batch"]), name, str(r[name].get("bytes_per_image", "-"))] + cells + [str(n)])
    if not rows:
        return None
    return TableSpec("End to end, stage by stage (ms per image, p50 / p99)",
                     ["precision", "batch", "model", "input bytes/image", *stages, "n (max)"], rows,
                     "decode and preprocess per file (in the pipeline's threads, overlapping inference); inference, "
                     "h2d, compute, d2h (TensorRT's CUDA events only) and postprocess per batch divided by its images; "
                     "the last round of each.")


def memory_table(result: dict[str, Any]) -> TableSpec | None:
    mem = result.get("memory") or {}
    rows = []
    for prec, m in mem.items():
        if "error" in m:
            rows.append([prec, "-", "-", "-", "-", "-", m["error"]])
            continue
        for name in ("erudite", "zoo", "baseline"):
            if name in m:
                v = m[name]
                rng = f"{min(v['peak_rss_mb']):.1f}-{max(v['peak_rss_mb']):.1f}" if v["peak_rss_mb"] else "-"
                rows.append([prec, name, f"{_f(v['median_mb'], '.1f')} (n={len(v['peak_rss_mb'])})", rng,
                             _f(v.get("net_median_mb"), ".1f"), _f(v.get("device_median_mb"), ".1f"), ""])
        if "ratio" in m:
            if m.get("ratio_ci95") or not m.get("ratio_spread"):
                rows.append([prec, "erudite/zoo", f"{_f(m['ratio'], '.3f')} {_ci(m.get('ratio_ci95'))}", "",
                             f"{_f(m.get('net_ratio'), '.3f')} {_ci(m.get('net_ratio_ci95'))}", _f(m.get("device_ratio"), ".3f"),
                             "ratio of medians, 95 % CI"])
            else:
                n = m.get("processes", m.get("repeats"))
                rows.append([prec, "erudite/zoo", f"{_f(m['ratio'], '.3f')} {_ci(m.get('ratio_spread'))}", "",
                             f"{_f(m.get('net_ratio'), '.3f')} {_ci(m.get('net_ratio_spread'))}",
                             _f(m.get("device_ratio"), ".3f"),
                             f"ratio of medians; spread of {n} (min-max over processes; no interval below 10)"])
    if not rows:
        return None
    return TableSpec("Peak memory (fresh process per measurement)",
                     ["precision", "model", "peak RSS MB, median", "min-max", "minus baseline MB", "device MB", "note"], rows,
                     "Peak resident set (VmHWM) of the process plus its largest child, each measurement a new process that loads the bundle "
                     "with load_model and runs a few batches of every size; baseline: the same imports without a model. "
                     "Device memory only where a GPU backend runs.")


def accuracy_table(result: dict[str, Any]) -> TableSpec | None:
    acc = result.get("accuracy")
    if not acc:
        return None
    datasets = [s["dataset"] for s in acc["sets"]]
    header = ["model", "precision"] + [f"{d} top-1" for d in datasets] + ["mean top-1"]
    rows = []
    for name in ("erudite", "zoo"):
        for prec, r in (acc.get(name) or {}).items():
            rows.append([name, prec] + [_pct(r["per_dataset"][d]["top1"]) for d in datasets] + [_pct(r["mean_top1"])])
    sizes = ", ".join(f"{s['dataset']} {s['images']}" for s in acc["sets"])
    return TableSpec("Top-1 accuracy (%) over the joint label space", header, rows, f"test images: {sizes}")


MLPERF_RATIO = 0.99  # MLPerf's rule for INT8: at least 99 % of the FP32 accuracy


def int8_accuracy_table(result: dict[str, Any]) -> TableSpec | None:
    """INT8 top-1 next to FP32 for every data set, their ratio (MLPerf asks >= 0.99), and the seeds that
    chose the test images and the calibration images."""
    acc = result.get("accuracy")
    if not acc:
        return None
    datasets = [s["dataset"] for s in acc["sets"]]
    rows, made = [], []
    for name in ("erudite", "zoo"):
        by_prec = acc.get(name) or {}
        if "int8" not in by_prec or "fp32" not in by_prec:
            continue
        for d in datasets + ["mean"]:
            f = by_prec["fp32"]["mean_top1"] if d == "mean" else by_prec["fp32"]["per_dataset"][d]["top1"]
            q = by_prec["int8"]["mean_top1"] if d == "mean" else by_prec["int8"]["per_dataset"][d]["top1"]
            ratio = q / f if f and q is not None else None
            verdict = "-" if ratio is None else ("yes" if ratio >= MLPERF_RATIO - 1e-12 else "no")
            rows.append([name, d, _pct(f), _pct(q), _f(None if f is None or q is None else 100 * (q - f), "+.2f"),
                         _f(ratio, ".3f"), verdict])
        facts = (result.get("bundles", {}).get(name) or {}).get("int8") or {}
        if facts:
            floats = sum((facts.get("float_nodes") or {}).values())
            made.append(f"{name} int8: {facts.get('method')} calibration, {facts.get('target')} layout, seed "
                        f"{facts.get('seed')}" + (f", {floats} nodes kept float" if floats else ""))
    if not rows:
        return None
    s = result.get("settings", {})
    limit = s.get("data_limit")
    subset = (f"a random {limit} per data set, seed {s.get('seed')}" if limit else "every test image")
    note = f"test images: {subset}; " + ("; ".join(made) if made else "int8 calibration not recorded")
    return TableSpec(f"INT8 against FP32, top-1 per data set (MLPerf: int8/fp32 >= {MLPERF_RATIO})",
                     ["model", "data set", "fp32 %", "int8 %", "points", "int8/fp32", ">= 0.99"], rows, note)


def agreement_table(result: dict[str, Any]) -> TableSpec | None:
    ag = result.get("agreement")
    if not ag:
        return None
    rows = []
    for name in ("erudite", "zoo"):
        for key, v in (ag.get(name) or {}).items():
            rows.append([name, key.replace("_vs_", " vs "), _pct(v)])
    for prec, v in (ag.get("erudite_vs_zoo") or {}).items():
        rows.append(["erudite vs zoo", prec, _pct(v)])
    if not rows:
        return None
    return TableSpec("Top-1 agreement (%)", ["model", "pair", "agreement"], rows,
                     f"on {ag.get('images', 0)} {ag.get('on', '')} images")


def tables(result: dict[str, Any]) -> list[TableSpec]:
    out = [models_table(result), latency_table(result)]
    out += [t for t in (ratio_table(result), scenario_table(result), routing_table(result), memory_table(result),
                        end_to_end_table(result), stage_table(result), accuracy_table(result), int8_accuracy_table(result),
                        agreement_table(result)) if t is not None]
    return out


def stability_lines(result: dict[str, Any]) -> list[str]:
    """One warning per series whose latency CV exceeded the threshold (empty when all were steady)."""
    st = result.get("stability") or {}
    thr = st.get("cv_threshold")
    return [f"unstable (CV > {100 * thr:g} %): {u}" for u in st.get("unstable", [])] if thr else []


def goal_lines(result: dict[str, Any]) -> list[str]:
    goals = result.get("goals")
    if goals is None:
        goals = [g.to_dict() for g in evaluate(result)]
    return [goal_line(g) for g in goals]


# ------------------------------------------------------------------------------------------------
# Renderers
# ------------------------------------------------------------------------------------------------
def stdout_console() -> Any:
    """A rich console on stdout: a terminal's own width; a pipe or a file wide enough for the tables."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def render_terminal(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    for spec in tables(result):
        t = Table(title=spec.title, title_justify="left", header_style="bold")
        for h in spec.header:
            t.add_column(h, justify="left" if h in ("model", "precision", "pair", "backbone", "data set") else "right")
        for row in spec.rows:
            t.add_row(*row, style="bold" if row[0] == "erudite/zoo" else None)
        console.print(t)
        if spec.note:
            console.print(spec.note, style="dim", markup=False, highlight=False)
    for line in stability_lines(result):
        console.print(f"warning: {line}", style="yellow", markup=False, highlight=False)
    console.print("Goals", style="bold")
    note = setting_note(result)
    if note:
        console.print(note, style="dim", markup=False)
    colours = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "magenta", "INFO": "cyan", "N/A": "yellow"}
    for line in goal_lines(result):
        console.print(line, style=colours.get(line.split(":", 1)[0], None), markup=False, highlight=False)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _env_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def to_markdown(result: dict[str, Any]) -> str:
    h = result.get("host", {})
    s = result["settings"]
    parts = [
        "# erudite-edge bench\n",
        f"- command: `{result.get('command', '')}`",
        f"- when: {result.get('created', '')}",
        f"- host: {h.get('machine', '')}, {h.get('cpu', '')}, {h.get('cores', '?')} cores; python {h.get('python', '')}; "
        f"onnxruntime {h.get('onnxruntime') or '-'} ({', '.join(h.get('providers') or []) or '-'})",
        f"- erudite bundle: `{result['bundles']['erudite']['path']}`"
        + (f"; zoo bundle: `{result['bundles']['zoo']['path']}`" if "zoo" in result["bundles"] else ""),
        f"- backend: {s['backend']}; precisions: {', '.join(s['precisions'])}; batches: {', '.join(map(str, s['batches']))}; "
        f"threads: {s.get('threads') or 'default'}; ONNX Runtime spinning: {'on' if s.get('ort_spinning') else 'off'}; "
        f"CUDA graph: {'on' if s.get('cuda_graph') else 'off'}; data transfers: {'off' if s.get('data_transfers') is False else 'on'}"
        + "".join(f"\n- warning: {m}" for m in s.get("runner_options_ignored") or []) + "\n",
    ]
    for spec in tables(result):
        parts.append(f"## {spec.title}\n")
        parts.append(markdown_table(spec.header, spec.rows))
        if spec.note:
            parts.append(f"{spec.note}\n")
    unstable = stability_lines(result)
    if unstable:
        parts.append("## Stability\n")
        parts.append("\n".join(f"- **warning**: {line}" for line in unstable)
                     + "\n\nA noisy series widens the ratio's interval; rerun on a quieter machine for a tighter one.\n")
    env = result.get("environment")
    if env:
        parts.append("## Environment\n")
        parts.append(markdown_table(["key", "value"], [[k, _env_value(v)] for k, v in env.items()]))
        parts.append("Null (-) where this machine cannot tell (no GPU, not a Jetson, no jetson-stats).\n")
    parts.append("## Goals\n")
    note = setting_note(result)
    if note:
        parts.append(f"{note}\n")
    parts.append("\n".join(f"- {line}" for line in goal_lines(result)) + "\n")
    return "\n".join(parts)


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Latency (p50) and throughput against batch size, erudite (solid) vs zoo (dashed), one colour per
    precision; with a zoo, a third panel: the erudite/zoo ratios with their 95 % intervals as error bars
    and the goals as dotted lines."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from benchmarks.goals import LATENCY_RATIO_B1, THROUGHPUT_RATIO_B8

    rows = result.get("latency", [])
    with_ratio = any("ratio" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if with_ratio else 2, figsize=(16 if with_ratio else 11, 4.2))
    ax_lat, ax_thr = axes[0], axes[1]
    colours = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    for prec in result["settings"]["precisions"]:
        for name, style, marker in (("erudite", "-", "o"), ("zoo", "--", "s")):
            pts = sorted((r["batch"], r[name]) for r in rows if r["precision"] == prec and name in r)
            if not pts:
                continue
            xs = [b for b, _ in pts]
            label = f"{name} {prec}"
            c = colours.get(prec)
            ax_lat.plot(xs, [s["p50_ms"] for _, s in pts], style, marker=marker, color=c, label=label)
            ax_thr.plot(xs, [s["throughput_ips"] for _, s in pts], style, marker=marker, color=c, label=label)
    batches = result["settings"]["batches"]
    panels = [(ax_lat, "p50 latency per batch (ms)", "Latency"), (ax_thr, "images / s", "Throughput (zoo: mixed batches)")]
    if with_ratio:
        ax_r = axes[2]
        for prec in result["settings"]["precisions"]:
            pts = sorted((r["batch"], r) for r in rows if r["precision"] == prec and "ratio" in r)
            for key, style, marker, what in (("latency_p50", "-", "o", "p50 latency"), ("throughput", "--", "s", "throughput")):
                xs = [b for b, _ in pts]
                ys = [r["ratio"][key] for _, r in pts]
                cis = [(r.get("ratio_ci95") or {}).get(key) for _, r in pts]
                # a percentile interval may sit a little off its point ratio: the bars never go negative
                err = [[max(0.0, y - c[0]) if c else 0.0 for y, c in zip(ys, cis)],
                       [max(0.0, c[1] - y) if c else 0.0 for y, c in zip(ys, cis)]]
                ax_r.errorbar(xs, ys, yerr=err, fmt=style, marker=marker, color=colours.get(prec), capsize=4,
                              label=f"{what} {prec}")
        ax_r.axhline(LATENCY_RATIO_B1, color="grey", linestyle=":", linewidth=1)
        ax_r.axhline(THROUGHPUT_RATIO_B8, color="grey", linestyle=":", linewidth=1)
        ax_r.axhline(1.0, color="black", linewidth=0.5)
        panels.append((ax_r, "erudite / zoo (95 % interval)",
                       f"erudite / zoo (dotted: goals {LATENCY_RATIO_B1:g}, {THROUGHPUT_RATIO_B8:g})"))
    for ax, ylabel, title in panels:
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    b = result["bundles"]["erudite"]
    backends = sorted({v for r in rows for v in r.get("backend", {}).values()}) or [result["settings"]["backend"]]
    providers = result.get("host", {}).get("providers") or []
    fig.suptitle(f"erudite vs zoo: {b['backbone']}, N={b['num_datasets']}, {b['input_size'][0]} px, {'/'.join(backends)}"
                 + (f" ({providers[0]})" if providers and backends == ["onnxruntime"] else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out_dir: str | Path, *, raw: RawSamples, png: bool = True,
                  warn: Any = None) -> dict[str, Path]:
    """bench.samples.json.gz (the raw samples, first), bench.json, bench.md and (matplotlib permitting)
    bench.png under out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME}
    written["samples"] = raw.write(written["json"])
    write_json_atomic(written["json"], result)
    write_text_atomic(written["markdown"], to_markdown(result))
    if png and result.get("latency"):
        try:
            written["png"] = plot(result, out / PLOT_NAME)
        except ImportError as e:
            if warn:
                warn(f"no plot: matplotlib is not installed ({e.name}); `pip install matplotlib`")
    return written

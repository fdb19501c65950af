"""`export int8 --report DIR`: what the INT8 export found, for people: the per-block sensitivity
(int8_report.json, int8_report.md, and a matplotlib bar chart int8_sensitivity.png), which blocks
mixed precision kept float and why, and (with --sweep) agreement and accuracy per calibration count.

This module owns rendering and writing those files (`render`, `write_report`) from plain results; it
measures nothing and imports nothing of export.int8 (which calls it): the measurements, including the
calibration-count sweep (export.int8.sweep_counts), are made there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from erudite_edge.core.fileio import atomic_path, write_json_atomic

SHOWN = 12  # blocks in the Markdown table and the chart


def _chart(path: Path, role: str, sens: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sens["groups"][:SHOWN]
    names = [g["group"] for g in groups][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.5))
    gain = [100 * g["gain"] for g in groups][::-1]
    loss = [100 * g["loss"] for g in groups][::-1]
    y = range(len(names))
    ax.barh([v + 0.2 for v in y], gain, height=0.4, label="kept float, rest int8: points regained")
    if any(loss):
        ax.barh([v - 0.2 for v in y], loss, height=0.4, label="quantized alone: points lost")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=7)
    metric = "top-1 agreement with FP32"
    ax.set_xlabel(f"{metric}, percentage points")
    ax.set_title(f"INT8 sensitivity per {sens['granularity']} ({role}, {sens['count']} images)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def render(result: dict[str, Any], reports: dict[str, Any], swept: Sequence[dict[str, Any]]) -> str:
    lines = ["# INT8 export report", ""]
    lines.append(f"Target {result.get('target')}, quantizer {result.get('quantizer')}, method {result.get('method')}, "
                 f"per-channel weights {result.get('per_channel')}, reduce_range {result.get('reduce_range')}, "
                 f"seed {result.get('seed')}.  ")
    lines.append(f"Calibration: {result.get('calibration')}.  ")
    lines.append(f"Held-out images: {result.get('count')} ({result.get('images')}).")
    lines.append("")
    lines.append("| role | top-1 agreement | max abs logit diff | logit scale |")
    lines.append("| --- | --- | --- | --- |")
    for role, a in result.get("roles", {}).items():
        lines.append(f"| {role} | {_pct(a['top1_agreement'])} % | {a['max_abs_diff']:.3g} | {a['logit_scale']:.3g} |")
    if "accuracy" in result:
        lines += ["", "| data set | fp32 top-1 % | int8 top-1 % | int8 / fp32 | images |", "| --- | --- | --- | --- | --- |"]
        for name, row in result["accuracy"].items():
            ratio = row["int8"] / row["fp32"] if row["fp32"] else 1.0
            lines.append(f"| {name} | {_pct(row['fp32'])} | {_pct(row['int8'])} | {ratio:.3f} | {row['count']} |")
    for role, mp in result.get("mixed_precision", {}).items():
        lines += ["", f"## Mixed precision ({role})", "", f"Goal: {mp['goal']}; decided on {mp['tuning_images']}.  "]
        lines.append(f"Fully quantized there: {mp['all_quantized']}.  ")
        if not mp["kept_float"]:
            lines.append("Nothing kept float.")
        for step in mp["kept_float"]:
            lines.append(f"- `{step['group']}` ({len(step['nodes'])} nodes) kept float: {step['why']}; "
                         f"after: agreement {_pct(step['after']['agreement'])} %")
    for role, rep in reports.items():
        sens = rep["sensitivity"]
        metric = "top-1 agreement with FP32"
        lines += ["", f"## Sensitivity per {sens['granularity']} ({role})", "",
                  f"Measured on {sens['count']} {sens['images']}; fully quantized: {sens['all_quantized']}.  ",
                  f"Score: {metric}. 'kept float' = every other {sens['granularity']} int8; "
                  f"'alone' = only this {sens['granularity']} int8.", "",
                  "| rank | block | layers | kept float: score (gain) | alone: score (loss) |", "| --- | --- | --- | --- | --- |"]
        for k, g in enumerate(sens["groups"][:SHOWN], start=1):
            left = g["left_out"]
            alone = g["alone"]
            left_s = left["agreement"]
            alone_s = alone.get("agreement") if alone else None
            lines.append(f"| {k} | `{g['group']}` | {len(g['nodes'])} | {_pct(left_s)} ({100 * g['gain']:+.1f}) | "
                         f"{_pct(alone_s)} ({-100 * g['loss']:+.1f}) |")
    if swept:
        lines += ["", "## Calibration count (fully quantized, same seed, held-out images)", "",
                  "| calibration images | top-1 agreement % | accuracy per data set % |", "| --- | --- | --- |"]
        for row in swept:
            acc = ", ".join(f"{k} {_pct(v)}" for k, v in (row.get("accuracy") or {}).items()) or "-"
            lines.append(f"| {row['images']} | {_pct(row['agreement'])} | {acc} |")
    return "\n".join(lines) + "\n"


def write_report(
    folder: Path, result: dict[str, Any], reports: dict[str, Any], swept: Sequence[dict[str, Any]]
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "int8_report.json", folder / "int8_report.md"]
    write_json_atomic(written[0], {"export": result, "sensitivity": reports, "calibration_sweep": list(swept)})
    with atomic_path(written[1]) as tmp:
        Path(tmp).write_text(render(result, reports, swept))
    for role, rep in reports.items():
        png = folder / f"int8_sensitivity.{role.replace(':', '_')}.png"
        _chart(png, role, rep["sensitivity"])
        written.append(png)
    return written

"""Every study that publishes a figure writes its raw samples and load record beside its JSON, and
`python -m benchmarks.recompute` re-derives every figure and verdict of it: one tiny real run per study family
(seconds), recomputed; then one figure changed by hand must be caught."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks.raw import RawSamples, samples_path
from benchmarks.recompute import main as recompute_main
from benchmarks.recompute import recompute
from real_processes import needs_rtsp_server

pytestmark = pytest.mark.slow  # trains the tiny model (trained), runs the studies, an RTSP server


def recomputes(path, kind, min_figures):
    """The file recomputes to its published figures, from a raw file of its kind with a load record for every part
    it timed; and a changed figure is caught. Returns the result."""
    checks = recompute(path)
    bad = [c for c in checks if not c.ok]
    assert not bad, bad[:5]
    assert len(checks) >= min_figures, [c.figure for c in checks]
    raw = RawSamples.read(path)
    assert raw.kind == kind
    result = json.loads(path.read_text())
    assert result["load"]["label"].startswith(("quiet", "under load")) and result["load"]["series"]
    assert result["load"]["series"] == raw.load_records()
    return result


def caught(path, tmp_path, change, capsys):
    """A copy of the result with `change(result)` applied by hand: recompute exits 1 and names what differs."""
    copy = tmp_path / "changed" / path.name
    copy.parent.mkdir()
    shutil.copy(samples_path(path), samples_path(copy))
    r = json.loads(path.read_text())
    change(r)
    copy.write_text(json.dumps(r))
    capsys.readouterr()
    assert recompute_main([str(copy)]) == 1
    return capsys.readouterr().out


def test_live_frames(tmp_path, capsys):
    from benchmarks.studies import live_frames

    out = tmp_path / "lf"
    assert live_frames.main(["--fps", "30", "--model-ms", "5", "--seconds", "0.4", "--rounds", "2", "--out", str(out)]) == 0
    r = recomputes(out / "live_frames.json", "live_frames", 20)
    assert len(r["load"]["series"]) == 4  # one record per run: 2 rounds x before / after
    # 2 rounds: too few for a verdict, whatever the interval says
    assert r["goal"]["status"] == "INCONCLUSIVE" and "needs at least 6" in r["goal"]["reason"]
    assert r["goal"]["rounds"] == 2 and r["goal"]["ci95"][0] <= r["after"]["p99_ms"] + 0.1
    assert "INCONCLUSIVE" in (out / "live_frames.md").read_text()

    def flip(res):
        res["goal"]["status"] = "PASS"
        res["after"]["p99_ms"] += 1

    text = caught(out / "live_frames.json", tmp_path, flip, capsys)
    assert "DIFFERS goal status" in text and "DIFFERS after p99_ms" in text


def test_api_overhead(tmp_path, capsys):
    from benchmarks.studies import api_overhead

    out = tmp_path / "api"
    assert api_overhead.main(["--rounds", "3", "--calls", "3", "--batch", "4", "--out", str(out)]) == 0
    r = recomputes(tmp_path / "api.json", "api_overhead", 20)
    assert r["overhead"]["4 images/call"]["rounds"] == 3 and r["sides"]["api, 4 images/call"]["n"] == 9

    def change(res):
        res["overhead"]["1 image/call"]["p50_ratio_ci95"][0] -= 0.01

    assert "DIFFERS overhead 1 image/call p50_ratio_ci95" in caught(tmp_path / "api.json", tmp_path, change, capsys)


def test_int8_layouts(trained, tmp_path, capsys):
    from benchmarks.studies import int8_layouts

    out = tmp_path / "layouts.json"
    assert int8_layouts.main(["--bundle", str(trained["bundle"]), "--calib", str(trained["root"] / "data"), "--calib-count", "16",
                              "--eval-count", "12", "--batch", "1,4", "--warmup", "1", "--iters", "6", "--rounds", "6",
                              "--json", str(out)]) == 0
    r = recomputes(out, "int8_layouts", 40)
    for b in ("1", "4"):
        for target in ("tensorrt", "onnxruntime"):
            row = r["latency"][b][f"int8 {target}"]
            assert row["rounds"] == 6 and row["faster_than_fp32"] in ("PASS", "FAIL", "INCONCLUSIVE")
            lo, hi = row["p50_vs_fp32_ci95"]
            # PASS only with the whole interval at or under 1, FAIL only with all of it over
            assert row["faster_than_fp32"] != "PASS" or hi <= 1
            assert row["faster_than_fp32"] != "FAIL" or lo > 1
    assert 0 <= r["top1_agreement_vs_fp32"]["int8 onnxruntime"] <= 1

    def change(res):
        res["top1_agreement_vs_fp32"]["int8 tensorrt"] = 1.5

    assert "DIFFERS top1_agreement_vs_fp32 int8 tensorrt" in caught(out, tmp_path, change, capsys)


def test_time_by_module(tmp_path, capsys):
    from benchmarks.studies import time_by_module
    from onnx_fixtures import make_erudite_bundle, make_zoo_bundle

    erudite, zoo = make_erudite_bundle(tmp_path / "erudite"), make_zoo_bundle(tmp_path / "zoo")
    out = tmp_path / "tbm.json"
    assert time_by_module.main(["--bundle", str(erudite.root), "--zoo", str(zoo.root), "--batch", "2", "--iters", "5",
                                "--out", str(out)]) == 0
    r = recomputes(out, "time_by_module", 30)
    assert r["erudite"]["n"] == 5 and set(r["zoo"]) == {f"zoo {role}" for role in zoo.roles()}
    raw = RawSamples.read(out)
    assert len(raw.values["erudite"]["wall_ms"]) == 5 and len(raw.values["erudite"]["parts_ms"]) == 5

    def change(res):
        res["erudite"]["wall_p50_ms"] *= 1.01

    assert "DIFFERS erudite wall_p50_ms" in caught(out, tmp_path, change, capsys)


@needs_rtsp_server
def test_stream_latency(tmp_path, capsys):
    from benchmarks.studies import stream_latency

    out = tmp_path / "sl"
    assert stream_latency.main(["--seconds", "2", "--fps", "10", "--size", "160x120", "--out", str(out)]) == 0
    r = recomputes(out / "stream_latency.json", "stream_latency", 8)
    raw = RawSamples.read(out / "stream_latency.json")
    assert r["n"] == len(raw.values["latency_ms"]) > 0 and r["results"] == 20
    # the `run` process and the server are this study's own work, not other work on the machine
    assert r["load"]["series"][0]["cpu_s"] > 0.5

    def change(res):
        res["latency_ms"]["p99"] += 5

    assert "DIFFERS latency_ms p99" in caught(out / "stream_latency.json", tmp_path, change, capsys)


def test_preprocess_uint8(trained, tmp_path, capsys):
    """measure_model (what the study's main runs per model) on the tiny trained model exported both ways, then the
    study's derive and write_result, recomputed."""
    import argparse

    from benchmarks.studies import preprocess_uint8 as study
    from erudite_edge.core.bundle import Bundle
    from export.onnx_export import export_checkpoint

    u8 = export_checkpoint(trained["run"], tmp_path / "uint8", data=trained["data"], parity_count=4, input_dtype="uint8")
    bundles = {"float32": Bundle.load(trained["bundle"]), "uint8": u8}
    folder = tmp_path / "images"
    folder.mkdir()
    for i, p in enumerate(sorted((trained["root"] / "data").rglob("*.png"))[:16]):
        shutil.copy(p, folder / f"{i:02d}.png")
    args = argparse.Namespace(host_rounds=2, rounds=2, min_pass_s=0.05, host_only=False)
    raw = RawSamples("preprocess_uint8")
    facts = study.measure_model("demo", bundles, folder, args, 16, raw, lambda m: None, tmp_path / "work")
    settings = {"models": {"demo": {"backbone": "tiny", **facts}}, "host_rounds": 2}
    out = tmp_path / "preprocess_uint8.json"
    study.write_result(out, {"settings": settings, **study.derive(raw, settings)}, raw)
    r = recomputes(out, "preprocess_uint8", 40)
    goals = {g["name"]: g for g in r["demo"]["goals"]}
    assert len(goals) == 3 and r["demo"]["host"]["n_batches"] == 4 and r["demo"]["end_to_end"]["uint8"]["units"] == 2
    # 2 end-to-end rounds: too few for a verdict
    assert goals["uint8 end to end / pure inference, batch 8"]["status"] == "INCONCLUSIVE"
    assert len(r["load"]["series"]) == 6  # host, model latency, 2 rounds x 2 input types end to end

    def change(res):
        res["demo"]["goals"][0]["status"] = "FAIL" if res["demo"]["goals"][0]["status"] != "FAIL" else "PASS"

    assert "DIFFERS demo goals[0] status" in caught(out, tmp_path, change, capsys)


def test_meta_features_accuracy(tmp_path, capsys):
    """Training the demo per seed takes minutes: the runs here are hand-made results of the shape run_one writes (a
    real load record taken over a real pause); write_summary writes them with their raw samples, recomputed."""
    import time

    from benchmarks.load import LoadRecord, snapshot
    from benchmarks.studies.meta_features_accuracy import write_summary

    a = snapshot()
    time.sleep(0.2)
    load = LoadRecord.between(a, snapshot()).to_dict()
    runs = [{"setting": st, "seed": seed, "top1": {"digits": d, "faces": f}, "mean_top1": (d + f) / 2,
             "images": {"digits": 50, "faces": 50}, "train_time": {"wall_s": 1.0, "cpu_s": 1.0, "resumed": False,
                                                                    "loadavg_before": [0, 0, 0], "loadavg_after": [0, 0, 0],
                                                                    "load": {**load, "wall_s": load["wall_s"] + i}}}
            for i, (seed, st, d, f) in enumerate(((0, "fresh", 0.9, 1.0), (0, "reuse", 0.8, 1.0), (1, "fresh", 0.7, 0.9), (1, "reuse", 0.8, 0.9)))]
    write_summary(tmp_path, runs, "cmd")
    r = recomputes(tmp_path / "summary.json", "meta_features_accuracy", 20)
    assert r["summary"]["paired_fresh_minus_reuse"]["seeds"] == [0, 1] and len(r["load"]["series"]) == 4

    def change(res):
        res["summary"]["paired_fresh_minus_reuse"]["ci95"][1] += 0.01

    assert "DIFFERS summary paired_fresh_minus_reuse ci95" in caught(tmp_path / "summary.json", tmp_path, change, capsys)


def test_multistream(tmp_path, capsys):
    """One process with 2 cameras against 2 processes (the tiny model, 2 short rounds): re-derived, INCONCLUSIVE
    with 2 rounds, a changed figure caught."""
    from benchmarks.studies import multistream

    out = tmp_path / "ms"
    assert multistream.main(["--models", "tiny", "--sizes", "2", "--seconds", "0.6", "--rounds", "2", "--out", str(out)]) == 0
    r = recomputes(out / "multistream.json", "multistream", 20)
    assert len(r["load"]["series"]) == 4  # one record per side and round
    row = r["models"]["tiny"]["2"]
    assert row["one"]["fps_median"] > 0 and len(row["one"]["p99_age_ms_per_stream"]) == 2
    assert row["rss_ratio"] < 1.0  # one process holds one model, two hold two
    assert "under load" in (out / "multistream.md").read_text() or "quiet" in (out / "multistream.md").read_text()

    def change(res):
        res["models"]["tiny"]["2"]["fps_ratio"] += 1

    assert "DIFFERS models tiny 2 fps_ratio" in caught(out / "multistream.json", tmp_path, change, capsys)


def test_pruning_paper_derive_recompute_and_pareto_plot(tmp_path, capsys):
    """The paper-setting pruning study's statistics on real interleaved timings of real work (numpy matrix
    products standing in for the four models, the pruned ones about a third of the work; the networks
    themselves are too slow for a test: the study's own run is in benchmarks/results/pruning_paper/):
    re-derived, a changed figure caught. And the Pareto plot of the demo study's result."""
    from benchmarks.latency import Contender, interleaved
    from benchmarks.raw import quantise, write_result
    from benchmarks.studies import pruning_paper
    from benchmarks.studies.pruning_plot import pareto_front, plot

    m = {k: np.random.default_rng(0).random((s, s)) for k, s in (("full", 160), ("pruned", 110))}

    def work(k: str, times: int):
        def step():
            for _ in range(times):
                m[k] @ m[k]

        return step

    plan = {"erudite": work("full", 1), "erudite pruned": work("pruned", 1), "zoo": work("full", 2),
            "zoo pruned": work("pruned", 2)}
    raw = RawSamples("pruning_paper")
    samples = interleaved([Contender(n, 1, s) for n, s in plan.items()], warmup=2, iters=12, rounds=6)
    for name in pruning_paper.MODELS:
        raw.series[f"N2/{name}"] = quantise(samples[name])
        raw.values[f"facts/N2/{name}"] = {"params": 100 if "pruned" not in name else 40, "macs_per_frame": 1000}
    settings = {"ns": [2], "ratio": 0.4}
    result = {"settings": settings, **pruning_paper.derive(raw, settings)}
    path = tmp_path / "pruning_paper.json"
    write_result(path, result, raw)
    r = recomputes(path, "pruning_paper", 20)["by_n"]["N2"]
    assert r["models"]["erudite pruned"]["params_vs_unpruned"] == 0.4
    assert r["models"]["zoo pruned"]["latency_goal"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert r["ratio_kept_goal"] in ("PASS", "FAIL", "INCONCLUSIVE") and len(r["ratio_kept_ci95"]) == 2
    assert "### N2" in pruning_paper.render(json.loads(path.read_text()))

    def change(res):
        res["by_n"]["N2"]["erudite_vs_zoo_pruned"] += 1

    assert "DIFFERS by_n N2 erudite_vs_zoo_pruned" in caught(path, tmp_path, change, capsys)
    # the Pareto front: no other point both faster and more accurate
    assert pareto_front({"a": (1.0, 50.0), "b": (2.0, 40.0), "c": (0.5, 45.0), "d": (3.0, 60.0)}) == ["c", "a", "d"]
    from paths import REPO

    svg = tmp_path / "pareto.svg"
    front = plot(json.loads((REPO / "benchmarks/results/pruning.json").read_text()), svg)
    assert front and svg.read_text().lstrip().startswith("<?xml") and "mean top-1" in svg.read_text()
def test_int8_quality(trained, tmp_path, capsys):
    """Two configurations on the tiny trained model: each keeps FP32 and INT8 per test image; the agreement, accuracies,
    ratios, intervals and the export's goal verdict are re-derived from them; a changed figure is caught."""
    from benchmarks.studies import int8_quality

    out = tmp_path / "int8_quality.json"
    argv = ["--bundle", str(trained["bundle"]), "--calib-count", "16", "--eval-count", "10",
            "--only", "minmax onnxruntime,minmax tensorrt", "--json", str(out)]
    for d in trained["data"]:
        argv += ["--data", d]
    assert int8_quality.main(argv) == 0
    checks = recompute(out)
    assert not [c for c in checks if not c.ok] and len(checks) >= 30
    raw = RawSamples.read(out)
    assert raw.kind == "int8_quality"
    r = json.loads(out.read_text())
    for name in ("minmax onnxruntime", "minmax tensorrt"):
        rec, fig = raw.values["records"][name], r["figures"][name]
        assert len(rec["fp32"]) == len(rec["int8"]) == len(rec["label"]) == len(rec["dataset"]) == fig["images"] > 0
        lo, hi = fig["agreement_ci95"]
        assert lo <= fig["agreement"] <= hi and set(fig["per_dataset"]) == set(rec["datasets"])
        # judged by the default goal of `export int8 --data`, as the export judged it
        assert r["settings"]["goals"][name] == [0.98, 0.99] and fig["goal"]["status"] in ("met", "undecided")

    def change(res):
        res["figures"]["minmax tensorrt"]["agreement_ci95"][0] -= 0.01
        res["figures"]["minmax onnxruntime"]["goal"]["status"] = "failed"

    text = caught(out, tmp_path, change, capsys)
    assert "DIFFERS figures minmax tensorrt agreement_ci95" in text and "DIFFERS figures minmax onnxruntime goal status" in text


def test_int8_paper_setting(trained, tmp_path, capsys):
    """The paper-setting rows on the tiny trained bundle (`--bundle`: not the ResNet-50): the per-photograph record
    re-derives the agreement, its interval and the margin table; a changed figure is caught."""
    from benchmarks.studies import int8_paper_setting

    out = tmp_path / "paper.json"
    assert int8_paper_setting.main(["--bundle", str(trained["bundle"]), "--out", str(tmp_path / "work"), "--targets",
                                    "onnxruntime", "--min-agreement", "0", "--json", str(out)]) == 0
    checks = recompute(out)
    assert not [c for c in checks if not c.ok] and len(checks) >= 15
    r, raw = json.loads(out.read_text()), RawSamples.read(out)
    assert raw.kind == "int8_paper_setting" and list(r["figures"]) == ["onnxruntime minmax"]
    rec, fig = raw.values["records"]["onnxruntime minmax"], r["figures"]["onnxruntime minmax"]
    assert fig["images"] == r["rows"][0]["count"] == len(rec["fp32"]) == len(rec["fp32_margin"]) > 200
    assert sum(b["images"] for b in fig["margins"]["bands"]) == fig["images"]

    def change(res):
        res["figures"]["onnxruntime minmax"]["margins"]["bands"][0]["images"] += 1

    assert "DIFFERS figures onnxruntime minmax margins bands[0] images" in caught(out, tmp_path, change, capsys)


def test_int8_entropy_diagnosis(trained, tmp_path, capsys):
    """The diagnosis on the tiny trained model: every quantized model's per-image record re-derives its agreement,
    accuracies, ratios and intervals, and the minmax margin table; a changed figure is caught."""
    from benchmarks.studies import int8_entropy_diagnosis

    out = tmp_path / "diag.json"
    argv = [str(trained["bundle"]), "onnxruntime", "--calib-count", "16", "--eval-count", "10", "--bins", "256",
            "--json", str(out)]
    for d in trained["data"]:
        argv += ["--data", d]
    assert int8_entropy_diagnosis.main(argv) == 0
    checks = recompute(out)
    assert not [c for c in checks if not c.ok] and len(checks) >= 60
    r, raw = json.loads(out.read_text()), RawSamples.read(out)
    assert raw.kind == "int8_entropy_diagnosis"
    assert set(int8_entropy_diagnosis.OPTS) <= set(r["figures"]) and len(r["figures"]) == len(int8_entropy_diagnosis.OPTS) + 4
    assert sum(b["images"] for b in r["minmax_margins"]["bands"]) == r["figures"]["minmax"]["images"] > 0

    def change(res):
        res["figures"]["entropy"]["agreement"] = 0.5 if res["figures"]["entropy"]["agreement"] != 0.5 else 0.4

    assert "DIFFERS figures entropy agreement" in caught(out, tmp_path, change, capsys)

"""`erudite-edge bench` and the benchmarks package: the command end to end on tiny real ONNX bundles,
the zoo's batching (real and forced routing), the MACs counter against a hand count, timing
statistics, accuracy reading, the fvcore Table 3 path and the training step timer. The goals are judged in
tests/bench/test_goals.py, the bootstrap intervals and verdicts in tests/bench/test_stats.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.complexity import bundle_complexity, onnx_complexity
from benchmarks.instrument import Instrumented, even_routes
from benchmarks.latency import Contender, interleaved, percentile, split_rounds, summarize
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.preprocess import preprocess
from erudite_edge.errors import UsageError
from erudite_edge.inference.models import load_model
from export.eval_set import read_eval_set
from onnx_fixtures import (
    COLORS,
    DATASETS,
    fixture_spec,
    make_erudite_bundle,
    make_zoo_bundle,
    normalized_color,
    solid_image,
    write_image,
)
from paths import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WARM, COOL = ("red", "yellow"), ("blue", "cyan")


def _images(colors, spec=None, noise=0):
    spec = spec or fixture_spec()
    return np.stack([preprocess(solid_image(COLORS[c], noise=noise, seed=i), spec) for i, c in enumerate(colors)])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    make_erudite_bundle(root / "erudite")
    make_zoo_bundle(root / "zoo")
    for name, color in COLORS.items():
        ds = "warm" if name in WARM else "cool"
        for k in range(3):
            img = solid_image(color, noise=12, seed=k)
            write_image(root / "photos" / f"{name}{k}.jpg", img)
            write_image(root / "data" / ds / "test" / name / f"{k}.png", img)
    return root


@pytest.fixture(scope="module")
def two_precisions(bundles, tmp_path_factory):
    """Copies of the bundles with an FP16 model of every role, made by the real FP16 export step."""
    import shutil

    from export.fp16 import make_fp16

    root = tmp_path_factory.mktemp("fp16")
    for b in ("erudite", "zoo"):
        shutil.copytree(bundles / b, root / b)
        make_fp16(Bundle.load(root / b, verify=True), images=bundles / "photos", count=8)
    return root


@pytest.mark.slow  # runs the bench or a study on real models
def test_end_to_end_tiles_a_small_folder_into_passes_long_enough(bundles):
    from benchmarks.end_to_end import load_folder, measure, pipeline_run, tiles_for
    from erudite_edge.core.bundle import Bundle
    from erudite_edge.inference.models import load_model

    assert tiles_for(100.0, 12, 2.0) == 17 and tiles_for(5.0, 12, 2.0) == 1  # ceil(2 s x 100 img/s / 12)
    assert tiles_for(0.0, 12, 2.0) == 1 and tiles_for(100.0, 12, 0.0) == 1
    b = Bundle.load(bundles / "erudite")
    clf = load_model(b, RunnerOptions("onnxruntime", "fp32"), announce=None)
    try:
        imgs = load_folder(str(bundles / "photos"), b.preprocess)
        n = len(imgs.paths)
        _, summary = pipeline_run(clf, imgs.folder, b.labels, b.preprocess, 4, n, None, tiles=3)
        assert summary["frames"] == 3 * n  # one pipeline run over the folder listed three times
        m = measure(clf, imgs, b.labels, b.preprocess, 4, rounds=1, min_pass_s=0.2)
        assert m.tiles >= 1 and m.to_dict()["tiles"] == m.tiles and m.images == n
    finally:
        clf.close()


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # the bench command end to end
def test_bench_command_writes_json_markdown_and_png(bundles, two_precisions, tmp_path):
    from erudite_edge.cli.app import main

    out = tmp_path / "report"
    rc = main([
        "bench", "--bundle", str(two_precisions / "erudite"), "--zoo", str(two_precisions / "zoo"), "--backend", "onnxruntime",
        "--precision", "fp32,fp16", "--batch", "1,4", "--warmup", "1", "--warmup-ms", "0", "--iters", "4",
        "--min-duration-s", "0.05", "--rounds", "2", "--memory-repeats", "1",
        "--source", str(bundles / "photos"), "--data", f"warm={bundles / 'data' / 'warm'}",
        "--data", f"cool={bundles / 'data' / 'cool'}", "--out", str(out),
    ])
    assert rc == 0

    result = json.loads((out / "bench.json").read_text())
    for key in ("format", "host", "settings", "bundles", "complexity", "size_mb", "latency", "end_to_end",
                "accuracy", "agreement", "goals"):
        assert key in result, key
    assert result["settings"]["precisions"] == ["fp32", "fp16"] and result["settings"]["batches"] == [1, 4]
    assert [(r["precision"], r["batch"]) for r in result["latency"]] == [("fp32", 1), ("fp32", 4), ("fp16", 1), ("fp16", 4)]
    for row in result["latency"]:
        for model in ("erudite", "zoo"):
            s = row[model]
            assert s["n"] >= 4 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["throughput_ips"] > 0
            assert s["cv"] > 0 and s["unstable"] == (s["cv"] > 0.10) and s["rounds"] == 2
        assert row["ratio"]["latency_p50"] == pytest.approx(row["erudite"]["p50_ms"] / row["zoo"]["p50_ms"])
        assert row["ratio"]["throughput"] == pytest.approx(row["erudite"]["throughput_ips"] / row["zoo"]["throughput_ips"])
        assert row["calls"]["zoo"]["coarse"] == [row["batch"]]
        assert row["calls"]["erudite"] == {"main": [row["batch"]]}
    b4 = result["latency"][1]["calls"]["zoo"]
    assert b4["fine:warm"] == [2] and b4["fine:cool"] == [2]  # the mixed batch of 4 split evenly
    assert [(e["precision"], e["batch"]) for e in result["end_to_end"]] == [("fp32", 1), ("fp32", 4)]
    assert result["end_to_end"][0]["erudite"]["images"] == 12
    # the colour models classify solid colours right: a real check of the accuracy path, zoo routing included
    for model in ("erudite", "zoo"):
        for prec in ("fp32", "fp16"):
            acc = result["accuracy"][model][prec]
            assert acc["mean_top1"] == 1.0 and acc["per_dataset"]["warm"]["images"] == 6
    assert result["agreement"]["erudite"]["fp16_vs_fp32"] == 1.0
    assert result["complexity"]["zoo"]["params"] == sum(r["params"] for r in result["complexity"]["zoo"]["roles"].values())
    assert result["size_mb"]["fp32"]["ratio"] == pytest.approx(result["size_mb"]["fp32"]["erudite"] / result["size_mb"]["fp32"]["zoo"])
    assert {g["status"] for g in result["goals"]} <= {"PASS", "FAIL", "INCONCLUSIVE", "INFO", "N/A"}
    for row in result["latency"]:  # every erudite/zoo ratio with its interval (2 rounds here: a wide one)
        for key in ("latency_p50", "latency_p90", "throughput"):
            lo, hi = row["ratio_ci95"][key]
            assert 0 < lo <= hi, (key, row)
    assert result["stability"]["cv_threshold"] == 0.10
    # the load each series ran under, measured; the raw samples beside bench.json re-derive every figure
    assert all(row["load"]["wall_s"] > 0 and row["load"]["cores"] >= 1 for row in result["latency"])
    assert result["load"]["label"].startswith(("quiet", "under load")) and result["load"]["series"] == 4 + 2 * 2  # latency rows, end-to-end rows x models
    from benchmarks.recompute import recompute

    assert all(c.ok for c in recompute(out / "bench.json"))
    assert result["settings"]["cuda_graph"] is False and result["settings"]["data_transfers"] is True
    assert result["settings"]["runner_options_ignored"] == []
    from benchmarks.environment import ENV_KEYS

    assert tuple(result["environment"]) == ENV_KEYS and result["environment"]["cpu_cores"] >= 1
    assert all(row[m]["energy_mj_per_image"] is None for row in result["latency"] for m in ("erudite", "zoo"))  # no monitor
    sc = result["scenarios"]
    assert [(e["precision"], e["batch"]) for e in sc["single_stream"]] == [("fp32", 1), ("fp16", 1)]
    assert sc["single_stream"][0]["ratio"] == result["latency"][0]["ratio"]["latency_p90"]
    assert sc["single_stream"][0]["zoo"]["n"] == result["latency"][0]["zoo"]["n"]
    for e in sc["offline"]:
        rows = {r["batch"]: r for r in result["latency"] if r["precision"] == e["precision"]}
        for m in ("erudite", "zoo"):
            assert e[m]["throughput_ips"] == max(r[m]["throughput_ips"] for r in rows.values())
            assert e[m]["throughput_ips"] == rows[e[m]["best_batch"]][m]["throughput_ips"]
        assert e["ratio_ci95"] is not None
    assert [(e["batch"], e["zoo_split"]["fine:warm"]) for e in sc["mixed_batch"]] == [(4, [2]), (4, [2])]
    for prec in ("fp32", "fp16"):
        mem = result["memory"][prec]
        assert mem["repeats"] == 1 and mem["erudite"]["median_mb"] > mem["baseline"]["median_mb"] > 0
        assert mem["ratio"] == pytest.approx(mem["erudite"]["median_mb"] / mem["zoo"]["median_mb"])
        assert mem["ratio_ci95"] is None and mem["erudite"]["device_mb"] is None  # one repetition; no GPU here

    md = (out / "bench.md").read_text()
    assert "## Latency per batch and throughput" in md and "## Goals" in md and "## Scenarios (MLPerf Inference names)" in md
    assert "| single-stream | fp32 | 1 | p90 ms |" in md and "## Peak memory (fresh process per measurement)" in md
    assert "| fp32 | 1 | erudite |" in md and "| fp16 | 4 | zoo |" in md
    assert "| erudite | fp32 | 100.00 | 100.00 | 100.00 |" in md
    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000


def test_precisions_one_at_a_time_give_the_same_report_layout(two_precisions):
    from benchmarks.bench import BenchConfig, run_bench

    cfg = BenchConfig(bundle=two_precisions / "erudite", zoo=two_precisions / "zoo", backend="onnxruntime",
                      precisions=None, batches=[2], warmup=0, warmup_ms=0, iters=2, min_duration_s=0, rounds=1, cv_threshold=1e-9, memory_repeats=0,
                      interleave_precisions=False)
    r, _ = run_bench(cfg, progress=False)
    assert r["settings"]["precisions"] == ["fp32", "fp16"] and r["settings"]["interleave_precisions"] is False
    assert [(x["precision"], x["batch"]) for x in r["latency"]] == [("fp32", 2), ("fp16", 2)]
    assert all(x["calls"]["zoo"] == {"coarse": [2], "fine:warm": [1], "fine:cool": [1]} for x in r["latency"])
    # a threshold no series meets: every series flagged, in JSON and as a Markdown warning
    assert all(x[m]["unstable"] for x in r["latency"] for m in ("erudite", "zoo"))
    assert len(r["stability"]["unstable"]) == 4
    from benchmarks.report import to_markdown

    md = to_markdown(r)
    assert "## Stability" in md and "unstable (CV > 1e-07 %): zoo fp16 batch 2" in md


@pytest.mark.slow  # runs the bench or a study on real models
def test_bench_refuses_a_missing_precision_and_swapped_bundles(bundles, tmp_path, capsys):
    from erudite_edge.cli.app import main

    rc = main(["bench", "--bundle", str(bundles / "erudite"), "--zoo", str(bundles / "zoo"), "--precision", "int8",
               "--out", str(tmp_path)])
    assert rc == 2 and "no int8 model" in capsys.readouterr().err
    rc = main(["bench", "--bundle", str(bundles / "zoo"), "--out", str(tmp_path)])
    assert rc == 2 and "pass it with --zoo" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_tensorrt_only_options_reach_runners_that_take_them_and_warn_elsewhere(bundles):
    """--cuda-graph / --no-data-transfers travel as runner options: the registry gives them to the backends
    whose entry takes them, ONNX Runtime's runners ignore them with one warning each."""
    import warnings

    from benchmarks.bench import BenchConfig
    from erudite_edge.backends.registry import REGISTRY

    assert not {"cuda_graph", "data_transfers"} & REGISTRY["onnxruntime"].takes
    cfg = BenchConfig(bundle=bundles / "erudite", cuda_graph=True, data_transfers=False)
    assert cfg.runner_options().set_options() == {"cuda_graph": True, "data_transfers": False}
    assert BenchConfig(bundle=bundles / "erudite").runner_options().set_options() == {}
    with pytest.warns(RuntimeWarning, match="onnxruntime runner ignores cuda_graph=True, data_transfers=False"):
        zoo = load_model(Bundle.load(bundles / "zoo"), cfg.runner_options().replace(backend="onnxruntime", precision="fp32"), announce=None)
    assert zoo.predict(_images(["red"])).shape == (1, 4)
    zoo.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no option, no warning
        load_model(Bundle.load(bundles / "erudite"), RunnerOptions("onnxruntime", "fp32"), announce=None).close()


def test_bench_modules_import_without_torch():
    code = ("import sys, benchmarks.bench, benchmarks.report, benchmarks.complexity, benchmarks.accuracy, "
            "erudite_edge.cli.commands.bench; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------------------------------------
# The zoo's batching
# ------------------------------------------------------------------------------------------------
def test_zoo_mixed_batch_real_routing_groups_images(bundles):
    zoo = Instrumented(load_model(Bundle.load(bundles / "zoo"), RunnerOptions("onnxruntime", "fp32"), announce=None), forced_routing=False)
    order = ["red", "blue", "yellow", "cyan", "cyan", "red"]
    probs = zoo.predict(_images(order))
    assert zoo.calls_seen() == {"coarse": [6], "fine:warm": [3], "fine:cool": [3]}
    assert zoo.classifier.last_groups == {"warm": [0, 2, 5], "cool": [1, 3, 4]}
    names = [n for cls in DATASETS.values() for n in cls]
    assert [names[i] for i in probs.argmax(1)] == order
    zoo.close()


def test_zoo_forced_routing_splits_every_batch_evenly(tmp_path):
    datasets = {"a": ["red"], "b": ["yellow"], "c": ["blue", "cyan"]}
    zoo = Instrumented(load_model(make_zoo_bundle(tmp_path / "zoo3", datasets), RunnerOptions("onnxruntime", "fp32"), announce=None))
    x = _images(["red"] * 8)  # one colour: the coarse model alone would send all of it to one data set
    zoo.predict(x)
    assert zoo.calls_seen() == {"coarse": [8], "fine:a": [3], "fine:b": [3], "fine:c": [2]}
    assert zoo.classifier.last_groups["c"] == [2, 5]
    zoo.reset()
    for _ in range(3):  # batch 1: coarse + ONE fine model per call, each fine model in turn
        zoo.predict(x[:1])
    assert zoo.calls_seen() == {"coarse": [1, 1, 1], "fine:a": [1], "fine:b": [1], "fine:c": [1]}
    zoo.set_forced_routing(False)
    zoo.reset()
    zoo.predict(x)
    assert zoo.images_seen() == {"coarse": 8, "fine:a": 8, "fine:b": 0, "fine:c": 0}
    zoo.close()
    assert even_routes(5, 2, start=1).tolist() == [1, 0, 1, 0, 1]


# ------------------------------------------------------------------------------------------------
# Complexity
# ------------------------------------------------------------------------------------------------
def _conv_gemm_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = {
        "W1": rng.standard_normal((4, 3, 3, 3)), "B1": np.zeros(4),
        "W2": rng.standard_normal((4, 2, 3, 3)), "B2": np.zeros(4),  # groups=2: 2 input channels per group
        "G": rng.standard_normal((5, 64)), "g": np.zeros(5),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["c1", "W2", "B2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=2),
            helper.make_node("Flatten", ["c2"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "G", "g"], ["y"], transB=1),
        ],
        "conv_gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_macs_counter_agrees_with_a_hand_count(tmp_path):
    c = onnx_complexity(_conv_gemm_model(tmp_path / "m.onnx"), {"x": (1, 3, 8, 8)})
    # conv1: 4 out channels x 8x8 outputs x (3 in x 3x3) multiply-adds, plus one bias add per output
    conv1 = 4 * 8 * 8 * (3 * 3 * 3) + 4 * 8 * 8
    # conv2 (stride 2, 2 groups): 4 x 4x4 outputs x (4/2 in x 3x3), plus bias
    conv2 = 4 * 4 * 4 * (2 * 3 * 3) + 4 * 4 * 4
    # gemm: 64 inputs x 5 outputs, plus bias
    gemm = 64 * 5 + 5
    assert (conv1, conv2, gemm) == (7168, 1216, 325)
    assert c.macs_by_op == {"Conv": conv1 + conv2, "Gemm": gemm}
    assert c.macs == c.compute_macs == conv1 + conv2 + gemm
    assert c.params == (4 * 3 * 9 + 4) + (4 * 2 * 9 + 4) + (5 * 64 + 5)
    assert c.counter.startswith("onnx-tool")


def test_zoo_complexity_is_coarse_plus_one_fine_model(bundles):
    z = bundle_complexity(Bundle.load(bundles / "zoo"))
    fine = [g for r, g in z.roles.items() if r.startswith("fine:")]
    assert len(fine) == 2
    assert z.macs_per_image == z.roles["coarse"].macs + round(sum(g.macs for g in fine) / 2)
    assert z.params == z.roles["coarse"].params + sum(g.params for g in fine)
    # each fixture model is GlobalAveragePool + Gemm(3 -> K): the Gemm is 3K + K
    assert z.roles["coarse"].macs_by_op["Gemm"] == 3 * 2 + 2


@pytest.mark.slow  # runs the bench or a study on real models
def test_table3_with_fvcore_on_a_tiny_backbone():
    pytest.importorskip("fvcore")
    import torch

    from benchmarks.complexity import table3_column, torch_macs
    from train.model import build_model
    from train.model_spec import ModelConfig

    kw = dict(embed_dim=16, hidden=16)
    col = table3_column([3, 4], backbone="tiny", size=32, **kw)
    zoo = build_model(ModelConfig(variant="single", backbone="tiny", class_counts=[3, 4], **kw)).eval()
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        fine = [torch_macs(f, (x,)) for f in zoo.fine]
        assert col["Single"].macs == torch_macs(zoo.coarse, (x,)) + round(sum(fine) / 2)
    assert col["Single"].params == sum(p.numel() for p in zoo.parameters())
    ours = build_model(ModelConfig(variant="ours", backbone="tiny", class_counts=[3, 4], **kw))
    aux = sum(p.numel() for p in ours.aux_classifiers.parameters())
    assert col["Ours_train"].params - col["Ours_test"].params == aux > 0
    # the tiny backbone's four 3x3 stride-2 convs at 32 px, counted by hand, are inside every model
    backbone_convs = 16 * 16 * 16 * 27 + 32 * 8 * 8 * 144 + 64 * 4 * 4 * 288 + 64 * 2 * 2 * 576
    assert col["Baseline"].macs > backbone_convs
    assert col["Ours_test"].macs > col["Baseline"].macs
    assert col["Single"].macs > 2 * backbone_convs
    pmg = build_model(ModelConfig(variant="ours-pmg", backbone="tiny", class_counts=[3, 4], **kw)).inference_graph()
    assert col["Ours_PMG_test"].params == sum(p.numel() for p in pmg.parameters()) > col["Ours_test"].params


# ------------------------------------------------------------------------------------------------
# Timing statistics, goals, accuracy reading
# ------------------------------------------------------------------------------------------------
def test_interleaved_rounds_rotate_order_and_count_calls():
    log: list[str] = []
    ticks = iter(range(10_000))
    clock = lambda: float(next(ticks)) / 1000  # noqa: E731  (a deterministic clock: 1 ms per reading)
    contenders = [Contender(n, 2, (lambda n=n: log.append(n))) for n in ("A", "B")]
    samples = interleaved(contenders, warmup=1, iters=5, rounds=3, clock=clock)
    assert split_rounds(5, 3) == [2, 2, 1]
    assert log == ["A", "B"] + ["A", "A", "B", "B"] + ["B", "B", "A", "A"] + ["A", "B"]
    assert len(samples["A"].latency_ms) == 5 and len(samples["A"].round_ips) == 3
    assert all(v == pytest.approx(1.0) for v in samples["A"].latency_ms)


class FakeClock:
    """Seconds that pass only when a fake runner 'works' (the injected clock of the timing loop)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def runner(self, seconds: float):
        def step() -> None:
            self.t += seconds
        return step


def test_time_based_loop_respects_warmup_and_duration_on_a_slow_runner():
    clock = FakeClock()
    # durations exact in binary (1/16 s, 1/1024 s), so the fake clock adds up without rounding
    slow, fast = Contender("slow", 1, clock.runner(1 / 16)), Contender("fast", 1, clock.runner(1 / 1024))
    blocks: list[int] = []
    s = interleaved([slow, fast], warmup=1, iters=3, rounds=2, warmup_ms=250, min_duration_s=1.0,
                    clock=clock, on_block=lambda: blocks.append(1))
    assert s["slow"].warmup_calls == 4 and s["fast"].warmup_calls == 256  # 250 ms of warm-up each
    # each round gives every contender half of the 1 s: 8 calls of 62.5 ms, 512 calls of ~1 ms
    assert [len(r) for r in s["slow"].round_latency_ms] == [8, 8]
    assert [len(r) for r in s["fast"].round_latency_ms] == [512, 512]
    for name in ("slow", "fast"):
        assert s[name].duration_s == pytest.approx(1.0)
        assert len(s[name].latency_ms) == sum(len(r) for r in s[name].round_latency_ms)
    assert summarize(s["slow"], 1).n == 16 and summarize(s["slow"], 1).throughput_ips == pytest.approx(16.0)
    assert len(blocks) == 2 * (1 + 2)
    # the minimum count wins when the runner is fast: 30 calls although 10 ms (10 calls) would do
    s = interleaved([fast], warmup=0, iters=30, rounds=3, min_duration_s=0.01, clock=clock)
    assert len(s["fast"].latency_ms) == 30 and s["fast"].warmup_calls == 0


def test_summary_statistics_match_numpy():
    from benchmarks.latency import Samples

    lat = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0, 4.0]
    for q in (50, 90, 99):
        assert percentile(lat, q) == pytest.approx(np.percentile(lat, q))
    s = summarize(Samples(latency_ms=lat, round_ips=[10.0, 30.0, 20.0]), batch=4)
    assert (s.n, s.p50_ms, s.min_ms, s.throughput_ips, s.compute_p50_ms) == (7, 4.0, 1.0, 20.0, None)
    assert s.mean_ms == pytest.approx(np.mean(lat))


def test_erudite_zoo_ratios_are_erudite_over_zoo_with_paired_intervals():
    """The bench's ratio row on fixed rounds: erudite over zoo (never inverted) for p50/p90 latency and
    throughput, each with the paired bootstrap interval of benchmarks.stats over the same rounds, rounded to 5 places."""
    from benchmarks.bench import erudite_zoo_ratios
    from benchmarks.latency import Samples
    from benchmarks.stats import latency_ratio_ci, throughput_ratio_ci

    e_rounds, z_rounds = [[5.0, 6.0, 5.5], [4.5, 5.0], [6.0, 6.5, 5.0]], [[10.0, 11.0], [9.0, 10.5, 12.0], [11.5, 10.0]]
    e = Samples(round_ips=[200.0, 190.0, 210.0], round_latency_ms=e_rounds)
    z = Samples(round_ips=[100.0, 90.0, 105.0], round_latency_ms=z_rounds)
    row = {"erudite": {"p50_ms": 5.0, "p90_ms": 6.0, "throughput_ips": 200.0},
           "zoo": {"p50_ms": 10.0, "p90_ms": 12.0, "throughput_ips": 100.0}}
    ratio, ci = erudite_zoo_ratios(e, z, row, seed=3)
    assert ratio == {"latency_p50": 0.5, "latency_p90": 0.5, "throughput": 2.0}
    want = {"latency_p50": latency_ratio_ci(e_rounds, z_rounds, 50, seed=3),
            "latency_p90": latency_ratio_ci(e_rounds, z_rounds, 90, seed=3),
            "throughput": throughput_ratio_ci(e.round_ips, z.round_ips, seed=3)}
    assert ci == {k: [round(v[0], 5), round(v[1], 5)] for k, v in want.items()}
    assert 1.5 < ci["throughput"][0] <= 2.0 <= ci["throughput"][1] < 2.5 and ci["latency_p50"][1] < 1.0
    # rounds that do not pair (a contender lost a round): refused loudly, never a silent unpaired fallback
    from benchmarks.stats import PairingError

    with pytest.raises(PairingError, match="paired rounds: 3 against 2"):
        erudite_zoo_ratios(e, Samples(round_ips=[100.0, 90.0], round_latency_ms=z_rounds[:2]), row)
    with pytest.raises(PairingError, match="round 1 is empty"):
        erudite_zoo_ratios(e, Samples(round_ips=[100.0, 90.0, 95.0], round_latency_ms=[z_rounds[0], [], z_rounds[1]]), row)


@pytest.mark.slow  # fresh child processes
def test_memory_in_fresh_processes_sees_the_weights(bundles, tmp_path):
    """Peak RSS of fresh processes: a bundle whose model carries 64 MB more weights peaks at least
    64 MB higher; below 10 repetitions the ratio carries the spread of the repetitions, no interval. Measured from a parent that holds
    a 300 MB array: a child's figure must not include the parent's pages (ru_maxrss would)."""
    import shutil

    import onnx
    from onnx import helper, numpy_helper

    from benchmarks.memory import measure_memory

    heavy = tmp_path / "heavy"
    shutil.copytree(bundles / "erudite", heavy)
    path = next(heavy.glob("model*.onnx"))
    m = onnx.load(str(path))
    ballast = np.random.default_rng(0).standard_normal(16 << 20).astype(np.float32)  # 64 MB, random: not compressible away
    m.graph.initializer.append(numpy_helper.from_array(ballast, "ballast"))
    out = m.graph.output[0].name
    m.graph.node[-1].output[0] = "logits_raw"  # logits = logits_raw + 0 * sum(ballast): the ballast is a real input
    m.graph.node.extend([helper.make_node("ReduceSum", ["ballast"], ["ballast_sum"], keepdims=0),
                         helper.make_node("Mul", ["ballast_sum", "zero"], ["nothing"]),
                         helper.make_node("Add", ["logits_raw", "nothing"], [out])])
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    onnx.save(m, str(path))
    meta = json.loads((heavy / "bundle.json").read_text())
    from erudite_edge.core.fileio import sha256_file

    for entry in meta["models"]:
        if entry["file"] == path.name:
            entry["sha256"] = sha256_file(path)
    (heavy / "bundle.json").write_text(json.dumps(meta))
    parent_ballast = np.ones(300 << 18, np.float32)  # 300 MB, touched
    r = measure_memory({"erudite": heavy, "zoo": bundles / "erudite"}, RunnerOptions("onnxruntime", "fp32", threads=1),
                       batches=[1], repeats=2, calls=1)
    assert len(r["erudite"]["peak_rss_mb"]) == len(r["baseline"]["peak_rss_mb"]) == 2
    extra = r["erudite"]["median_mb"] - r["zoo"]["median_mb"]
    assert 60 < extra < 250, r  # the 64 MB initializer (ONNX Runtime may hold a copy while it loads)
    assert r["baseline"]["median_mb"] < 280 and parent_ballast.sum() > 0
    # two processes each: no bootstrap interval (it needs 10), the spread of the per-repetition ratios instead
    assert r["ratio_ci95"] is None and r["processes"] == 2
    lo, hi = r["ratio_spread"]
    assert 1 < lo <= r["ratio"] <= hi and r["net_ratio"] > r["ratio"]


def test_offline_scenario_takes_each_models_best_batch():
    from benchmarks.latency import Samples
    from benchmarks.scenarios import scenarios

    def row(b, e_ips, z_ips):
        st = lambda ips: {"p90_ms": 1.0, "n": 4, "throughput_ips": ips, "rounds": 3}  # noqa: E731
        return {"precision": "fp32", "batch": b, "erudite": st(e_ips), "zoo": st(z_ips),
                "ratio": {"latency_p90": 1.0, "throughput": e_ips / z_ips},
                "ratio_ci95": {"latency_p90": [0.9, 1.1], "throughput": [0.0, 9.0]}, "calls": {"zoo": {"coarse": [b]}}}

    rows = [row(1, 10.0, 8.0), row(8, 40.0, 12.0), row(32, 30.0, 16.0)]
    kept = {(m, "fp32", b): Samples(round_ips=[r[m]["throughput_ips"] * f for f in (0.9, 1.0, 1.1)])
            for r in rows for m in ("erudite", "zoo") for b in [r["batch"]]}
    sc = scenarios(rows, kept, ["fp32"], [1, 8, 32], ["erudite", "zoo"])
    off = sc["offline"][0]
    assert (off["erudite"]["best_batch"], off["zoo"]["best_batch"]) == (8, 32)
    assert off["ratio"] == pytest.approx(40.0 / 16.0) and off["paired"] is False
    lo, hi = off["ratio_ci95"]  # unpaired: resampled from each side's own rounds (not the row's paired interval)
    assert 40 * 0.9 / (16 * 1.1) - 1e-4 <= lo <= 2.5 <= hi <= 40 * 1.1 / (16 * 0.9) + 1e-4  # (rounded to 5 places)
    assert [e["batch"] for e in sc["mixed_batch"]] == [8, 32] and sc["single_stream"][0]["ratio"] == 1.0


def test_environment_record_has_every_key():
    from benchmarks.environment import ENV_KEYS, environment

    env = environment()
    assert tuple(env) == ENV_KEYS  # every key, in order: None where unknown, never missing
    assert env["cpu_cores"] == __import__("os").cpu_count() and env["python"]
    import onnxruntime

    assert env["onnxruntime"] == onnxruntime.__version__ and "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert env["jetson_clocks"] in (None, True, False)
    assert env["power_mw"] is None or isinstance(env["power_mw"], float)


def test_jetson_facts_parsers_on_jetson_files(tmp_path):
    """The Jetson readers on copies of what a Jetson holds (no Jetson here: the files are written by
    the test, the parsing is the real code's)."""
    from benchmarks.environment import PowerMeter, l4t_release, nvpmodel_mode

    rel = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"
    assert l4t_release(lambda p: rel if p == "/etc/nv_tegra_release" else None) == "R35.4.1"
    assert l4t_release(lambda p: None) is None
    assert nvpmodel_mode(lambda cmd: "NV Power Mode: MAXN\n0") == "MAXN (0)"
    assert nvpmodel_mode(lambda cmd: None) is None
    # Orin: hwmon of the INA3221 (mV, mA); VDD_IN is the module's input rail
    hw = tmp_path / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    hw.mkdir(parents=True)
    for n, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1500), ("VDD_CPU_GPU_CV", 5000, 400)], start=1):
        (hw / f"in{n}_label").write_text(label + "\n")
        (hw / f"in{n}_input").write_text(f"{mv}\n")
        (hw / f"curr{n}_input").write_text(f"{ma}\n")
    m = PowerMeter(root=str(tmp_path))
    assert m.source == "VDD_IN" and m.available and m.read() == pytest.approx(7500.0)
    # Nano / Xavier: iio in_power (mW)
    iio = tmp_path / "old" / "ina3221x" / "6-0040" / "iio:device0"
    iio.mkdir(parents=True)
    (iio / "rail_name_0").write_text("POM_5V_IN\n")
    (iio / "in_power0_input").write_text("3120\n")
    old = PowerMeter(root=str(tmp_path / "old"))
    assert old.source == "POM_5V_IN" and old.read() == 3120.0
    assert not PowerMeter(root=str(tmp_path / "nothing")).available


def test_eval_set_reads_class_folders_and_maps_classes_by_name(bundles):
    labels = Bundle.load(bundles / "erudite").labels
    s = read_eval_set(f"cool={bundles / 'data' / 'cool'}", labels)
    assert len(s) == 6 and s.dataset_index == 1
    # the cool data set's classes are blue, cyan: joint ids 2, 3 in the bundle
    assert sorted(set(s.joint.tolist())) == [2, 3]
    assert all(("blue" in p) == (j == 2) for p, j in zip(s.paths, s.joint))
    assert len(read_eval_set(f"warm={bundles / 'data' / 'warm'}", labels, limit=4)) == 4
    with pytest.raises(UsageError, match="no data set 'hot'"):
        read_eval_set(f"hot={bundles / 'data' / 'warm'}", labels)
    with pytest.raises(UsageError, match="not in the bundle's label table"):
        read_eval_set(f"warm={bundles / 'data' / 'cool'}", labels)


def test_normalized_fixture_colours_are_distinct():
    # guards the fixture the accuracy check relies on: every class colour is its own nearest prototype
    spec = fixture_spec()
    protos = np.stack([normalized_color(COLORS[c], spec) for c in COLORS])
    d = ((protos[:, None] - protos[None]) ** 2).sum(-1)
    assert (d + np.eye(len(protos)) * 1e9).min() > 0.5


# ------------------------------------------------------------------------------------------------
# Training step time
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # runs the bench or a study on real models
def test_step_time_measures_every_variant_side_by_side():
    pytest.importorskip("torch")
    from benchmarks.studies.step_time import StepTimeConfig, measure

    cfg = StepTimeConfig(backbone="tiny", input_size=32, batch_per_dataset=2, class_counts=[3, 4], warmup=0,
                         iters=2, rounds=2, embed_dim=16, hidden=16)
    r, raw = measure(cfg)
    assert set(r["variants"]) == {"ours", "ours-reuse", "baseline+", "baseline"} and set(raw.series) == set(r["variants"])
    assert all(v["steps"] == 2 and v["median_ms"] > 0 for v in r["variants"].values())
    fresh_vs_reuse = r["ratios"]["ours/ours-reuse"]
    assert fresh_vs_reuse["median_ratio"] > 0 and len(fresh_vs_reuse["ci95"]) == 2
    assert r["ratio_ours_over_baseline_plus"] == pytest.approx(
        r["variants"]["ours"]["median_ms"] / r["variants"]["baseline+"]["median_ms"])
    # two rounds cannot give a 95 % interval: no verdict, whatever the point ratio
    assert r["goal"]["status"] == "INCONCLUSIVE" and "2 units" in r["goal"]["reason"] and r["settings"]["device"] == "cpu"
    assert r["load"]["label"].startswith(("quiet", "under load"))


def test_step_time_goal_is_judged_on_its_interval_not_its_point():
    """The issue's case: a median ratio under 2 whose interval straddles 2 was called PASS; now INCONCLUSIVE.
    Ten rounds in which `ours` takes 1.5-2.6 x a `baseline+` step (drifting), median ratio about 1.9."""
    from benchmarks.latency import Samples
    from benchmarks.studies.step_time import derive

    factors = [1.5, 2.6, 1.6, 2.4, 1.7, 2.2, 1.8, 2.1, 1.85, 1.95]
    base = [[100.0, 101.0] for _ in factors]
    ours = [[f * 100.0, f * 101.0] for f in factors]
    mk = lambda rounds: Samples(latency_ms=[v for r in rounds for v in r], round_latency_ms=rounds,  # noqa: E731
                                round_ips=[2e3 / sum(r) for r in rounds])
    g = derive({"ours": mk(ours), "baseline+": mk(base)}, {})["goal"]
    assert g["value"] < 2.0 and g["ci95"][0] < 2.0 < g["ci95"][1] and g["status"] == "INCONCLUSIVE"
    g = derive({"ours": mk([[1.2 * v for v in r] for r in base]), "baseline+": mk(base)}, {})["goal"]
    assert g["status"] == "PASS" and g["ci95"][1] <= 2.0


def test_int8_table_puts_int8_next_to_fp32_with_ratio_and_seeds():
    """The table bench and the demo print: INT8 top-1 per data set next to FP32, the ratio against
    MLPerf's 0.99, and the seeds of the test subset and of the INT8 calibration."""
    from benchmarks.report import int8_accuracy_table

    def top1(a: float, b: float) -> dict:
        return {"per_dataset": {"warm": {"top1": a, "images": 10}, "cool": {"top1": b, "images": 20}},
                "mean_top1": (a + b) / 2}

    result = {"settings": {"seed": 3, "data_limit": 20},
              "bundles": {"erudite": {"int8": {"method": "percentile", "target": "tensorrt", "seed": 7,
                                               "float_nodes": {"main": 2}}}},
              "accuracy": {"sets": [{"dataset": "warm", "images": 10}, {"dataset": "cool", "images": 20}],
                           "erudite": {"fp32": top1(0.9, 0.8), "int8": top1(0.9, 0.76)},
                           "zoo": {"fp32": top1(1.0, 1.0)}}}
    spec = int8_accuracy_table(result)
    assert spec is not None and [r[:2] for r in spec.rows] == [["erudite", "warm"], ["erudite", "cool"], ["erudite", "mean"]]
    warm, cool, mean = spec.rows
    assert warm[2:] == ["90.00", "90.00", "+0.00", "1.000", "yes"]
    assert cool[2:] == ["80.00", "76.00", "-4.00", "0.950", "no"]
    assert mean[5] == f"{0.83 / 0.85:.3f}"
    assert "seed 3" in spec.note and "seed 7" in spec.note and "percentile" in spec.note and "2 nodes kept float" in spec.note
    result["accuracy"]["erudite"].pop("int8")
    assert int8_accuracy_table(result) is None  # no int8 measured: no table


def test_environment_takes_cuda_versions_from_the_device_layer(monkeypatch):
    """The CUDA runtime's version and file, the driver's CUDA version and the GPU come from the device-memory
    layer (issue 24 item 9: the record used to import a removed module and swallow the error)."""
    from benchmarks.environment import environment
    from erudite_edge.backends.tensorrt import device_memory
    from erudite_edge.backends.tensorrt.sidecar import DeviceInfo

    class Device:
        def device_info(self):
            return DeviceInfo("Orin (test double)", (8, 7))

    monkeypatch.setattr(device_memory, "runtime_facts", lambda: {
        "cuda_runtime": "12.6", "cuda_driver": "12.8", "cuda_runtime_library": "/usr/local/cuda-12.6/lib64/libcudart.so.12",
        "cuda_runtime_origin": "found by Polygraphy's search"})
    monkeypatch.setattr(device_memory, "open_device", lambda: Device())
    env = environment()
    assert (env["cuda_runtime"], env["cuda_driver"], env["gpu_name"]) == ("12.6", "12.8", "Orin (test double)")
    assert env["cuda_runtime_library"] == "/usr/local/cuda-12.6/lib64/libcudart.so.12"


def test_environment_reads_the_real_cuda_runtime_without_a_gpu():
    """No GPU here, but a CUDA runtime library and Polygraphy are: its version needs no device."""
    pytest.importorskip("polygraphy")
    from benchmarks.environment import environment
    from erudite_edge.backends.tensorrt import device_memory

    facts = device_memory.runtime_facts()
    if not facts:
        pytest.skip("no CUDA runtime library can be loaded here")
    env = environment()
    assert env["cuda_runtime_library"] == facts["cuda_runtime_library"] and "libcudart.so" in env["cuda_runtime_library"]
    assert env["cuda_runtime"] == facts["cuda_runtime"] and env["cuda_runtime"].count(".") == 1


def test_bench_device_memory_through_the_device_layer(monkeypatch):
    """benchmarks.memory reads used device memory through the device layer (it imported a removed module)."""
    from benchmarks.memory import device_used_mb
    from erudite_edge.backends.tensorrt import device_memory

    class Device:
        def memory_info(self):
            return 3_000_000_000, 8_000_000_000

    monkeypatch.setattr(device_memory, "open_device", lambda: Device())
    assert device_used_mb() == 5000.0

    def no_gpu():
        raise device_memory.CudaError("no CUDA GPU is visible")

    monkeypatch.setattr(device_memory, "open_device", no_gpu)
    assert device_used_mb() is None

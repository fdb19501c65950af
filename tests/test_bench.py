"""`erudite-edge bench` and the benchmarks package: the command end to end on tiny real ONNX bundles,
the zoo's batching (real and forced routing), the MACs counter against a hand count, timing
statistics, goals, accuracy reading, the fvcore Table 3 path and the training step timer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_fixtures import COLORS, DATASETS, fixture_spec, make_erudite_bundle, make_zoo_bundle, normalized_color, solid_image, write_image  # noqa: E402

from benchmarks.accuracy import read_eval_set  # noqa: E402
from benchmarks.complexity import bundle_complexity, onnx_complexity  # noqa: E402
from benchmarks.goals import evaluate  # noqa: E402
from benchmarks.instrument import Instrumented, even_routes  # noqa: E402
from benchmarks.latency import Contender, interleaved, percentile, split_rounds, summarize  # noqa: E402
from erudite_edge.bundle import Bundle  # noqa: E402
from erudite_edge.errors import UsageError  # noqa: E402
from erudite_edge.pipeline import load_classifier  # noqa: E402
from erudite_edge.preprocess import preprocess  # noqa: E402

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
        make_fp16(root / b, images=bundles / "photos", count=8)
    return root


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------
def test_bench_command_writes_json_markdown_and_png(bundles, two_precisions, tmp_path):
    from erudite_edge.cli import main

    out = tmp_path / "report"
    rc = main([
        "bench", "--bundle", str(two_precisions / "erudite"), "--zoo", str(two_precisions / "zoo"), "--backend", "onnxruntime",
        "--precision", "fp32,fp16", "--batch", "1,4", "--warmup", "1", "--iters", "4", "--rounds", "2",
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
            assert s["n"] == 4 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["throughput_ips"] > 0
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
    assert {g["status"] for g in result["goals"]} <= {"PASS", "FAIL", "INFO", "N/A"}

    md = (out / "bench.md").read_text()
    assert "## Latency per batch and throughput" in md and "## Goals" in md
    assert "| fp32 | 1 | erudite |" in md and "| fp16 | 4 | zoo |" in md
    assert "| erudite | fp32 | 100.00 | 100.00 | 100.00 |" in md
    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000


def test_precisions_one_at_a_time_give_the_same_report_layout(two_precisions):
    from benchmarks.bench import BenchConfig, run_bench

    cfg = BenchConfig(bundle=two_precisions / "erudite", zoo=two_precisions / "zoo", backend="onnxruntime",
                      precisions=None, batches=[2], warmup=0, iters=2, rounds=1, interleave_precisions=False)
    r = run_bench(cfg, progress=False)
    assert r["settings"]["precisions"] == ["fp32", "fp16"] and r["settings"]["interleave_precisions"] is False
    assert [(x["precision"], x["batch"]) for x in r["latency"]] == [("fp32", 2), ("fp16", 2)]
    assert all(x["calls"]["zoo"] == {"coarse": [2], "fine:warm": [1], "fine:cool": [1]} for x in r["latency"])


def test_bench_refuses_a_missing_precision_and_swapped_bundles(bundles, tmp_path, capsys):
    from erudite_edge.cli import main

    rc = main(["bench", "--bundle", str(bundles / "erudite"), "--zoo", str(bundles / "zoo"), "--precision", "int8",
               "--out", str(tmp_path)])
    assert rc == 2 and "no int8 model" in capsys.readouterr().err
    rc = main(["bench", "--bundle", str(bundles / "zoo"), "--out", str(tmp_path)])
    assert rc == 2 and "pass it with --zoo" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_bench_modules_import_without_torch():
    code = ("import sys, benchmarks.bench, benchmarks.report, benchmarks.complexity, benchmarks.accuracy, "
            "erudite_edge.commands.bench; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# ------------------------------------------------------------------------------------------------
# The zoo's batching
# ------------------------------------------------------------------------------------------------
def test_zoo_mixed_batch_real_routing_groups_images(bundles):
    zoo = Instrumented(load_classifier(Bundle.load(bundles / "zoo"), "onnxruntime", announce=None), forced_routing=False)
    order = ["red", "blue", "yellow", "cyan", "cyan", "red"]
    probs = zoo.predict(_images(order))
    assert zoo.calls_seen() == {"coarse": [6], "fine:warm": [3], "fine:cool": [3]}
    assert zoo.classifier.last_groups == {"warm": [0, 2, 5], "cool": [1, 3, 4]}
    names = [n for cls in DATASETS.values() for n in cls]
    assert [names[i] for i in probs.argmax(1)] == order
    zoo.close()


def test_zoo_forced_routing_splits_every_batch_evenly(tmp_path):
    datasets = {"a": ["red"], "b": ["yellow"], "c": ["blue", "cyan"]}
    zoo = Instrumented(load_classifier(make_zoo_bundle(tmp_path / "zoo3", datasets), "onnxruntime", announce=None))
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


def test_table3_with_fvcore_on_a_tiny_backbone():
    pytest.importorskip("fvcore")
    import torch

    from benchmarks.complexity import table3_column, torch_macs
    from train.model import ModelConfig, build_model

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


def test_summary_statistics_match_numpy():
    from benchmarks.latency import Samples

    lat = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0, 4.0]
    for q in (50, 90, 99):
        assert percentile(lat, q) == pytest.approx(np.percentile(lat, q))
    s = summarize(Samples(latency_ms=lat, round_ips=[10.0, 30.0, 20.0]), batch=4)
    assert (s.n, s.p50_ms, s.min_ms, s.throughput_ips, s.compute_p50_ms) == (7, 4.0, 1.0, 20.0, None)
    assert s.mean_ms == pytest.approx(np.mean(lat))


def _result(lat1=0.5, thr8=2.0, size=0.4, n=2, e2e=0.9):
    stats = lambda p50, ips: {"p50_ms": p50, "throughput_ips": ips}  # noqa: E731
    rows = [
        {"precision": "fp32", "batch": 1, "erudite": stats(5.0, 200), "zoo": stats(10.0, 100),
         "ratio": {"latency_p50": lat1, "throughput": 2.0}, "backend": {"erudite": "onnxruntime"}},
        {"precision": "fp32", "batch": 8, "erudite": stats(40.0, 200), "zoo": stats(80.0, 100),
         "ratio": {"latency_p50": 0.5, "throughput": thr8}, "backend": {"erudite": "onnxruntime"}},
        {"precision": "int8", "batch": 1, "erudite": stats(3.0, 330), "zoo": stats(12.0, 80)},
        {"precision": "int8", "batch": 8, "erudite": stats(30.0, 270), "zoo": stats(70.0, 110)},
    ]
    return {
        "settings": {"precisions": ["fp32", "int8"], "batches": [1, 8]},
        "bundles": {"erudite": {"backbone": "resnet50", "input_size": [224, 224], "num_datasets": n}, "zoo": {}},
        "latency": rows, "size_mb": {"fp32": {"erudite": 100.0, "zoo": 100.0 / size, "ratio": size}},
        "end_to_end": [{"precision": "fp32", "batch": 8, "erudite": {"ratio": e2e, "e2e_ips": 90.0, "pure_ips": 100.0}}],
        "agreement": {"on": "--source", "images": 10, "erudite": {"int8_vs_fp32": 0.9}, "zoo": {"int8_vs_fp32": 0.8}},
    }


def test_goals_pass_and_fail_at_their_thresholds():
    status = lambda r: [g.status for g in evaluate(r)]  # noqa: E731
    assert status(_result()) == ["PASS", "PASS", "PASS", "PASS", "PASS", "INFO", "FAIL", "INFO"]  # zoo int8 at batch 1 slower
    assert status(_result(lat1=0.56, thr8=1.79, size=0.46, e2e=0.84))[:4] == ["FAIL"] * 4
    assert status(_result(size=0.31, n=4))[2] == "FAIL" and status(_result(size=0.29, n=4))[2] == "PASS"
    r = _result()
    r["latency"] = [x for x in r["latency"] if x["batch"] != 8]
    r["end_to_end"] = []
    goals = evaluate(r)
    assert goals[1].status == "N/A" and "add 8 to --batch" in goals[1].detail
    assert goals[3].status == "N/A" and "--source" in goals[3].detail


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
def test_step_time_measures_every_variant_side_by_side():
    pytest.importorskip("torch")
    from benchmarks.step_time import StepTimeConfig, measure

    cfg = StepTimeConfig(backbone="tiny", input_size=32, batch_per_dataset=2, class_counts=[3, 4], warmup=0,
                         iters=2, rounds=2, embed_dim=16, hidden=16)
    r = measure(cfg)
    assert set(r["variants"]) == {"ours", "baseline+", "baseline"}
    assert all(v["steps"] == 2 and v["median_ms"] > 0 for v in r["variants"].values())
    assert r["ratio_ours_over_baseline_plus"] == pytest.approx(
        r["variants"]["ours"]["median_ms"] / r["variants"]["baseline+"]["median_ms"])
    assert r["goal"]["status"] in ("PASS", "FAIL") and r["settings"]["device"] == "cpu"

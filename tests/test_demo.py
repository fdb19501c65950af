"""`erudite-edge demo --quick` end to end: real images, every variant, export, run, bench."""

import json

from erudite_edge.cli import main


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["accuracy"]) == {"baseline", "baseline+", "ours", "single"}
    for variant, acc in summary["accuracy"].items():
        assert set(acc) == {"mean_top1", "digits", "mnist", "faces"}, variant
        assert 0.0 <= acc["mean_top1"] <= 1.0
    bundle = json.loads((out / "bundles" / "erudite" / "bundle.json").read_text())
    assert {m["precision"] for m in bundle["models"]} == {"fp32", "int8"}
    zoo = json.loads((out / "bundles" / "zoo" / "bundle.json").read_text())
    assert zoo["kind"] == "zoo" and {m["role"] for m in zoo["models"]} == {"coarse", "fine:digits", "fine:mnist", "fine:faces"}
    rows = (out / "predictions.jsonl").read_text().splitlines()
    assert len(rows) >= 20 and all(json.loads(r)["predictions"] for r in rows)
    for f in ("bench.json", "bench.md", "bench.png"):
        assert (out / "bench" / f).stat().st_size > 0
    # INT8 top-1 per data set next to FP32, with the seeds (bench --data on the test splits)
    int8 = summary["int8_accuracy"]
    assert set(int8["per_dataset"]) == {"digits", "mnist", "faces"}
    for d, v in int8["per_dataset"].items():
        assert 0.0 <= v["int8"] <= 1.0 and 0.0 <= v["fp32"] <= 1.0 and v["images"] > 0, d
        assert v["ratio"] is None or v["ratio"] == v["int8"] / v["fp32"]
    assert int8["calibration_seed"] == 0 and int8["test_seed"] == 0 and int8["target"] == "onnxruntime"
    assert "INT8 against FP32" in (out / "bench" / "bench.md").read_text()
    # a second run refuses to overwrite the first
    assert main(["demo", "--quick", "--out", str(out)]) == 2


def test_demo_reads_int8_accuracy_next_to_fp32_from_bench():
    from train.demo import int8_accuracy, int8_line

    def top1(a, b):
        return {"per_dataset": {"digits": {"top1": a, "images": 50}, "faces": {"top1": b, "images": 10}}, "mean_top1": (a + b) / 2}

    bench = {"settings": {"seed": 0}, "bundles": {"erudite": {"int8": {"method": "minmax", "target": "onnxruntime", "seed": 0}}},
             "accuracy": {"erudite": {"fp32": top1(0.9, 1.0), "int8": top1(0.88, 1.0)}}}
    got = int8_accuracy(bench)
    assert got["per_dataset"]["digits"] == {"fp32": 0.9, "int8": 0.88, "ratio": 0.88 / 0.9, "images": 50}
    assert got["calibration_seed"] == 0 and got["test_seed"] == 0 and got["target"] == "onnxruntime"
    assert "digits 90.0 -> 88.0 (0.978)" in int8_line(got) and "calibration seed 0" in int8_line(got)
    assert int8_accuracy({"accuracy": {"erudite": {"fp32": top1(0.9, 1.0)}}}) is None  # no int8 measured

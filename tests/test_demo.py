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
    # a second run refuses to overwrite the first
    assert main(["demo", "--quick", "--out", str(out)]) == 2

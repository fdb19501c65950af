"""benchmarks/studies/run_memory.py end to end at a tiny size: real `erudite-edge run` processes under GNU time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.studies import run_memory


@pytest.mark.slow  # runs the bench or a study on real models
@pytest.mark.skipif(not Path(run_memory.TIME).exists(), reason="GNU time is not installed")
def test_run_memory_measures_real_runs(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert run_memory.main(["--images", "2", "--batches", "2", "--reps", "1", "--save-batch", "0",
                            "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    report = json.loads((out / "run_memory.json").read_text())
    ran, refused = report["runs"]["after --batch 2"][0], report["runs"]["after --batch 100000"][0]
    assert ran["rc"] == 0 and ran["results"] == 2 and ran["rss_mb"] > 50  # an interpreter with OpenCV and ONNX Runtime
    assert refused["rc"] == 2 and refused["messages"][0].startswith("error: --batch 100000: the pipeline's input buffers")
    assert all(isinstance(r["load1_before"], float) for r in (ran, refused))
    md = (out / "run_memory.md").read_text()
    assert "| `run --batch 2` (after) |" in md and "| `run --batch 100000` (after) |" in md

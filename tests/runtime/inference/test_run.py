"""`erudite-edge run` end to end on tiny real ONNX models: outputs, bad files, --strict, exit codes,
--save, the zoo's routing, backend choice, and a run where importing torch is impossible."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from erudite_edge.backends.registry import RunnerOptions, choose_backend, load_runner
from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.preprocess import preprocess_batch
from erudite_edge.core.scores import top_k
from erudite_edge.errors import BackendUnavailable, BadImageError, BundleError
from erudite_edge.inference.models import ZooModel, load_model
from erudite_edge.inference.pipeline import Pipeline
from erudite_edge.outputs.records import JsonlSink, csv_header
from erudite_edge.sources.capture import gstreamer_available
from erudite_edge.sources.open import open_source
from onnx_fixtures import (
    COLORS,
    DATASETS,
    make_erudite_bundle,
    make_zoo_bundle,
    solid_image,
    write_bad_files,
    write_image,
    write_video,
)
from real_processes import child_env

DATASET_OF = {c: d for d, cls in DATASETS.items() for c in cls}


@pytest.fixture(scope="module")
def color_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two noisy images of each colour, named after it."""
    folder = tmp_path_factory.mktemp("colors")
    for i, (name, c) in enumerate(COLORS.items()):
        for j in range(2):
            write_image(folder / f"{name}_{j}.png", solid_image(c, noise=20, seed=10 * i + j))
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_records(records: list[dict], labels, k: int) -> None:
    """Each record: top-k of length k, scores descending, label/dataset/class_id agreeing with the label table."""
    for r in records:
        preds = r["predictions"]
        assert len(preds) == k
        assert [p["rank"] for p in preds] == list(range(1, k + 1))
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] and sum(scores) <= 1 + 1e-4
        for p in preds:
            assert labels.joint_names[p["class_id"]] == f"{p['dataset']}/{p['label']}"
            assert labels.datasets[labels.dataset_of_class[p["class_id"]]] == p["dataset"]


def color_of(name: str) -> str:
    return Path(name).stem.split("_")[0]


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------
def test_folder_to_jsonl_file(erudite: Bundle, color_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(color_folder), "--topk", "3", "--batch", "3", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "backend: onnxruntime" in err and "frames classified" in err
    records = read_jsonl(out)
    assert [r["name"] for r in records] == sorted(str(p) for p in color_folder.glob("*.png"))
    assert [r["index"] for r in records] == list(range(len(records)))
    check_records(records, erudite.labels, 3)
    for r in records:
        top = r["predictions"][0]
        assert top["label"] == color_of(r["name"]) and top["dataset"] == DATASET_OF[top["label"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_jsonl_on_stdout_and_topk_capped(erudite: Bundle, color_folder: Path, capsys) -> None:
    rc = main(["run", "--bundle", str(erudite.root), str(color_folder / "cyan_*.png"), "--topk", "10"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    records = [json.loads(line) for line in cap.out.splitlines()]
    assert len(records) == 2
    check_records(records, erudite.labels, erudite.labels.num_classes)  # k capped at the label count
    assert {r["predictions"][0]["label"] for r in records} == {"cyan"}


def test_csv_output(erudite: Bundle, color_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    assert main(["run", "--bundle", str(erudite.root), str(color_folder), "--topk", "2", "-o", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, newline="") as f:
        assert next(csv.reader(f)) == csv_header(2, erudite.labels.datasets)
    assert len(rows) == 8
    for row in rows:
        assert row["label"] == color_of(row["name"]) == row["top1_label"]
        assert row["dataset"] == DATASET_OF[row["label"]] == row["top1_dataset"]
        assert row["top2_dataset"] in DATASETS and row["top2_label"] in DATASETS[row["top2_dataset"]]
        assert 0 <= float(row["top2_score"]) <= float(row["score"]) <= 1


def test_unknown_output_suffix_is_refused(erudite: Bundle, color_folder: Path, tmp_path: Path, capsys) -> None:
    assert main(["run", "--bundle", str(erudite.root), str(color_folder), "-o", str(tmp_path / "x.txt")]) == 2
    assert ".jsonl or .csv" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Bad files, --strict, bad sources
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict]:
    folder = tmp_path_factory.mktemp("messy")
    bad, odd = write_bad_files(folder)
    write_image(folder / "good_red.png", solid_image(COLORS["red"]))
    write_image(folder / "good_cyan.jpg", solid_image(COLORS["cyan"]))
    return folder, bad, odd


def test_bad_files_skipped_and_counted_odd_modes_classified(erudite: Bundle, messy_folder, tmp_path: Path, capsys) -> None:
    folder, bad, odd = messy_folder
    out = tmp_path / "p.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out), "--batch", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    names = {Path(r["name"]).name: r for r in read_jsonl(out)}
    assert set(names) == set(odd) | {"good_red.png", "good_cyan.jpg"}
    for name, color in odd.items():
        if color is not None:
            expected = next(k for k, v in COLORS.items() if v == color)
            assert names[name]["predictions"][0]["label"] == expected, name
    for name in bad:
        assert f"{name}" in err and "skipped" in err
    # the same run through the API: the counts
    classifier = load_model(erudite, announce=None)
    summary = Pipeline(classifier, erudite.labels, erudite.preprocess, batch=2).run(open_source(str(folder)))
    assert (summary.frames, summary.skipped) == (len(odd) + 2, len(bad))
    assert sorted(Path(n).name for n in summary.skipped_names) == sorted(bad)


def test_strict_stops_at_first_bad_file(erudite: Bundle, messy_folder, tmp_path: Path, capsys) -> None:
    folder, bad, _ = messy_folder
    out = tmp_path / "p.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(folder), "--strict", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "--strict" in error_lines[0]
    assert any(b in error_lines[0] for b in bad)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(BadImageError):
        Pipeline(load_model(erudite, announce=None), erudite.labels, erudite.preprocess, strict=True).run(
            open_source(str(folder)))


def test_missing_source_is_one_line_exit_2(erudite: Bundle, tmp_path: Path, capsys) -> None:
    rc = main(["run", "--bundle", str(erudite.root), str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().count("\n") == 0 and str(tmp_path / "missing") in err


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
def test_csi_without_gstreamer_exit_2_with_fix(erudite: Bundle, capsys) -> None:
    rc = main(["run", "--bundle", str(erudite.root), "csi://0"])
    err = capsys.readouterr().err
    assert rc == 2 and "sudo apt install nvidia-opencv" in err and err.strip().count("\n") == 0


def test_bundle_and_source_usage_errors(erudite: Bundle, zoo: Bundle, color_folder: Path, tmp_path: Path, capsys) -> None:
    assert main(["run", str(color_folder)]) == 2  # neither --bundle nor --zoo
    assert main(["run", "--bundle", str(zoo.root), str(color_folder)]) == 2  # a zoo given as --bundle
    assert main(["run", "--zoo", str(erudite.root), str(color_folder)]) == 2
    assert main(["run", "--bundle", str(tmp_path), str(color_folder)]) == 2  # not a bundle
    assert main(["run", "--bundle", str(erudite.root), str(color_folder), "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert "a zoo bundle; run it with --zoo" in err and "the torch backend runs a training checkpoint: pass --checkpoint RUN" in err


# ------------------------------------------------------------------------------------------------
# Video, --save, --display, --limit
# ------------------------------------------------------------------------------------------------
def test_video_source_save_video_and_limit(erudite: Bundle, tmp_path: Path) -> None:
    colors = [COLORS["red"], COLORS["blue"], COLORS["yellow"], COLORS["cyan"]] * 2
    video = write_video(tmp_path / "in.mp4", colors, size=(64, 48), fps=12)
    out, saved = tmp_path / "p.jsonl", tmp_path / "annotated.mp4"
    assert main(["run", "--bundle", str(erudite.root), str(video), "-o", str(out), "--save", str(saved)]) == 0
    records = read_jsonl(out)
    assert [r["name"] for r in records] == [f"frame:{i}" for i in range(len(colors))]
    expected = [next(k for k, v in COLORS.items() if v == c) for c in colors]
    assert [r["predictions"][0]["label"] for r in records] == expected
    cap = cv2.VideoCapture(str(saved))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == len(colors) and frames[0].shape == (48, 64, 3)
    # the caption band: dark top-left corner on a red frame, red elsewhere
    assert frames[0][2, 2].max() < 60 and frames[0][-5, -5][2] > 200

    limited = tmp_path / "limited.jsonl"
    assert main(["run", "--bundle", str(erudite.root), str(video), "-o", str(limited), "--limit", "3", "--batch", "2"]) == 0
    assert len(read_jsonl(limited)) == 3


def test_save_folder_of_annotated_images(erudite: Bundle, color_folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    saved = tmp_path / "annotated"
    rc = main(["run", "--bundle", str(erudite.root), str(color_folder), "--save", str(saved), "--display",
               "-o", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--display: no display" in err  # warned, and the run went on
    files = sorted(p.name for p in saved.iterdir())
    assert files == sorted(p.name for p in color_folder.glob("*.png"))
    for name in files:
        ann = cv2.imread(str(saved / name))
        orig = cv2.imread(str(color_folder / name))
        assert ann is not None and ann.shape == orig.shape
        assert not np.array_equal(ann, orig)  # the caption is drawn
    # an existing, non-empty folder is not overwritten without --overwrite
    assert main(["run", "--bundle", str(erudite.root), str(color_folder), "--save", str(saved), "-o",
                 str(tmp_path / "q.csv")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["run", "--bundle", str(erudite.root), str(color_folder / "red_0.png"), "--save", str(saved),
                 "--overwrite", "-o", str(tmp_path / "q.csv")]) == 0
    assert [p.name for p in saved.iterdir()] == ["red_0.png"]


# ------------------------------------------------------------------------------------------------
# The zoo
# ------------------------------------------------------------------------------------------------
def zoo_batch(bundle: Bundle, names: list[str]) -> np.ndarray:
    return preprocess_batch([solid_image(COLORS[n]) for n in names], bundle.preprocess)


def test_zoo_routes_each_image_to_its_datasets_fine_model(zoo: Bundle) -> None:
    names = ["red", "blue", "yellow", "cyan", "red", "cyan"]
    labels = zoo.labels
    with ZooModel(zoo, announce=None) as runner:
        probs = np.exp(runner.predict(zoo_batch(zoo, names)))  # predict gives log-probabilities
        assert runner.last_groups == {"warm": [0, 2, 4], "cool": [1, 3, 5]}
        coarse = np.exp(runner.last_coarse)
        assert runner.role_ms["fine:warm"] > 0 and runner.role_ms["fine:cool"] > 0
    assert probs.shape == (len(names), labels.num_classes)
    for i, n in enumerate(names):
        d = labels.datasets.index(DATASET_OF[n])
        lo, hi = labels.offsets[d], labels.offsets[d] + labels.sizes[d]
        assert np.all(probs[i, :lo] == 0) and np.all(probs[i, hi:] == 0)  # other data sets' classes: 0
        assert probs[i, lo:hi].sum() == pytest.approx(coarse[i, d], rel=1e-5)  # fine softmax x coarse prob
        assert labels.joint_names[int(probs[i].argmax())] == f"{DATASET_OF[n]}/{n}"
    preds = top_k(probs, labels, 2)
    assert [p[0].label for p in preds] == names


def test_zoo_follows_the_coarse_model_even_when_it_is_wrong(tmp_path: Path) -> None:
    # a router that sends warm colours to "cool" and cool ones to "warm"
    swapped = make_zoo_bundle(tmp_path / "swapped", coarse_prototypes={"warm": (0, 128, 255), "cool": (255, 128, 0)})
    with ZooModel(swapped, announce=None) as runner:
        probs = runner.predict(zoo_batch(swapped, ["red", "blue", "red"]))
        assert runner.last_groups == {"warm": [1], "cool": [0, 2]}
    datasets = [swapped.labels.datasets[swapped.labels.dataset_of_class[int(j)]] for j in probs.argmax(axis=1)]
    assert datasets == ["cool", "warm", "cool"]  # the fine model of the routed data set answered


def test_zoo_cli_matches_labels(zoo: Bundle, color_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "z.jsonl"
    rc = main(["run", "--zoo", str(zoo.root), str(color_folder), "--batch", "5", "--topk", "4", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "zoo's 3 models" in err and "fine:warm ms/frame" in err
    records = read_jsonl(out)
    check_records(records, zoo.labels, 4)
    for r in records:
        preds = r["predictions"]
        assert preds[0]["label"] == color_of(r["name"])
        assert preds[2]["score"] == 0 and preds[3]["score"] == 0  # the other data set's classes


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------
def test_auto_backend_picks_onnxruntime_and_says_why(erudite: Bundle) -> None:
    said: list[str] = []
    runner = load_runner(erudite, announce=said.append)
    try:
        assert runner.backend == "onnxruntime"
        assert len(said) == 1 and said[0].startswith("backend: onnxruntime fp32") and "tensorrt skipped" in said[0]
        x = preprocess_batch([solid_image(COLORS["yellow"])], erudite.preprocess)
        assert runner.infer(x).shape == (1, erudite.labels.num_classes)
    finally:
        runner.close()
    with pytest.raises(BundleError, match="no fp16 onnx model"):
        choose_backend(erudite, options=RunnerOptions(precision="fp16"))
    with pytest.raises(BackendUnavailable, match="torch backend runs a training checkpoint: pass --checkpoint"):
        load_runner(erudite, options=RunnerOptions(backend="torch"))


def test_explicit_tensorrt_without_tensorrt(erudite: Bundle) -> None:
    from erudite_edge.backends.registry import _tensorrt_module

    if _tensorrt_module()[0] is not None:
        pytest.skip("TensorRT is usable here")
    with pytest.raises(BackendUnavailable, match="--backend tensorrt"):
        load_runner(erudite, options=RunnerOptions(backend="tensorrt"))


def test_model_that_disagrees_with_the_label_table(tmp_path: Path) -> None:
    from onnx_fixtures import nearest_color_model

    bundle = make_erudite_bundle(tmp_path / "b")
    nearest_color_model(tmp_path / "b" / "model.onnx", [COLORS["red"], COLORS["blue"]], bundle.preprocess)
    bundle.add_model("main", "fp32", "model.onnx")
    bundle.save()
    with pytest.raises(BundleError, match="2 outputs but role 'main' needs 4"):
        load_runner(Bundle.load(bundle.root), announce=None)


# ------------------------------------------------------------------------------------------------
# No torch at run time; Ctrl-C
# ------------------------------------------------------------------------------------------------
NO_TORCH_PRELUDE = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("torchvision", "train") or name.startswith("train."):
            raise ImportError(f"{name} is blocked: the runtime must not need it")
        return None
sys.meta_path.insert(0, _NoTorch())
from erudite_edge.cli.app import main
rc = main(sys.argv[1:])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
sys.exit(rc)
"""


def _env() -> dict[str, str]:
    return child_env(headless=True)


@pytest.mark.slow  # a child process
def test_runtime_imports_no_torch(erudite: Bundle, zoo: Bundle, color_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_PRELUDE, "run", "--bundle", str(erudite.root),
                           str(color_folder), "-o", str(out), "--backend", "onnxruntime"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out)
    assert len(records) == 8 and all(r["predictions"][0]["label"] == color_of(r["name"]) for r in records)
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_PRELUDE, "run", "--zoo", str(zoo.root),
                           str(color_folder / "red_*.png")], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["predictions"][0]["label"] for line in proc.stdout.splitlines()] == ["red", "red"]


@pytest.mark.slow  # child processes
def test_ctrl_c_stops_cleanly_with_summary(erudite: Bundle, tmp_path: Path) -> None:
    video = write_video(tmp_path / "long.mp4", [COLORS["red"], COLORS["blue"]] * 1500, size=(16, 16), fps=30)
    proc = subprocess.Popen([sys.executable, "-m", "erudite_edge.cli.app", "run", "--bundle", str(erudite.root),
                             str(video), "--batch", "1", "--save", str(tmp_path / "ann.mp4")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first result: the run is under way
    assert first.startswith("{"), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "frames classified" in err
    done = 1 + len(rest.splitlines())
    assert 1 <= done < 3000  # stopped early
    assert (tmp_path / "ann.mp4").is_file()  # what was done is kept


def test_jsonl_sink_appends_each_result_at_once(tmp_path: Path) -> None:
    """JSONL to a file: each result is in the file as soon as it is written (a kill keeps it); abort keeps
    what was written, and removes only a file this run created and wrote nothing into."""
    from erudite_edge.core.scores import ClassScore
    from erudite_edge.outputs.results import Result
    from erudite_edge.sources.base import Item

    target = tmp_path / "x.jsonl"
    sink = JsonlSink(target)
    sink.write(Result(0, "a", [ClassScore(1, 0, "red", "warm", 0.9)]), Item(0, "a", None))
    assert read_jsonl(target)[0]["predictions"][0]["label"] == "red"  # before commit
    sink.abort()
    assert read_jsonl(target)[0]["label"] == "red"
    sink2 = JsonlSink(tmp_path / "y.jsonl")
    sink2.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]


def test_live_source_takes_the_newest_frame(erudite: Bundle) -> None:
    """A live source through the pipeline: frames in capture order, none queued behind the model (a
    frame the model had no time for is dropped and counted), every result stamped with its age."""
    from erudite_edge.outputs.results import Sink

    src = open_source("testsrc://60?hold=1&frames=40&colors=ff0000,00ffff", reconnect=0)
    seen: list = []

    class Collect(Sink):
        def write(self, result, item) -> None:
            seen.append(result)

    classifier = load_model(erudite, announce=None)
    predict = classifier.predict

    sizes: list[int] = []

    def slow(batch):  # a model slower than the camera: 40 ms a call against 16.7 ms a frame
        import time

        sizes.append(len(batch))
        time.sleep(0.04)
        return predict(batch)

    classifier.predict = slow  # type: ignore[method-assign]
    summary = Pipeline(classifier, erudite.labels, erudite.preprocess, batch=4).run(src, [Collect()])
    indices = [r.index for r in seen]
    assert indices == sorted(set(indices)) and summary.frames == len(seen) >= 5
    assert summary.live and summary.dropped > 0 and summary.dropped + len(seen) <= 40
    for r in seen:
        assert r.top.label in ("red", "cyan") and r.captured_at > 0 and 40 <= r.frame_age_ms
    # bounded by about one frame interval + one model call (16.7 + 40 ms), with a generous margin for a
    # loaded machine; queued frames would be ~16 model calls (640 ms) old
    ages = sorted(r.frame_age_ms for r in seen)
    assert ages[len(ages) // 2] < 200 and ages[-1] < 500, ages
    assert "stopped delivering frames" in summary.end_reason
    assert set(sizes) == {1}  # live sources take one frame per model call: --batch 4 applies to files


def test_progress_bar_on_a_terminal(erudite: Bundle, color_folder: Path) -> None:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    summary = Pipeline(load_model(erudite, announce=None), erudite.labels, erudite.preprocess, batch=3,
                       console=console).run(open_source(str(color_folder)))
    assert summary.frames == 8 and summary.fps > 0
    assert summary.ms_per_frame(summary.stage_ms["inference"]) > 0


def test_display_on_a_build_without_gui_warns_and_continues(monkeypatch) -> None:
    from erudite_edge.outputs.video import open_display

    monkeypatch.setenv("DISPLAY", ":99")
    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV has a GUI and a display")
    except cv2.error:
        pass
    warnings: list[str] = []
    assert open_display(warnings.append) is None
    assert len(warnings) == 1 and "nvidia-opencv" in warnings[0]


@pytest.mark.slow  # child processes
def test_stdout_closed_by_reader_ends_quietly(erudite: Bundle, tmp_path: Path) -> None:
    """`erudite-edge run ... | head -1`: the run stops, exit 0, no traceback."""
    video = write_video(tmp_path / "v.mp4", [COLORS["red"]] * 400, size=(16, 16))
    proc = subprocess.Popen([sys.executable, "-m", "erudite_edge.cli.app", "run", "--bundle", str(erudite.root),
                             str(video), "--batch", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "frames classified" in err


def test_auto_precision_prefers_the_bundles_engines_where_tensorrt_runs(tmp_path: Path, monkeypatch) -> None:
    from erudite_edge.backends import registry as backends
    from onnx_fixtures import make_erudite_bundle

    def precision(bundle: Bundle, **options: str) -> str:
        return backends.choose_backend(bundle, options=RunnerOptions(**options)).precision

    bundle = make_erudite_bundle(tmp_path / "b")
    assert precision(bundle) == "fp32"
    for p in ("int8", "fp16"):
        (bundle.root / f"model.{p}.engine").write_bytes(b"engine bytes")
        bundle.add_model("main", p, f"model.{p}.engine", fmt="engine")
    assert precision(bundle) == "fp32"  # TensorRT cannot run here: the fp32 ONNX model
    monkeypatch.setattr(backends, "_tensorrt_module", lambda: (object(), ""))
    assert precision(bundle) == "fp16"
    assert precision(bundle, backend="onnxruntime") == "fp32"
    assert precision(bundle, precision="int8") == "int8"


def test_tensorrt_is_probed_once_per_load(tmp_path: Path, monkeypatch) -> None:
    """Choosing the backend probes TensorRT once, for a zoo's every member too, and the check set run of
    every role of a zoo likewise; a backend asked for by name other than tensorrt never probes it."""
    from erudite_edge.backends import registry as backends
    from erudite_edge.core.check_set import write_check_set
    from erudite_edge.inference.check import check_bundle
    from onnx_fixtures import make_zoo_bundle

    probes: list[int] = []

    def probe():  # noqa: ANN202
        probes.append(1)
        return None, "not here (test)"

    monkeypatch.setattr(backends, "_tensorrt_module", probe)
    zoo = make_zoo_bundle(tmp_path / "zoo")
    model = load_model(zoo, RunnerOptions(), announce=lambda _m: None)
    assert model.backend == "onnxruntime" and len(model.runners) == 1 + zoo.labels.num_datasets
    model.close()
    assert len(probes) == 1
    model = load_model(zoo, RunnerOptions(backend="onnxruntime"), announce=lambda _m: None)
    batch = zoo_batch(zoo, ["red", "blue"])
    write_check_set(zoo, batch, "solid colours", True, lambda role, x: model.runners[role].infer(x))
    model.close()
    results = check_bundle(zoo, RunnerOptions())
    assert [r.role for r in results] == zoo.roles() and all(r.passed for r in results)
    assert len(probes) == 2  # one more load, one more probe, for all its roles


def test_tensorrt_provider_gets_an_engine_cache(tmp_path: Path) -> None:
    from erudite_edge.backends.onnxruntime_runner import provider_options

    (tmp_path / "model.onnx").write_bytes(b"a model")  # its engine cache is named by its contents' sha256
    opts = provider_options(["TensorrtExecutionProvider", "CPUExecutionProvider"], tmp_path / "model.onnx")
    name, cfg = opts[0]
    assert name == "TensorrtExecutionProvider" and cfg["trt_engine_cache_enable"]
    assert Path(cfg["trt_engine_cache_path"]).is_dir() and opts[1] == "CPUExecutionProvider"
    assert provider_options(["CPUExecutionProvider"], tmp_path / "model.onnx") == ["CPUExecutionProvider"]


def test_chunked_inference_sums_device_time() -> None:
    from erudite_edge.backends.base import Runner

    class Chunks(Runner):
        backend = "test"

        @property
        def max_batch(self):
            return 2

        def infer(self, batch):
            self.last_compute_ms = 1.5
            return np.zeros((len(batch), 3), dtype=np.float32)

    r = Chunks()
    assert r.infer_chunked(np.zeros((5, 3, 4, 4), dtype=np.float32)).shape == (5, 3)
    assert r.last_compute_ms == pytest.approx(4.5)


def test_per_frame_times_divide_model_stages_by_classified_frames() -> None:
    from erudite_edge.outputs.results import RunSummary

    s = RunSummary(source="folder", backend="onnxruntime", frames=4, skipped=4)
    assert s.ms_per_frame(80.0, "decode") == 10.0  # every file was decoded
    assert s.ms_per_frame(80.0, "inference") == 20.0  # only the 4 readable ones reached the model


class _SlowRunner:
    """A stand-in runner for the zoo's own bookkeeping (timing, shape check, closing): it sleeps a known
    time and returns fixed logits; the real ONNX Runtime runners are exercised by the tests above."""

    def __init__(self, outputs: int, sleep_s: float = 0.0, shape_bug: bool = False):
        self.outputs, self.sleep_s, self.shape_bug, self.closed = outputs, sleep_s, shape_bug, False
        self.last_stage_ms = None  # as a Runner: no device stages measured

    def infer_chunked(self, batch: np.ndarray) -> np.ndarray:
        import time

        time.sleep(self.sleep_s)
        n = len(batch) + (1 if self.shape_bug else 0)
        return np.tile(np.arange(self.outputs, dtype=np.float32), (n, 1))

    def close(self) -> None:
        self.closed = True


def test_zoo_times_each_role_checks_shapes_and_closes_every_runner(zoo: Bundle, monkeypatch) -> None:
    import time

    import erudite_edge.inference.models as zr

    made: dict[str, _SlowRunner] = {}

    def fake_load(bundle, role, *a, **k):  # noqa: ANN001, ANN002, ANN003
        made[role] = _SlowRunner(bundle.expected_outputs(role), sleep_s=0.05 if role == "coarse" else 0.0,
                                 shape_bug=role == "fine:cool")
        return made[role]

    monkeypatch.setattr(zr, "load_runner", fake_load)
    runner = ZooModel(zoo, announce=None)
    x = zoo_batch(zoo, ["red", "blue"])
    t0 = time.perf_counter()
    coarse = runner._run("coarse", x)
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    assert coarse.shape == (2, 2) and 45 <= runner.role_ms["coarse"] <= elapsed_ms + 1  # milliseconds of that call
    assert runner.role_ms["fine:warm"] == 0.0
    with pytest.raises(BundleError, match=r"'fine:cool' returned shape \(3, 2\), expected \(2, 2\)"):
        runner._run("fine:cool", x)
    runner.close()
    assert all(r.closed for r in made.values()) and set(made) == {"coarse", "fine:warm", "fine:cool"}

    # a member that fails to load: the ones loaded before it are closed, the error goes up
    made.clear()

    def failing_load(bundle, role, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if role == "fine:cool":
            raise BundleError("fine.cool.onnx: cannot load")
        return fake_load(bundle, role)

    monkeypatch.setattr(zr, "load_runner", failing_load)
    with pytest.raises(BundleError, match="cannot load"):
        ZooModel(zoo, announce=None)
    assert set(made) == {"coarse", "fine:warm"} and all(r.closed for r in made.values())


class _Scripted:
    """A stand-in runner with chosen logits and device stages, for the zoo's own arithmetic (routing, scores,
    stage sums, timing on a scripted clock); the real ONNX Runtime runners are exercised by the tests above."""

    def __init__(self, logits: list[list[float]], stages: dict[str, float] | None):
        self.logits, self.last_stage_ms, self.calls, self.closed = np.array(logits, np.float32), stages, [], False

    def infer_chunked(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return self.logits[: len(batch)]

    def close(self) -> None:
        self.closed = True


def test_zoo_scores_sums_device_stages_skips_unrouted_models_and_times_roles(zoo: Bundle, erudite: Bundle, monkeypatch) -> None:
    import types

    import erudite_edge.inference.models as zr
    from erudite_edge.core.scores import softmax

    with pytest.raises(BundleError, match="an erudite bundle, not a zoo; run it with --bundle"):
        ZooModel(erudite, announce=None)
    made: dict[str, _Scripted] = {}
    options: list[dict] = []
    script = {"coarse": ([[2.0, 0.0], [1.0, 0.5], [3.0, 1.0]], {"h2d": 1.0, "compute": 2.0}),
              "fine:warm": ([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]], {"compute": 0.5, "d2h": 0.25}),
              "fine:cool": ([[0.0, 0.0]] * 3, {"compute": 9.0})}

    def scripted_load(bundle, role, opts, **k):  # noqa: ANN001, ANN003
        options.append(opts)
        made[role] = _Scripted(*script[role])
        return made[role]

    clock = iter([2.0, 5.0, 7.0, 7.5, 10.0, 10.25, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5, 14.0, 14.5, 15.0, 15.5])  # two reads per model call
    monkeypatch.setattr(zr, "load_runner", scripted_load)
    monkeypatch.setattr(zr, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    runner = ZooModel(zoo, announce=None)
    assert [o.spinning for o in options] == [False] * 3  # spinning only when asked for
    x = zoo_batch(zoo, ["red", "blue", "yellow"])
    probs = np.exp(runner.predict(x))  # predict gives log-probabilities
    # every image routed to warm: cool's model never runs, its classes score 0
    assert runner.last_groups == {"warm": [0, 1, 2]} and made["fine:cool"].calls == [] and made["fine:warm"].calls == [3]
    coarse = softmax(np.array(script["coarse"][0], np.float32))
    fine = softmax(np.array(script["fine:warm"][0], np.float32))
    warm = zoo.labels.datasets.index("warm")
    lo, hi = zoo.labels.offsets[warm], zoo.labels.offsets[warm] + zoo.labels.sizes[warm]
    assert np.allclose(probs[:, lo:hi], fine * coarse[:, warm : warm + 1]) and np.count_nonzero(probs) == 6
    assert runner.last_stage_ms == {"h2d": 1.0, "compute": 2.5, "d2h": 0.25}  # summed over the calls
    assert runner.role_ms == pytest.approx({"coarse": 3000.0, "fine:warm": 500.0, "fine:cool": 0.0}, abs=1e-9)
    made["fine:warm"].last_stage_ms = None  # a member that measures no stages: no stage figures at all
    runner.predict(x)
    assert runner.last_stage_ms is None
    assert runner.role_ms == pytest.approx({"coarse": 3250.0, "fine:warm": 1000.0, "fine:cool": 0.0}, abs=1e-9)
    made["fine:warm"].logits = np.zeros((1, 2), np.float32)  # one row for three images
    with pytest.raises(BundleError, match=r"'fine:warm' returned shape \(1, 2\), expected \(3, 2\)"):
        runner.predict(x)
    made["coarse"].logits = np.array([[0.0, 2.0]] * 3, np.float32)  # every image to cool: warm, checked first, gets none
    probs = np.exp(runner.predict(x))
    assert runner.last_groups == {"cool": [0, 1, 2]} and made["fine:cool"].calls == [3]
    assert np.allclose(probs.sum(axis=1), softmax(made["coarse"].logits)[:, 1])
    runner.close()

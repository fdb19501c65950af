"""The check set: `export onnx` stores inputs and FP32 outputs; `erudite-edge check` runs them on a backend
and compares. Real here: the trained tiny bundle of test_export (real photographs), real ONNX Runtime,
the real FP16 and both real INT8 layouts, the real CLI."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import (
    AccuracyDrop,
    CheckSet,
    CheckSetMissing,
    enforce,
    load_check_set,
    run_check,
)
from erudite_edge.core.fileio import sha256_file
from erudite_edge.core.preprocess import PreprocessSpec
from export.fp16 import make_fp16
from export.int8 import Int8Options, make_int8
from trained_model import cli, one_error_line


@pytest.fixture(scope="module")
def variants(trained, tmp_path_factory):
    """The trained bundle with an FP16 model, and two copies with INT8 models in each layout."""
    root = tmp_path_factory.mktemp("check")
    made = {}
    made["fp16"] = root / "fp16"
    shutil.copytree(trained["bundle"], made["fp16"])
    make_fp16(Bundle.load(made["fp16"], verify=True), count=16)
    for target in ("tensorrt", "onnxruntime"):
        made[f"int8-{target}"] = root / f"int8-{target}"
        shutil.copytree(trained["bundle"], made[f"int8-{target}"])
        options = Int8Options(method="minmax", target=target, calib_images=trained["root"] / "data", calib_count=48,
                              eval_count=16)
        make_int8(Bundle.load(made[f"int8-{target}"], verify=True), options)
    return made


@pytest.mark.slow  # trains the tiny model (trained)
def test_export_stores_a_check_set_recorded_with_sha256(trained):
    bundle = Bundle.load(trained["bundle"])
    record = bundle.meta["check_set"]
    assert record["inputs"]["file"] == "checkset/inputs.npy" and record["real_images"] is True
    assert "test split of a, b" in record["source"]
    for item in [record["inputs"], *record["outputs"].values()]:
        assert sha256_file(bundle.root / item["file"]) == item["sha256"]
    check = load_check_set(bundle)
    assert check.inputs.dtype == bundle.preprocess.np_dtype and len(check.inputs) == record["count"] >= 20
    assert record["inputs"]["dtype"] == bundle.preprocess.dtype == "uint8"  # the default export: bytes, stored exactly
    assert check.outputs["main"].shape == (record["count"], bundle.expected_outputs("main"))
    assert len(set(check.outputs["main"].argmax(1).tolist())) >= 3  # a check set that can tell models apart


def result_line(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    return lines[0]


@pytest.mark.slow  # trains the tiny model (trained)
def test_check_fp32_on_onnxruntime(trained, capsys, tmp_path):
    rc, out, err = cli(capsys, "check", trained["bundle"], "--backend", "onnxruntime", "--precision", "fp32",
                       "--json", tmp_path / "check.json")
    assert rc == 0, err
    line = result_line(out)
    assert line.startswith("PASS main onnxruntime fp32: top-1 agreement with FP32 100.0%"), line
    assert "backend: onnxruntime fp32" in err
    result = json.loads((tmp_path / "check.json").read_text())["results"][0]
    assert result["max_abs_diff"] < 1e-4 and result["passed"]


@pytest.mark.slow  # trains the tiny model (trained)
@pytest.mark.parametrize("variant, precision", [("fp16", "fp16"), ("int8-tensorrt", "int8"), ("int8-onnxruntime", "int8")])
def test_check_reduced_precisions_on_onnxruntime(variants, capsys, tmp_path, variant, precision):
    out_json = tmp_path / "check.json"
    rc, out, err = cli(capsys, "check", variants[variant], "--backend", "onnxruntime", "--precision", precision,
                       "--json", out_json)
    result = json.loads(out_json.read_text())["results"][0]
    minimum = {"fp16": 0.99, "int8": 0.97}[precision]
    assert result["min_agreement"] == minimum and result["count"] >= 20
    assert result["max_abs_diff"] > 0  # really the reduced model, not the FP32 one again
    assert rc == 0, f"{variant}: {out} {err}"  # at or above the minimum agreement
    assert result_line(out).startswith(f"PASS main onnxruntime {precision}")
    assert result["top1_agreement"] >= minimum


@pytest.mark.slow  # trains the tiny model (trained)
def test_bundle_without_check_set_exit_2_with_hint(trained, capsys, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained["bundle"], old)
    meta = json.loads((old / "bundle.json").read_text())
    del meta["check_set"]
    (old / "bundle.json").write_text(json.dumps(meta))
    shutil.rmtree(old / "checkset")
    rc, out, err = cli(capsys, "check", old, "--backend", "onnxruntime", "--precision", "fp32")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "no check set" in line and "re-export" in line and "erudite-edge export onnx" in line


@pytest.mark.slow  # trains the tiny model (trained)
def test_changed_check_set_file_exit_2(trained, capsys, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(trained["bundle"], changed)
    arr = np.load(changed / "checkset" / "model.fp32.npy")
    np.save(changed / "checkset" / "model.fp32.npy", arr + 1)
    rc, _, err = cli(capsys, "check", changed, "--backend", "onnxruntime", "--precision", "fp32")
    assert rc == 2 and "do not match the sha256" in one_error_line(err)


class PermutedLogits:
    """A real (numpy) model that answers the FP32 outputs with two classes swapped on some inputs."""

    backend = "numpy"
    max_batch = None

    def __init__(self, reference: np.ndarray, flips: int):
        self.out = reference.copy()
        top = reference.argmax(1)
        for i in range(flips):
            other = (top[i] + 1) % reference.shape[1]
            self.out[i, [top[i], other]] = self.out[i, [other, top[i]]]

    def infer_chunked(self, batch: np.ndarray) -> np.ndarray:
        return self.out[: len(batch)]


def test_threshold_and_accept_accuracy_drop():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 7)).astype(np.float32)
    check = CheckSet(rng.standard_normal((100, 3, 4, 4)).astype(np.float32), {"main": ref}, "random", False)
    ok = run_check(PermutedLogits(ref, 2), check, "main", "int8")  # 98 % >= 97 %
    assert ok.passed and ok.top1_agreement == pytest.approx(0.98) and ok.max_abs_diff > 0
    bad = run_check(PermutedLogits(ref, 2), check, "main", "fp16")  # 98 % < 99 %
    assert not bad.passed
    with pytest.raises(AccuracyDrop, match="98.0% of the check set, below the 99% minimum") as e:
        enforce([ok, bad], accept_drop=False, warn=print)
    assert "\n" not in str(e.value) and e.value.exit_code == 1
    warned: list[str] = []
    enforce([ok, bad], accept_drop=True, warn=warned.append)
    assert len(warned) == 1 and "accepted" in warned[0]


def test_missing_check_set_is_exit_code_2():
    assert CheckSetMissing.exit_code == 2


@pytest.mark.slow  # trains the tiny model (trained)
def test_check_on_tensorrt_without_it_is_one_line_exit_2(trained, capsys):
    from erudite_edge.backends.tensorrt.runner import available

    if available():
        pytest.skip("TensorRT is importable here")
    rc, out, err = cli(capsys, "check", trained["bundle"], "--backend", "tensorrt", "--precision", "fp16")
    assert rc == 2 and out == ""
    assert "--backend tensorrt" in one_error_line(err)


@pytest.mark.slow  # trains the tiny model (trained)
@pytest.mark.parametrize("change", ["size", "dtype"])
def test_bundle_json_input_disagreeing_with_the_graph_fails_check_and_run(trained, capsys, tmp_path, change):
    # issue 25 item 6: `check` said PASS and `run` died with an ONNX Runtime traceback
    bad = tmp_path / "bad"
    shutil.copytree(trained["bundle"], bad)
    meta = json.loads((bad / "bundle.json").read_text())
    pre = meta["preprocess"]
    h, w = pre["input_size"]
    graph = f"takes uint8 Nx{h}x{w}x3" if pre["dtype"] == "uint8" else f"takes float32 Nx3x{h}x{w}"
    if change == "size":
        pre["input_size"] = [h + 8, w + 8]
    elif pre["dtype"] == "uint8":
        pre.update(dtype="float32", layout="NCHW")
    else:
        pre.update(dtype="uint8", layout="NHWC")
    spec = PreprocessSpec.from_dict(pre)
    said = f"feeds {spec.dtype} {spec.layout} Nx{'x'.join(map(str, spec.sample_shape))}"
    (bad / "bundle.json").write_text(json.dumps(meta))
    rc, out, err = cli(capsys, "check", bad, "--backend", "onnxruntime", "--precision", "fp32")
    line = one_error_line(err)
    assert rc == 2 and "PASS" not in out, (out, err)
    assert said in line and graph in line and "model.onnx" in line and "re-export" in line
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), 128, np.uint8))
    rc, out, err = cli(capsys, "run", "--bundle", bad, image, "--backend", "onnxruntime")
    assert rc == 2 and out == "" and "Traceback" not in err
    assert said in one_error_line(err)

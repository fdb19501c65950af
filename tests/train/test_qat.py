"""Quantization-aware fine-tuning: `train --qat RUN` fine-tunes an FP32 run with int8 fake quantization in
TensorRT's layout, and `export int8 --qat` writes its Q/DQ model into the FP32 run's bundle (tiny backbone,
tiny images: the path, not the accuracy; the accuracy on the demo model is in benchmarks/results/int8.md)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from tiny_data import make_mixture
from train import qat
from train.model import build_model
from train.model_spec import ModelConfig
from trained_model import one_error_line

pytestmark = pytest.mark.slow  # quantization-aware training and INT8 export

COMMON = ["--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16",
          "--workers", "0", "--no-progress", "--lr", "0.05", "--backbone-lr", "0.05"]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    data = make_mixture(root / "data")
    run = root / "fp32"
    args = ["train", "--variant", "ours", "--epochs", "1", "--steps-per-epoch", "6", "--out", str(run)] + COMMON
    assert main(args + sum((["--data", d] for d in data), [])) == 0
    bundle = root / "bundle"
    assert main(["export", "onnx", "--checkpoint", str(run), "--out", str(bundle), "--parity-count", "4",
                 *sum((["--data", d] for d in data), [])]) == 0
    return {"root": root, "data": data, "run": run, "bundle": bundle}


def test_fake_quantizers_sit_where_tensorrt_quantizes_and_leave_float_weights():
    torch.manual_seed(0)
    cfg = ModelConfig(variant="ours", backbone="tiny", class_counts=[3, 2], embed_dim=16, hidden=16, pretrained=False)
    net = build_model(cfg).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
    layers = qat.prepare(net, lambda m: m(x))
    # every Conv/Linear of the inference path; not the attention conv (functional, theta) nor the aux classifiers G_n
    assert "backbone.0" in layers and "classifier.4" in layers and "gate.fc" in layers
    assert "attention.conv" not in layers and not any(n.startswith("aux_classifiers") for n in layers)
    amax = qat.input_ranges(net)
    first = float(x.abs().max())  # the stem's input range is the calibration batch's max |x|
    assert amax["backbone.0"] == pytest.approx(first, rel=1e-5)
    with torch.no_grad():
        fake = net(x)
    assert 0 < float((fake - ref).abs().max()) < 0.5 * float(ref.abs().max())  # quantized, and close
    # the checkpoint's weights: plain names, the trained float values; they load into an ordinary model
    plain = build_model(cfg)
    plain.load_state_dict(qat.float_state_dict(net), strict=True)
    assert torch.equal(plain.backbone[0].weight, net.backbone[0].parametrizations.weight.original)


def test_train_qat_then_export_int8_qat(fp32, tmp_path, capsys):
    out = tmp_path / "qat"
    data_args = sum((["--data", d] for d in fp32["data"]), [])
    assert main(["train", "--qat", str(fp32["run"]), "--epochs", "1", "--steps-per-epoch", "3", "--qat-calib-batches", "2",
                 "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "run.json").read_text())["train_config"]
    base = json.loads((fp32["run"] / "run.json").read_text())["train_config"]
    assert cfg["qat"] == str(fp32["run"]) and cfg["backbone"] == "tiny" and cfg["data"] == base["data"]
    assert cfg["lr"] == pytest.approx(0.1 * base["lr"]) and cfg["epochs"] == 1
    meta = json.loads((out / "best" / "checkpoint.json").read_text())
    assert set(meta["qat"]["amax"]) == set(meta["qat"]["layers"]) and all(v > 0 for v in meta["qat"]["amax"].values())
    assert meta["qat"]["calibration"].startswith("16 training images (2 batches")  # 2 x (4 per data set x 2)
    # README: "A QAT run is not resumable (start it again)": one line, exit 2, the run left as it is
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir())
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "is a QAT run: it cannot be resumed" in line and f"--qat {fp32['run']}" in line
    assert sorted(p.name for p in out.iterdir()) == before

    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(fp32["bundle"], bundle)
    capsys.readouterr()
    # --no-goal: this 3-step QAT run is about the export's mechanics, not the default INT8 goal (tests/export)
    assert main(["export", "int8", "--bundle", str(bundle), "--qat", str(out), "--calib-count", "8",
                 "--calib-batch", "4", "--no-goal", *data_args]) == 0
    b = Bundle.load(bundle, verify=True)
    entry = b.entry("main", "int8")
    assert entry.info["qat"]["ranges_from_qat"] == len(meta["qat"]["amax"])
    kept = entry.info["mixed_precision"]["main"]["kept_float"]
    assert [k["group"] for k in kept] == ["attention.conv"]  # the one layer QAT did not quantize
    model = onnx.load(b.path(entry))
    # the input scale of the stem's Q/DQ is QAT's range / 127
    stem = next(n for n in model.graph.node if n.op_type == "Conv" and "backbone.0" in "".join(n.input))
    dq = next(n for n in model.graph.node if n.output[0] == stem.input[0])
    scale = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == dq.input[1])
    assert float(scale) == pytest.approx(meta["qat"]["amax"]["backbone.0"] / 127, rel=1e-5)
    assert np.isfinite(b.meta["parity"]["main"]["int8"]["top1_agreement"])


def test_qat_bad_input_is_one_line(fp32, tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", "--qat", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q")]) == 2
    assert "no run.json" in capsys.readouterr().err
    # an FP32 run is not a QAT checkpoint
    assert main(["export", "int8", "--bundle", str(fp32["bundle"]), "--qat", str(fp32["run"]), "--calib-count", "8",
                 "--calib-batch", "4", *sum((["--data", d] for d in fp32["data"]), [])]) == 2
    assert "not a QAT checkpoint" in capsys.readouterr().err

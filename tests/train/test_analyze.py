"""`erudite-edge analyze` end to end on tiny trained runs: the features are the model's own (the input of
G, the heads, the gate weights), the report's top-1 is what `eval` scores, the outputs exist and parse,
the cache is reused, and bad input is one line with exit 2."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from erudite_edge.cli.app import main
from tiny_data import make_mixture
from train.analysis.attention import attention_masks
from train.analysis.features import evaluation_dataset, extract_features
from train.checkpoint import load_checkpoint
from train.data import collate_skip_bad, load_datasets
from train.evaluate_run import evaluate_run

pytestmark = pytest.mark.slow  # trains models and analyses their bundles (module fixtures)

COMMON = ["--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16",
          "--workers", "0", "--no-progress", "--lr", "0.05", "--backbone-lr", "0.05", "--epochs", "2", "--steps-per-epoch", "4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    data = make_mixture(root / "mix")
    out = {"data": data}
    for variant in ("ours", "single"):
        out[variant] = root / variant
        assert main(["train", "--variant", variant, "--out", str(out[variant])] + COMMON + sum((["--data", d] for d in data), [])) == 0
    return out


def _rgb(ds, i):
    from train.data import load_sample_image

    return load_sample_image(ds.datasets[0].samples[i].path)


def test_features_are_the_models_own_and_hooks_are_removed(runs):
    ckpt = load_checkpoint(runs["ours"])
    given = load_datasets(runs["data"])
    ds, _ = evaluation_dataset(given, ckpt.labels, ckpt)
    model = ckpt.build_model()
    fs = extract_features(model, DataLoader(ds, batch_size=7, collate_fn=collate_skip_bad), torch.device("cpu"))
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        feat, _ = model.attention(model.backbone(x))
        f_star = model.projections(feat)
        fused, weights = model.gate(f_star)
        logits = model(x)
    assert np.allclose(fs.fused, fused.numpy(), atol=1e-5)
    assert np.allclose(fs.heads, f_star.numpy(), atol=1e-5)
    assert np.allclose(fs.gate, weights.mean(2).numpy(), atol=1e-6) and np.allclose(fs.gate.sum(1), 1, atol=1e-5)
    assert np.allclose(fs.gate_top.sum(1), 1)
    assert (fs.pred == logits.argmax(1).numpy()).all()
    assert list(fs.dataset) == [0] * 12 + [1] * 8 and list(fs.joint[:4]) == [0, 0, 0, 0]
    masks = attention_masks(model, [_rgb(ds, 0)], ckpt.preprocess, torch.device("cpu"))  # test image 0, as x[0]
    with torch.no_grad():
        _, expected = model.attention(model.backbone(x[:1]))
    assert masks.shape == tuple(expected.shape) and np.allclose(masks, expected.numpy(), atol=1e-5)
    assert not any(m._forward_hooks for m in model.modules())  # the model is left as it was


def test_analyze_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["analyze", "--checkpoint", str(runs["ours"]), "--reference", str(runs["single"]), "--out", str(out),
            "--no-progress", "--mmd-permutations", "50"] + sum((["--data", d] for d in runs["data"]), [])
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "MMD^2 a vs b" in printed.out and "Positive" in printed.out
    r = json.loads((out / "analysis.json").read_text())
    assert set(r["within"]) == {"a", "b"} and r["analysed"] == ["a", "b"]
    # the report's top-1 is exactly what `erudite-edge eval` scores
    metrics, _ = evaluate_run(runs["ours"], runs["data"], workers=0)
    for name in ("a", "b"):
        assert r["within"][name]["top1"] == pytest.approx(metrics["datasets"][name]["top1"])
        q = r["within"][name]["fused"]
        assert -1 <= q["sc"] <= 1 and q["chi"] > 0 and q["dbi"] >= 0 and q["used"] == q["images"]
        t = r["transfer"][name]
        assert t["positive"] + t["negative"] == t["classes"] == {"a": 3, "b": 2}[name]
        assert r["reference"]["within"][name]["fused"]["images"] == {"a": 12, "b": 8}[name]
    (pair,) = r["between"]
    assert pair["pair"] == ["a", "b"] and 0 < pair["p_value"] <= 1 and pair["permutations"] == 50
    gate = np.array(r["gate_usage"]["mean_weight"])
    assert gate.shape == (2, 2) and np.allclose(gate.sum(1), 1, atol=1e-5)
    assert r["attention"]["groups"] == 8 and len(r["attention"]["images"]) == 8  # 4 test images of each data set
    for png in ("figure2_per_class_change.png", "figure3_tsne.png", "gate_usage.png", "attention.png"):
        img = cv2.imread(str(out / png))
        assert img is not None and img.shape[0] > 100, png
    md = (out / "analysis.md").read_text()
    assert "## Table 1: within each data set" in md and "| a vs b |" in md and "## Gate usage" in md
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["analysis.json", "analysis.md", "features.npz", "reference_features.npz", "figure2_per_class_change.png",
         "figure3_tsne.png", "gate_usage.png", "attention.png"])

    # a second analysis reads the cached features and gives the same numbers
    assert main(args + ["--no-tsne"]) == 0
    assert "(cached)" in capsys.readouterr().err
    again = json.loads((out / "analysis.json").read_text())
    assert again["within"] == r["within"] and again["between"] == r["between"] and again["transfer"] == r["transfer"]


def test_analyze_bad_input_is_one_line(runs, tmp_path, capsys):
    a_path = runs["data"][0].split("=", 1)[1]
    base = ["analyze", "--out", str(tmp_path / "r"), "--no-progress", "--no-tsne"]
    assert main(base + ["--checkpoint", str(tmp_path / "no_run"), "--data", runs["data"][0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_run" in err[0]
    assert main(base + ["--checkpoint", str(runs["ours"]), "--data", f"c={a_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'c'" in err[0] and "label table" in err[0]
    assert not (tmp_path / "r").exists()  # nothing written for bad input


def test_reference_trained_on_one_data_set_alone(runs, tmp_path, capsys):
    """The paper's Single as "D_n trained alone": only that data set's classes are compared, and a reference
    that knows none of the data sets given is one line, exit 2."""
    alone = tmp_path / "b_alone"
    b = runs["data"][1]
    short = COMMON[: COMMON.index("--epochs")] + ["--epochs", "1", "--steps-per-epoch", "2"]
    assert main(["train", "--variant", "baseline", "--out", str(alone), "--data", b] + short) == 0
    out = tmp_path / "report"
    args = ["analyze", "--checkpoint", str(runs["ours"]), "--reference", str(alone), "--out", str(out), "--no-progress",
            "--mmd-permutations", "20", "--attention-images", "0"]
    assert main(args + sum((["--data", d] for d in runs["data"]), [])) == 0
    r = json.loads((out / "analysis.json").read_text())
    assert list(r["transfer"]) == ["b"] and r["transfer"]["b"]["classes"] == 2
    assert list(r["reference"]["within"]) == ["b"] and "attention" not in r
    assert cv2.imread(str(out / "figure3_tsne.png")) is not None  # two panels for the run, one for the reference
    capsys.readouterr()
    assert main(args + ["--data", runs["data"][0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference" in err[0] and "none of the data sets" in err[0]


@pytest.fixture(scope="module")
def bundles(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze_bundles")
    out = {"erudite": root / "erudite", "zoo": root / "zoo", "attention": root / "attention"}
    images = runs["data"][0].split("=", 1)[1]
    assert main(["export", "onnx", "--checkpoint", str(runs["ours"]), "--out", str(out["erudite"]), "--images", images,
                 "--parity-count", "4"]) == 0
    assert main(["export", "zoo", "--checkpoint", str(runs["single"]), "--out", str(out["zoo"]), "--images", images,
                 "--parity-count", "4"]) == 0
    assert main(["export", "onnx", "--checkpoint", str(runs["ours"]), "--out", str(out["attention"]), "--images", images,
                 "--parity-count", "4", "--with-attention"]) == 0
    return out


def test_analyze_bundle_measures_what_the_outputs_tell(runs, bundles, tmp_path, capsys):
    """--bundle: top-1 equals the checkpoint analysis (the same model exported), Positive/Negative against the
    zoo bundle equals the checkpoint analysis against the zoo run, and the report lists what it skipped."""
    data = sum((["--data", d] for d in runs["data"]), [])
    ck = tmp_path / "ck"
    assert main(["analyze", "--checkpoint", str(runs["ours"]), "--reference", str(runs["single"]), "--out", str(ck),
                 "--no-progress", "--no-tsne", "--mmd-permutations", "10", "--attention-images", "0"] + data) == 0
    out = tmp_path / "bundle_report"
    assert main(["analyze", "--bundle", str(bundles["erudite"]), "--reference", str(bundles["zoo"]), "--out", str(out),
                 "--no-progress", "--mmd-permutations", "10"] + data) == 0
    printed = capsys.readouterr()
    assert "skipped (needs the model's internals): " in printed.err and "gate usage" in printed.err
    r, c = json.loads((out / "analysis.json").read_text()), json.loads((ck / "analysis.json").read_text())
    logits = np.load(out / "outputs.npz")["fused"]
    assert logits.shape == (20, 5)  # 12 + 8 test images, 3 + 2 classes: the output vector, not a feature
    for name in ("a", "b"):
        w = r["within"][name]
        assert w["top1"] == pytest.approx(c["within"][name]["top1"])
        assert w["right_dataset"] == pytest.approx(c["within"][name]["right_dataset"])
        assert 1 / 5 <= w["confidence"] <= 1 and w["fused"]["images"] == {"a": 12, "b": 8}[name]
        assert "own_head" not in w
        assert r["transfer"][name]["positive"] == c["transfer"][name]["positive"]
        assert r["transfer"][name]["changes"] == pytest.approx(c["transfer"][name]["changes"])
    assert r["between"][0]["pair"] == ["a", "b"] and "gate_usage" not in r and "attention" not in r
    assert len(r["skipped"]) == 4 and "attention maps" in r["skipped"][-1] and r["run"]["bundle"] == str(bundles["erudite"])
    md = (out / "analysis.md").read_text()
    assert "## Not measured" in md and "right data set %" in md and "mean top-1 softmax" in md
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "analysis.md", "figure2_per_class_change.png",
                                                     "figure3_tsne.png", "outputs.npz"]


def test_analyze_bundle_bad_input_is_one_line(runs, bundles, tmp_path, capsys):
    base = ["analyze", "--out", str(tmp_path / "r"), "--no-progress", "--no-tsne"]
    assert main(base + ["--bundle", str(bundles["erudite"]), "--checkpoint", str(runs["ours"]), "--data", runs["data"][0]]) == 2
    assert main(base + ["--data", runs["data"][0]]) == 2
    assert main(base + ["--bundle", str(tmp_path / "nothing"), "--data", runs["data"][0]]) == 2
    a_path = runs["data"][0].split("=", 1)[1]
    assert main(base + ["--bundle", str(bundles["erudite"]), "--data", f"c={a_path}"]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines()]
    assert len(err) == 4 and "one of them" in err[0] and "nothing" in err[2] and "'c'" in err[3]
    assert not (tmp_path / "r").exists()


def test_export_with_attention_keeps_the_logits_and_exposes_the_masks(runs, bundles):
    """--with-attention: the logits are the plain export's (runners read them by name and ignore the masks),
    the masks are the torch model's, bundle.json records the output; the zoo and a variant without the
    attention layer are refused."""
    from erudite_edge.backends.registry import load_runner
    from erudite_edge.core.bundle import Bundle

    plain, att = Bundle.load(bundles["erudite"]), Bundle.load(bundles["attention"])
    rec = att.meta["attention"]
    assert rec["output"] == "attention" and rec["groups"] == 8 and rec["parity_max_abs_diff"] < 1e-4
    assert att.entry().info["extra_outputs"] == ["attention"] and "attention" not in plain.meta
    from erudite_edge.core.preprocess import load_image, preprocess_batch
    from export.images import host_float_batch

    ckpt = load_checkpoint(runs["ours"])
    files = sorted(Path(runs["data"][0].split("=", 1)[1]).joinpath("test").rglob("*.png"))[:6]
    x = preprocess_batch([load_image(f) for f in files], att.preprocess)  # what the bundle takes (uint8 bytes by default)
    with load_runner(plain, announce=None) as r0, load_runner(att, announce=None) as r1:
        assert not r0.has_attention and r1.has_attention
        assert np.allclose(r0.infer(x), r1.infer(x), atol=1e-5)
        logits, masks = r1.infer_attention(x)
    model = ckpt.build_model().inference_graph(with_attention=True).eval()
    with torch.no_grad():
        ref_logits, ref_masks = model(torch.from_numpy(host_float_batch(x, att.preprocess)))
    assert masks.shape == tuple(ref_masks.shape) and masks.shape[1] == 8
    assert np.allclose(masks, ref_masks.numpy(), atol=1e-4) and np.allclose(logits, ref_logits.numpy(), atol=1e-3)


def test_run_save_attention_writes_one_grid_per_input(runs, bundles, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = [p for p in sorted(Path(runs["data"][0].split("=", 1)[1]).joinpath("test").rglob("*.png"))][:3]
    for i, p in enumerate(src):
        (folder / f"img{i}.png").write_bytes(p.read_bytes())
    out = tmp_path / "att"
    assert main(["run", "--bundle", str(bundles["attention"]), str(folder), "--backend", "onnxruntime",
                 "--save-attention", str(out), "-o", str(tmp_path / "r.jsonl")]) == 0
    pngs = sorted(out.iterdir())
    assert [p.name for p in pngs] == ["000000_img0.png", "000001_img1.png", "000002_img2.png"]
    grid = cv2.imread(str(pngs[0]))
    assert grid is not None and grid.shape[1] == 9 * 160 + 8 * 3  # the image and the 8 groups
    # the same predictions as the plain bundle: the masks are read beside the logits, not instead
    assert main(["run", "--bundle", str(bundles["erudite"]), str(folder), "-o", str(tmp_path / "p.jsonl")]) == 0
    strip = lambda f: [json.loads(ln)["predictions"] for ln in f.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "r.jsonl") == strip(tmp_path / "p.jsonl")
    # --backend torch reads the masks from the checkpoint's model
    out_t = tmp_path / "att_torch"
    assert main(["run", "--backend", "torch", "--checkpoint", str(runs["ours"]), str(folder / "img0.png"),
                 "--save-attention", str(out_t), "-o", str(tmp_path / "t.jsonl")]) == 0
    assert len(list(out_t.iterdir())) == 1
    capsys.readouterr()
    # a bundle without the masks: one line, exit 2, nothing written
    assert main(["run", "--bundle", str(bundles["erudite"]), str(folder), "--save-attention", str(tmp_path / "none"),
                 "-o", str(tmp_path / "n.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--with-attention" in err[0] and not (tmp_path / "none").exists()
    assert main(["run", "--zoo", str(bundles["zoo"]), str(folder), "--save-attention", str(tmp_path / "z")]) == 2
    assert "zoo" in capsys.readouterr().err.strip().splitlines()[-1]


def test_analyze_bundle_with_attention_draws_the_masks(runs, bundles, tmp_path):
    out = tmp_path / "r"
    assert main(["analyze", "--bundle", str(bundles["attention"]), "--out", str(out), "--no-progress", "--no-tsne",
                 "--mmd-permutations", "5", "--attention-images", "2"] + sum((["--data", d] for d in runs["data"]), [])) == 0
    r = json.loads((out / "analysis.json").read_text())
    assert r["attention"]["groups"] == 8 and len(r["attention"]["images"]) == 4 and len(r["skipped"]) == 3
    img = cv2.imread(str(out / "attention.png"))
    assert img is not None and img.shape[0] == 4 * (160 + 22)

"""Hostile cases around export, bundles and checkpoints: --overwrite of a folder that is not a bundle,
tampered bundle files, a full disk (a real size-limited tmpfs where this runs as root, else an injected
ENOSPC), a read-only folder, an export killed by a real signal. Each: one line, exit 2 (or 130),
nothing half-written, nothing of the user's deleted."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import torch

import erudite_edge.core.bundle as bundle_mod
from erudite_edge.cli.app import main
from erudite_edge.core.bundle import HASH_CACHE_FILE, Bundle
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BundleError
from paths import REPO
from train.checkpoint import save_checkpoint
from train.model import build_model
from train.model_spec import ModelConfig

LABELS = LabelSpace.build(["a", "b"], [["x", "y"], ["p", "q", "r"]])
CFG = ModelConfig(variant="baseline", backbone="tiny", class_counts=[2, 3], embed_dim=16, hidden=16)


def one_line(err: str) -> str:
    """The one error line (progress lines around it are fine; a traceback is not)."""
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def tmpfs(where: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real small file system (root only); the test is skipped where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(autouse=True)
def verify_by_default():
    """`--no-verify` switches verification off for the rest of a process: each test starts with it on."""
    bundle_mod.set_verify_default(True)
    yield
    bundle_mod.set_verify_default(True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "run"
    torch.manual_seed(0)
    save_checkpoint(run, "best", build_model(CFG).eval(), model_config=CFG, labels=LABELS,
                    preprocess=PreprocessSpec.square(32), extra={"epoch": 0})
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(d / f"{i}.png"), (rng.random((40, 40, 3)) * 255).astype(np.uint8))
    return d


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, run_dir, images) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "b"
    assert main(["export", "onnx", "--checkpoint", str(run_dir), "--out", str(out), "--images", str(images),
                 "--parity-count", "4"]) == 0
    return out


def _export(run_dir: Path, out: Path, images: Path, *extra: str) -> int:
    return main(["export", "onnx", "--checkpoint", str(run_dir), "--out", str(out), "--images", str(images),
                 "--parity-count", "4", *extra])


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# -- export --overwrite ---------------------------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tmp_path, run_dir, images, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    (out / "bundle.json").write_text("{\"format\": \"something else\"}")
    assert _export(run_dir, out, images, "--overwrite") == 2
    assert "not a bundle" in one_line(capsys.readouterr().err)
    assert (out / "holiday.jpg").read_bytes() == b"precious" and not _leftovers(tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert _export(run_dir, a_file, images, "--overwrite") == 2
    assert "not a folder" in one_line(capsys.readouterr().err) and a_file.read_text() == "mine"


@pytest.mark.slow  # exports bundles
def test_overwrite_replaces_an_empty_folder_or_a_bundle(tmp_path, run_dir, images, bundle_dir):
    out = tmp_path / "empty"
    out.mkdir()
    assert _export(run_dir, out, images, "--overwrite") == 0
    Bundle.load(out, verify=True)
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "old-bundle"))
    assert _export(run_dir, copy, images, "--overwrite") == 0
    Bundle.load(copy, verify=True)
    assert not _leftovers(tmp_path)


# -- verification on load ---------------------------------------------------------------------

def _first_image(images: Path) -> str:
    return str(sorted(images.iterdir())[0])


def test_tampered_model_file_is_one_line_naming_it(tmp_path, bundle_dir, images, capsys):
    b = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    assert main(["run", "--bundle", str(b), _first_image(images), "--backend", "onnxruntime"]) == 0
    capsys.readouterr()
    model = b / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the weights: the file still parses
    model.write_bytes(bytes(data))
    assert main(["run", "--bundle", str(b), _first_image(images), "--backend", "onnxruntime"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(model) in line and "sha256" in line and "--no-verify" in line
    assert main(["run", "--bundle", str(b), _first_image(images), "--backend", "onnxruntime", "--no-verify"]) == 0
    bundle_mod.set_verify_default(True)
    assert main(["bench", "--bundle", str(b), "--batch", "1", "--iters", "1", "--warmup", "0", "--rounds", "1",
                 "--backend", "onnxruntime", "--no-plot", "--out", str(tmp_path / "bench")]) == 2
    assert "model.onnx" in one_line(capsys.readouterr().err)


def test_hash_cache_skips_rehashing_until_the_file_changes(tmp_path, bundle_dir, monkeypatch):
    b = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    (b / HASH_CACHE_FILE).unlink(missing_ok=True)
    calls: list[str] = []
    real = bundle_mod.sha256_file
    monkeypatch.setattr(bundle_mod, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    bundle_mod._memory_cache.clear()
    loaded = Bundle.load(b)
    loaded.path(loaded.entry("main"))
    assert len(calls) == 1 and (b / HASH_CACHE_FILE).is_file()
    bundle_mod._memory_cache.clear()  # a new process: only the cache file remains
    loaded = Bundle.load(b)
    loaded.path(loaded.entry("main"))
    assert len(calls) == 1
    os.utime(b / "model.onnx", ns=(time.time_ns(), time.time_ns()))  # touched: hashed again
    bundle_mod._memory_cache.clear()
    Bundle.load(b).path(loaded.entry("main"))
    assert len(calls) == 2


@pytest.mark.slow  # a child process
def test_read_only_bundle_caches_under_xdg(tmp_path, bundle_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = tmp_path / "src"
    shutil.copytree(bundle_dir, src)
    (src / HASH_CACHE_FILE).unlink(missing_ok=True)
    with tmpfs(tmp_path / "ro", "8m") as ro:
        shutil.copytree(src, ro / "b")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        bundle_mod._memory_cache.clear()
        loaded = Bundle.load(ro / "b")
        loaded.path(loaded.entry("main"))
        assert not (ro / "b" / HASH_CACHE_FILE).exists()
        assert list((tmp_path / "xdg" / "erudite-edge" / "sha256").glob("*.json"))


# -- full disk, read-only folder, killed export -----------------------------------------------

@pytest.mark.slow  # a child process
def test_export_onto_a_full_disk(tmp_path, run_dir, images, capsys):
    with tmpfs(tmp_path / "small", "24k") as small:
        assert _export(run_dir, small / "b", images) == 2
        line = one_line(capsys.readouterr().err)
        assert "no space left" in line and str(small / "b") in line
        assert list(small.iterdir()) == []  # nothing half-written


@pytest.mark.slow  # exports bundles
def test_export_with_injected_enospc(tmp_path, run_dir, images, capsys, monkeypatch):
    """Where no tmpfs can be mounted: the write itself fails with ENOSPC (injected into onnx.save_model)."""
    import onnx

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]))

    monkeypatch.setattr(onnx, "save_model", full)
    assert _export(run_dir, tmp_path / "b", images) == 2
    assert "no space left" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "b").exists() and not _leftovers(tmp_path)


@pytest.mark.slow  # a child process
def test_export_into_a_read_only_folder(tmp_path, run_dir, images, capsys):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert _export(run_dir, ro / "b", images) == 2
        line = one_line(capsys.readouterr().err)
        assert "read-only" in line and str(ro / "b") in line


@pytest.mark.slow  # a child process
def test_checkpoint_onto_a_full_disk(tmp_path, capsys):
    with tmpfs(tmp_path / "small", "64k") as small:
        (small / "run" / "last").mkdir(parents=True)
        (small / "run" / "last" / "marker").write_text("the previous checkpoint")
        model = build_model(CFG)
        from train.checkpoint import CheckpointWriteError

        with pytest.raises(CheckpointWriteError) as e:
            save_checkpoint(small / "run", "last", model, model_config=CFG, labels=LABELS,
                            preprocess=PreprocessSpec.square(32), extra={"epoch": 3},
                            train_state={"blob": torch.zeros(100_000)})
        assert "no space left" in str(e.value) and str(small / "run" / "last") in str(e.value)
        assert sorted(p.name for p in (small / "run").iterdir()) == ["last"]  # temp folder removed
        assert (small / "run" / "last" / "marker").is_file()  # previous one kept


EXPORT_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("sig,seed", [(signal.SIGKILL, 5), (signal.SIGTERM, 6)])
def test_killed_export_keeps_the_previous_bundle(tmp_path, run_dir, images, bundle_dir, sig, seed):
    b = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    before = json.loads((b / "bundle.json").read_text())
    proc = subprocess.Popen([sys.executable, "-m", "erudite_edge", "export", "onnx", "--checkpoint", str(run_dir),
                             "--out", str(b), "--images", str(images), "--parity-count", "4", "--overwrite"],
                            env=EXPORT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "exporting main -> model.onnx": torch is imported, the trace begins
    assert "exporting" in line or proc.poll() is not None, line
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    proc.send_signal(sig)
    rc = proc.wait(60)
    err = proc.stderr.read()
    Bundle.load(b, verify=True)  # the old bundle or the new one: whole either way
    if rc == 0:
        return
    if sig == signal.SIGTERM:
        assert rc == 130 and "interrupted" in err, (rc, err)
        assert not _leftovers(tmp_path)
        if "was written completely" in err:  # the signal came after the new bundle was renamed into place
            return
    else:
        from erudite_edge.core.fileio import remove_stale_temporaries

        remove_stale_temporaries(tmp_path, "b")  # what the next export does first
        assert not _leftovers(tmp_path)
    assert json.loads((b / "bundle.json").read_text()) == before


# -- schemas: bundle.json and the training YAML -----------------------------------------------

BAD_BUNDLE_FIELDS = [
    (lambda m: m.update(kind=3), "kind"),
    (lambda m: m.update(format_version="one"), "format_version"),
    (lambda m: m.update(opset="seventeen"), "opset"),
    (lambda m: m["labels"].update(datasets="ab"), "labels.datasets"),
    (lambda m: m["labels"].update(dataset_of_class=["x"] * len(m["labels"]["classes"])), "labels.dataset_of_class[0]"),
    (lambda m: m["preprocess"].update(input_size="big"), "preprocess.input_size"),
    (lambda m: m["preprocess"].update(mean=[0.5]), "preprocess.mean"),
    (lambda m: m["preprocess"].update(scale="tiny"), "preprocess.scale"),
    (lambda m: m.update(models={"main": "model.onnx"}), "models"),
    (lambda m: m["models"][0].update(sha256=5), "models[0].sha256"),
    (lambda m: m["models"][0].update(precision="fp64"), "models[0].precision"),
    (lambda m: m["models"][0].pop("file"), "models[0].file"),
]


@pytest.mark.parametrize("edit,key", BAD_BUNDLE_FIELDS, ids=[k for _, k in BAD_BUNDLE_FIELDS])
def test_bundle_json_field_of_the_wrong_type(tmp_path, bundle_dir, edit, key):
    b = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    meta = json.loads((b / "bundle.json").read_text())
    edit(meta)
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError) as e:
        Bundle.load(b)
    msg = str(e.value)
    assert "\n" not in msg and f": {key}: expected" in msg and str(b / "bundle.json") in msg


def test_bundle_json_wrong_type_on_the_command_line(tmp_path, bundle_dir, images, capsys):
    b = Path(shutil.copytree(bundle_dir, tmp_path / "b"))
    meta = json.loads((b / "bundle.json").read_text())
    meta["preprocess"]["input_size"] = [32, "wide"]
    (b / "bundle.json").write_text(json.dumps(meta))
    assert main(["run", "--bundle", str(b), _first_image(images)]) == 2
    assert "preprocess.input_size[1]: expected a valid integer" in one_line(capsys.readouterr().err)


BAD_YAML = [("epochs: ten", "epochs"), ("lr: fast", "lr"), ("pretrained: maybe", "pretrained"), ("data: 5", "data"),
            ("batch-per-dataset: [4]", "batch_per_dataset"), ("seed: 1.5", "seed"), ("variant: [ours]", "variant"),
            ("theta_lr: {a: 1}", "theta_lr")]


@pytest.mark.parametrize("line,key", BAD_YAML, ids=[k for _, k in BAD_YAML])
def test_training_yaml_field_of_the_wrong_type(tmp_path, capsys, line, key):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"backbone: tiny\n{line}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"{cfg}: {key}: expected" in err
    assert not (tmp_path / "r").exists()


# -- stop signals at awkward moments ------------------------------------------------------------


@pytest.mark.slow  # a child process
def test_a_swap_killed_between_its_renames_is_repaired(tmp_path):
    """SIGKILL between `atomic_directory`'s two renames leaves only `.b.old-PID`: the next writer puts it back."""
    from erudite_edge.core.fileio import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".b.old-{pid}").mkdir()
    (tmp_path / f".b.old-{pid}" / "bundle.json").write_text("{}")
    remove_stale_temporaries(tmp_path, "b")
    assert (tmp_path / "b" / "bundle.json").read_text() == "{}" and not _leftovers(tmp_path)
    (tmp_path / f".b.old-{pid}").mkdir()  # and where b is whole, the old copy goes
    remove_stale_temporaries(tmp_path, "b")
    assert not _leftovers(tmp_path) and (tmp_path / "b" / "bundle.json").is_file()


def test_a_stop_signal_during_the_swap_waits_for_it(tmp_path, monkeypatch):
    """A SIGTERM that arrives between the two renames is delivered after them: `target` is never missing."""
    from erudite_edge.cli.interruptible import terminate_as_interrupt
    from erudite_edge.core.fileio import atomic_directory

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_text("old")
    real_replace = os.replace
    seen = []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        seen.append(Path(dst).name)
        if len(seen) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, right between the two renames

    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "b", overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            monkeypatch.setattr(os, "replace", replace_then_signal)
    monkeypatch.undo()
    assert seen == [f".b.old-{os.getpid()}", "b"]
    assert (tmp_path / "b" / "new.txt").read_text() == "new" and not _leftovers(tmp_path)


def test_a_library_that_wraps_the_interrupt_still_ends_in_130(capsys):
    """A KeyboardInterrupt raised inside a library that turns it into its own exception (as torch's exporter
    may): after a real SIGTERM the command still ends with one line and exit 130, not a traceback."""
    from erudite_edge.cli.interruptible import interruptible

    @interruptible("nothing was written")
    def command():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt as e:
            raise RuntimeError("export failed") from e

    import typer

    with pytest.raises(typer.Exit) as e:
        command()
    assert e.value.exit_code == 130 and "interrupted; nothing was written" in capsys.readouterr().err


def test_a_signal_in_one_command_leaves_the_next_commands_errors_alone(tmp_path, capsys):
    """The stop-signal record is per command: in a process that runs several (the API, these tests), an
    interrupted command must not turn a later command's ordinary error into 'interrupted' (exit 130)."""
    import typer

    from erudite_edge.cli.interruptible import interruptible

    @interruptible("nothing was written")
    def interrupted():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    with pytest.raises(typer.Exit):
        interrupted()
    capsys.readouterr()
    assert main(["run", "--bundle", str(tmp_path / "missing"), str(tmp_path)]) == 2
    assert "interrupted" not in capsys.readouterr().err

"""Checkpoints under fault injection, with real processes and real signals.

Invariants, not examples: whenever a training run is killed (SIGKILL or SIGTERM, at a random point
chosen by a seed), the newest complete checkpoint loads, and resuming from it ends with weights
bit-identical to a run that was never interrupted. A process killed while it writes checkpoints leaves
the last complete one. A damaged or incomplete checkpoint is never taken: the previous complete one
is, with a warning.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from erudite_edge.cli.app import main
from real_processes import child_env
from tiny_data import make_mixture
from train.checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    verify_checkpoint_dir,
)

pytestmark = pytest.mark.slow  # trains runs to damage and resume (module fixture), training in child processes

EPOCHS = 4
TRAIN = ["--variant", "ours", "--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32",
         "--embed-dim", "16", "--workers", "0", "--no-progress", "--lr", "0.05", "--backbone-lr", "0.05",
         "--epochs", str(EPOCHS)]


def _env() -> dict[str, str]:
    # one thread everywhere: the straight and the resumed runs do the same float operations in the same order
    return child_env(one_thread=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "erudite_edge", *args]


def _train_args(data: list[str], out: Path) -> list[str]:
    return ["train", "--out", str(out), *TRAIN, *sum((["--data", d] for d in data), [])]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mixture(tmp_path_factory.mktemp("mix"), per_class=(6, 2))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data) -> Path:
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    args = [a for a in _train_args(data, out) if a != "--no-progress"]  # progress on: stderr is not a terminal
    done = subprocess.run(_cli(*args), env=_env(), check=True, capture_output=True, text=True, timeout=300)
    # a log gets one line per epoch, no progress-bar frames
    assert "\r" not in done.stderr, done.stderr
    assert [x.split(":")[0] for x in done.stderr.splitlines() if x.startswith("epoch")] == [f"epoch {i}/{EPOCHS}" for i in range(1, EPOCHS + 1)]
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


def _leftovers(run: Path) -> list[str]:
    return [p.name for p in run.glob(".*tmp-*")]


@pytest.mark.parametrize("sig,seed", [(signal.SIGKILL, 1), (signal.SIGKILL, 2), (signal.SIGTERM, 3)])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, data, straight, sig, seed):
    rng = random.Random(seed)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(*_train_args(data, run)), env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    lines: list[str] = []
    first_epoch = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("epoch 1/"):
                first_epoch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first_epoch.wait(240), "".join(lines)
    # somewhere in epochs 2..4 (training, evaluating or writing a checkpoint): an epoch of this tiny run takes
    # about 0.1 s on a quiet machine and longer on a loaded one, so the window is short
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(sig)
    rc = proc.wait(60)
    reader.join(10)
    finished = any(line.startswith("run saved") for line in lines)
    if sig == signal.SIGTERM and rc != 0 and not (finished and rc == -signal.SIGTERM):
        # (a SIGTERM that lands after the run has finished and released its handler ends the process by the
        # signal; everything was written by then)
        assert rc == 130 and "interrupted" in "".join(lines), "".join(lines)
        assert not _leftovers(run), "SIGTERM left temporary folders behind"

    ckpt = resume_checkpoint(run)  # the newest complete checkpoint: verified against its manifest
    assert ckpt.verified and 0 <= ckpt.epoch < EPOCHS
    if ckpt.epoch == EPOCHS - 1:  # the signal came after the end; nothing to resume, the run is whole
        result = run
    else:
        done = subprocess.run(_cli("train", "--out", str(run), "--resume", "--workers", "0", "--no-progress"),
                              env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"at epoch {ckpt.epoch + 2}/{EPOCHS}" in done.stderr
        result = run
    assert not _leftovers(result)
    a, b = _weights(straight), _weights(result)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    epochs = [json.loads(x)["epoch"] for x in (result / "history.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))


WRITER = r"""
import sys, torch
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from train.checkpoint import save_checkpoint
from train.model import build_model
from train.model_spec import ModelConfig

cfg = ModelConfig(variant="baseline", backbone="tiny", class_counts=[3, 2], embed_dim=64, pretrained=False)
model = build_model(cfg)
labels = LabelSpace.build(["a", "b"], [["x", "y", "z"], ["p", "q"]])
for epoch in range(1000):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(epoch))
    save_checkpoint(sys.argv[1], "last", model, model_config=cfg, labels=labels, preprocess=PreprocessSpec.square(32),
                    extra={"epoch": epoch}, train_state={"epoch": epoch, "blob": torch.full((1_000_000,), float(epoch))})
    print(epoch, flush=True)
"""


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_sigkill_while_writing_checkpoints_leaves_the_last_complete_one(tmp_path, seed):
    """A process that does nothing but write 4 MB checkpoints (fsynced), killed at a random moment: most kills land
    inside a write. The checkpoint found afterwards is complete, and no older than the last one reported."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = []
    deadline = time.monotonic() + 120
    target = random.Random(seed).randint(1, 4)
    while len(reported) < target and time.monotonic() < deadline:
        reported.append(int(proc.stdout.readline()))
    time.sleep(random.Random(seed).uniform(0.0, 0.4))
    proc.kill()
    proc.wait(30)
    reported += [int(x) for x in proc.stdout.read().split()]
    found = find_checkpoint(run, "last")
    manifest = verify_checkpoint_dir(found)
    ckpt = load_checkpoint(found)
    assert manifest["epoch"] == ckpt.epoch >= reported[-1]
    assert ckpt.train_state()["epoch"] == ckpt.epoch
    weights = ckpt.weights()
    assert all(float(w.flatten()[0]) == float(ckpt.epoch) for k, w in weights.items() if k.endswith("conv1.weight"))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, data) -> Path:
    run = tmp_path_factory.mktemp("two") / "run"
    args = _train_args(data, run)
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    return run


def _two_epoch_run(tmp_path: Path, two_epochs: Path) -> Path:
    """A fresh copy of a finished two-epoch run (last, last.prev, best), to damage."""
    return Path(shutil.copytree(two_epochs, tmp_path / "run"))


def test_damaged_last_falls_back_to_the_previous_with_a_warning(tmp_path, two_epochs, capsys):
    run = _two_epoch_run(tmp_path, two_epochs)
    capsys.readouterr()
    state = run / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # a torn write
    ckpt = resume_checkpoint(run, warn=lambda m: print("warning:", m, file=sys.stderr))
    assert ckpt.epoch == 0 and ckpt.path.parent.name == "last.prev"
    err = capsys.readouterr().err
    assert "state.pt: does not match the sha256" in err and "last.prev" in err
    # the CLI resumes from it and finishes the run
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--workers", "0", "--no-progress"]) == 0
    assert "using the previous complete checkpoint" in capsys.readouterr().err
    assert load_checkpoint(run / "last").epoch == 1


def test_incomplete_checkpoint_is_never_taken(tmp_path, two_epochs, capsys):
    run = _two_epoch_run(tmp_path, two_epochs)
    (run / "last" / "manifest.json").unlink()  # as if the writer was killed before the manifest
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        verify_checkpoint_dir(run / "last")
    assert find_checkpoint(run, "last").name == "last.prev"
    # with both damaged: one line, exit 2
    (run / "last.prev" / "model.safetensors").write_bytes(b"junk")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no previous complete checkpoint" in err[0]


def test_resume_from_best_and_from_a_path(tmp_path, two_epochs, capsys):
    run = _two_epoch_run(tmp_path, two_epochs)
    best_epoch = load_checkpoint(run / "best").epoch
    assert main(["train", "--out", str(run), "--resume-from", "best", "--epochs", "3", "--workers", "0", "--no-progress"]) == 0
    assert f"at epoch {best_epoch + 2}/3" in capsys.readouterr().err
    assert load_checkpoint(run / "last").epoch == 2
    assert main(["train", "--out", str(run), "--resume-from", str(run / "last.prev"), "--epochs", "3", "--workers", "0",
                 "--no-progress"]) == 0
    assert "last.prev" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume-from", str(tmp_path / "nowhere"), "--workers", "0"]) == 2


def test_older_run_layout_still_loads(tmp_path, two_epochs):
    """A run written before manifests (RUN/last.safetensors, last.json, last.state.pt) exports and resumes."""
    run = _two_epoch_run(tmp_path, two_epochs)
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_bytes((run / "run.json").read_bytes())
    for tag in ("last", "best"):
        (old / f"{tag}.safetensors").write_bytes((run / tag / "model.safetensors").read_bytes())
        (old / f"{tag}.json").write_bytes((run / tag / "checkpoint.json").read_bytes())
    (old / "last.state.pt").write_bytes((run / "last" / "state.pt").read_bytes())
    ckpt = load_checkpoint(old)
    assert not ckpt.verified and ckpt.path == old / "best.safetensors"
    assert resume_checkpoint(old).epoch == 1
    assert main(["train", "--out", str(old), "--resume", "--epochs", "3", "--workers", "0", "--no-progress"]) == 0
    assert load_checkpoint(old / "last").verified and load_checkpoint(old / "last").epoch == 2


def test_progress_bars_only_on_a_terminal(tmp_path, data):
    """On a terminal (a real pseudo-terminal here) the bar is drawn; the same command into a log gets none."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    args = _train_args(data, tmp_path / "run")
    args.remove("--no-progress")
    args[args.index("--epochs") + 1] = "1"
    proc = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(120) == 0
    os.close(controller)
    assert b"\r" in seen and b"step" in seen  # tqdm's frames


def test_best_catches_up_when_the_run_stopped_before_copying_it(tmp_path, two_epochs):
    run = _two_epoch_run(tmp_path, two_epochs)
    shutil.rmtree(run / "best")  # stopped after `last` was renamed into place, before `best` was copied from it
    metrics = load_checkpoint(run / "last").meta["metrics"]
    improved = metrics.get("val_mean_top1", metrics["train_top1"]) == metrics["best_score"]
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--workers", "0", "--no-progress"]) == 0
    assert (run / "best").exists() == improved
    if improved:
        assert load_checkpoint(run / "best").epoch == 1

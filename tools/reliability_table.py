"""Try hostile cases against the real `erudite-edge` command and write the table of outcomes to
benchmarks/results/reliability.md (and .json).

    python tools/reliability_table.py [--out benchmarks/results/reliability.md] [--keep DIR]

Each case is a real process (`python -m erudite_edge ...`) on a tiny trained run and its bundle, made
first in a temporary folder (tiny backbone, 32-px images; about a minute on 2 cores). A case passes when
the exit code is the one expected, stderr holds no traceback, an error is one line (`error: ...`), and
the case's own check of the files afterwards holds (nothing of the user's deleted, nothing half-written).
Full-disk and read-only cases mount a small tmpfs and are marked skipped where that is not allowed
(not root). Exit status: 0 when every case that ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16",
         "--workers", "0", "--no-progress", "--epochs", "2"]


@dataclass
class Outcome:
    area: str
    case: str
    expected: str
    rc: int | None = None
    message: str = ""
    ok: bool = False
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "erudite_edge", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def judge(o: Outcome, p: subprocess.CompletedProcess[str] | tuple[int, str], want_rc: int, check: bool = True,
          want_text: str | None = None) -> None:
    rc, err = (p.returncode, p.stderr) if isinstance(p, subprocess.CompletedProcess) else p
    o.rc = rc
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    o.message = (errors or warnings or [x for x in err.splitlines() if x.strip()][-1:] or [""])[0][:300]
    tb = "Traceback" in err
    o.ok = rc == want_rc and not tb and (rc == 0 or rc == 130 or len(errors) == 1) and check
    if want_text is not None and want_text not in err:
        o.ok = False
        o.notes.append(f"stderr lacks {want_text!r}")
    if tb:
        o.notes.append("traceback")
    if not check:
        o.notes.append("check of the files afterwards failed")


class Skipped(Exception):
    """A case that cannot run on this machine (its reason is recorded, the case is marked skipped)."""


@contextlib.contextmanager
def tmpfs(where: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at `where` for the block; Skipped where mounting is not allowed (not root)."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs", str(where)],
                       capture_output=True)
    if r.returncode != 0:
        raise Skipped("cannot mount tmpfs (not root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reliability.md")
    ap.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it (default: a temporary one).")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_data import make_mixture  # the same tiny image trees the tests use

    work = args.keep or Path(tempfile.mkdtemp(prefix="reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = make_mixture(work / "mix", per_class=(6, 2))
    datas = sum((["--data", d] for d in data), [])
    run, zoo_run = work / "run", work / "zoo-run"
    bundle, zoo = work / "bundle", work / "zoo"
    images = work / "mix" / "a" / "test"
    for p in (cli("train", "--out", str(run), "--variant", "ours", *TRAIN, *datas),
              cli("train", "--out", str(zoo_run), "--variant", "single", *TRAIN, *sum((["--data", d] for d in data[::-1]), [])),
              cli("export", "onnx", "--checkpoint", str(run), "--out", str(bundle), "--images", str(images), "--parity-count", "4"),
              cli("export", "zoo", "--checkpoint", str(zoo_run), "--out", str(zoo), "--images", str(images), "--parity-count", "4")):
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return 1
    an_image = str(sorted(images.rglob("*.png"))[0])
    results: list[Outcome] = []

    def case(area: str, name: str, expected: str) -> Callable[[Callable[[Outcome], None]], None]:
        def run_case(fn: Callable[[Outcome], None]) -> None:
            o = Outcome(area, name, expected)
            try:
                fn(o)
            except Skipped as e:
                o.skipped = str(e)
            except Exception as e:  # the harness itself failed: recorded, never hidden
                o.ok, o.notes = False, o.notes + [f"harness: {type(e).__name__}: {e}"]
            results.append(o)
            print(f"{'skip' if o.skipped else ('ok  ' if o.ok else 'FAIL')} {area}: {name} -> {o.rc} {o.message}", file=sys.stderr)

        return run_case

    def copy(src: Path, name: str) -> Path:
        dst = work / "cases" / name
        shutil.rmtree(dst, ignore_errors=True)
        return Path(shutil.copytree(src, dst))

    def train_past_epoch_1(r: Path, epochs: int) -> subprocess.Popen[str]:
        """A fresh `train --out r` of `epochs` epochs, returned running once it has reported epoch 1."""
        shutil.rmtree(r, ignore_errors=True)
        args = ["train", "--out", str(r), "--variant", "ours", *TRAIN, *datas]
        args[args.index("--epochs") + 1] = str(epochs)
        proc = subprocess.Popen([sys.executable, "-m", "erudite_edge", *args], env=ENV, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("epoch 1/"):
                break
        return proc

    # -- training ---------------------------------------------------------------------------------
    @case("train", "YAML field of the wrong type (epochs: ten)", "exit 2, key named")
    def _(o: Outcome) -> None:
        cfg = work / "bad.yaml"
        cfg.write_text("backbone: tiny\nepochs: ten\n")
        judge(o, cli("train", "--config", str(cfg), "--out", str(work / "x")), 2, want_text="epochs: expected")

    @case("train", "--config /dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("train", "--config", "/dev/null", "--out", str(work / "x")), 2)

    @case("train", "--data x=/dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("train", "--data", "x=/dev/null", "--out", str(work / "x"), *TRAIN), 2)

    @case("train", "SIGKILL after epoch 1, then --resume", "exit 0, run completes from the last complete checkpoint")
    def _(o: Outcome) -> None:
        r = work / "cases" / "killed"
        proc = train_past_epoch_1(r, epochs=3)
        proc.kill()
        proc.wait()
        p = cli("train", "--out", str(r), "--resume", "--workers", "0", "--no-progress")
        judge(o, p, 0, check=json.loads((r / "last" / "checkpoint.json").read_text())["epoch"] == 2, want_text="resuming")

    @case("train", "SIGTERM during training", "exit 130, no temporary folders")
    def _(o: Outcome) -> None:
        r = work / "cases" / "termed"
        proc = train_past_epoch_1(r, epochs=50)
        assert proc.stderr is not None
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        judge(o, (proc.wait(), err), 130, check=not leftovers(r) and (r / "last" / "manifest.json").is_file())

    @case("train", "--resume with a torn last/state.pt", "exit 0, warning, resumes from last.prev")
    def _(o: Outcome) -> None:
        r = copy(run, "torn")
        (r / "last" / "state.pt").write_bytes(b"torn")
        judge(o, cli("train", "--out", str(r), "--resume", "--epochs", "3", "--workers", "0", "--no-progress"), 0,
              want_text="using the previous complete checkpoint")

    @case("train", "--resume with last and last.prev both damaged", "exit 2")
    def _(o: Outcome) -> None:
        r = copy(run, "both-damaged")
        (r / "last" / "state.pt").write_bytes(b"torn")
        (r / "last.prev" / "model.safetensors").write_bytes(b"torn")
        judge(o, cli("train", "--out", str(r), "--resume", "--workers", "0"), 2)

    @case("train", "--resume-from best", "exit 0")
    def _(o: Outcome) -> None:
        r = copy(run, "from-best")
        judge(o, cli("train", "--out", str(r), "--resume-from", "best", "--epochs", "3", "--workers", "0", "--no-progress"), 0)

    @case("train", "--out on a full disk (64 KiB tmpfs)", "exit 2, path named, no temporary folders")
    def _(o: Outcome) -> None:
        with tmpfs(work / "cases" / "full-train", "64k") as fs:
            p = cli("train", "--out", str(fs / "r"), "--variant", "ours", *TRAIN, *datas)
            judge(o, p, 2, check=not (fs / "r").exists() or not leftovers(fs / "r"), want_text="no space left")

    @case("train", "--out on a read-only file system", "exit 2, path named")
    def _(o: Outcome) -> None:
        with tmpfs(work / "cases" / "ro-train", "1m", read_only=True) as fs:
            judge(o, cli("train", "--out", str(fs / "r"), "--variant", "ours", *TRAIN, *datas), 2, want_text="read-only")

    @case("eval", "best checkpoint damaged", "exit 0 on last, with a warning")
    def _(o: Outcome) -> None:
        r = copy(run, "eval-damaged")
        (r / "best" / "model.safetensors").write_bytes(b"x")
        judge(o, cli("eval", "--checkpoint", str(r), *datas, "--workers", "0"), 0, want_text="warning")

    # -- export -----------------------------------------------------------------------------------
    @case("export", "--checkpoint /dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("export", "onnx", "--checkpoint", "/dev/null", "--out", str(work / "x")), 2)

    @case("export", "--overwrite onto a folder that is not a bundle", "exit 2, the folder untouched")
    def _(o: Outcome) -> None:
        d = work / "cases" / "photos"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        (d / "holiday.jpg").write_bytes(b"mine")
        p = cli("export", "onnx", "--checkpoint", str(run), "--out", str(d), "--overwrite")
        judge(o, p, 2, check=(d / "holiday.jpg").read_bytes() == b"mine")

    @case("export", "--overwrite onto a file", "exit 2, the file untouched")
    def _(o: Outcome) -> None:
        f = work / "cases" / "notes.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("mine")
        judge(o, cli("export", "onnx", "--checkpoint", str(run), "--out", str(f), "--overwrite"), 2,
              check=f.read_text() == "mine")

    @case("export", "--overwrite onto an existing bundle", "exit 0")
    def _(o: Outcome) -> None:
        b = copy(bundle, "rebundle")
        judge(o, cli("export", "onnx", "--checkpoint", str(run), "--out", str(b), "--overwrite", "--images", str(images),
                     "--parity-count", "4"), 0)

    @case("export", "SIGTERM during export --overwrite", "exit 130, the old bundle intact, no temporaries")
    def _(o: Outcome) -> None:
        b = copy(bundle, "termed-bundle")
        before = (b / "bundle.json").read_text()
        proc = subprocess.Popen([sys.executable, "-m", "erudite_edge", "export", "onnx", "--checkpoint", str(run), "--out",
                                 str(b), "--overwrite", "--images", str(images)], env=ENV, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        proc.stderr.readline()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        rc = proc.wait()
        same = (b / "bundle.json").read_text() == before or rc == 0
        judge(o, (rc, err), 130 if rc != 0 else 0, check=same and not leftovers(b.parent))

    @case("export", "--out on a full disk (24 KiB tmpfs)", "exit 2, nothing left")
    def _(o: Outcome) -> None:
        with tmpfs(work / "cases" / "full-export", "24k") as fs:
            p = cli("export", "onnx", "--checkpoint", str(run), "--out", str(fs / "b"), "--images", str(images),
                    "--parity-count", "4")
            judge(o, p, 2, check=list(fs.iterdir()) == [], want_text="no space left")

    @case("export", "--out on a read-only file system", "exit 2")
    def _(o: Outcome) -> None:
        with tmpfs(work / "cases" / "ro-export", "1m", read_only=True) as fs:
            judge(o, cli("export", "onnx", "--checkpoint", str(run), "--out", str(fs / "b")), 2, want_text="read-only")

    @case("export", "int8 --calib empty folder", "exit 2")
    def _(o: Outcome) -> None:
        d = work / "cases" / "empty-calib"
        d.mkdir(parents=True, exist_ok=True)
        judge(o, cli("export", "int8", "--bundle", str(copy(bundle, "int8-empty")), "--calib", str(d)), 2)

    @case("export", "int8 --calib folder of undecodable .jpg files", "exit 2, not 'No data is collected.'")
    def _(o: Outcome) -> None:
        d = work / "cases" / "junk-calib"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (d / f"{i}.jpg").write_bytes(b"not a jpeg")
        p = cli("export", "int8", "--bundle", str(copy(bundle, "int8-junk")), "--calib", str(d))
        judge(o, p, 2, check="No data is collected" not in p.stderr, want_text="could be read")

    @case("export", "int8 --calib /dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("export", "int8", "--bundle", str(copy(bundle, "int8-null")), "--calib", "/dev/null"), 2)

    @case("export", "fp16 --bundle /dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("export", "fp16", "--bundle", "/dev/null"), 2)

    # -- run / bench --------------------------------------------------------------------------------
    @case("run", "tampered model.onnx (one byte flipped)", "exit 2 naming the file")
    def _(o: Outcome) -> None:
        b = copy(bundle, "tampered")
        m = bytearray((b / "model.onnx").read_bytes())
        m[-10] ^= 0xFF
        (b / "model.onnx").write_bytes(bytes(m))
        judge(o, cli("run", "--bundle", str(b), an_image), 2, want_text="model.onnx")

    @case("run", "tampered model.onnx with --no-verify", "exit 0")
    def _(o: Outcome) -> None:
        b = copy(bundle, "tampered-nv")
        m = bytearray((b / "model.onnx").read_bytes())
        m[-10] ^= 0xFF
        (b / "model.onnx").write_bytes(bytes(m))
        judge(o, cli("run", "--bundle", str(b), an_image, "--no-verify"), 0)

    @case("run", "bundle.json field of the wrong type (input_size: \"big\")", "exit 2, key named")
    def _(o: Outcome) -> None:
        b = copy(bundle, "bad-field")
        meta = json.loads((b / "bundle.json").read_text())
        meta["preprocess"]["input_size"] = "big"
        (b / "bundle.json").write_text(json.dumps(meta))
        judge(o, cli("run", "--bundle", str(b), an_image), 2, want_text="preprocess.input_size")

    @case("run", "bundle.json cut in half", "exit 2")
    def _(o: Outcome) -> None:
        b = copy(bundle, "half-json")
        text = (b / "bundle.json").read_text()
        (b / "bundle.json").write_text(text[: len(text) // 2])
        judge(o, cli("run", "--bundle", str(b), an_image), 2)

    @case("run", "--bundle /dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("run", "--bundle", "/dev/null", an_image), 2)

    @case("run", "/dev/null as the source", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("run", "--bundle", str(bundle), "/dev/null"), 2)

    @case("bench", "zoo of the same data sets in another order", "exit 2, says 'another order'")
    def _(o: Outcome) -> None:
        judge(o, cli("bench", "--bundle", str(bundle), "--zoo", str(zoo), "--batch", "1", "--iters", "1", "--no-plot",
                     "--out", str(work / "cases" / "bench")), 2, want_text="another order")

    @case("bench", "--bundle /dev/null", "exit 2")
    def _(o: Outcome) -> None:
        judge(o, cli("bench", "--bundle", "/dev/null", "--no-plot", "--out", str(work / "cases" / "bench")), 2)

    seconds = time.perf_counter() - t0
    write_table(results, args.out, seconds)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    ran = [r for r in results if not r.skipped]
    print(f"{sum(r.ok for r in ran)}/{len(ran)} cases as expected ({len(results) - len(ran)} skipped); "
          f"wrote {args.out}", file=sys.stderr)
    return 0 if all(r.ok for r in ran) else 1


def write_table(results: list[Outcome], out: Path, seconds: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    ran = [r for r in results if not r.skipped]
    lines = [
        "# Hostile cases tried against `erudite-edge`",
        "",
        "Regenerate with `python tools/reliability_table.py` (real processes on a tiny trained run and its bundle; "
        "full-disk and read-only cases mount a small tmpfs, which needs root).",
        f"{sum(r.ok for r in ran)} of {len(ran)} cases as expected, {len(results) - len(ran)} skipped; "
        f"{seconds:.0f} s on this machine.",
        "",
        "A case is as expected when the exit code matches, stderr holds no traceback, an error is one line, and the "
        "files afterwards are as they should be (nothing of the user's deleted, nothing half-written).",
        "",
        "| area | case | expected | exit | first error / warning line | as expected |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        msg = r.message.replace("|", "\\|").replace(str(Path(tempfile.gettempdir())), "$TMP")
        verdict = f"skipped: {r.skipped}" if r.skipped else ("yes" if r.ok else "**no** " + "; ".join(r.notes))
        lines.append(f"| {r.area} | {r.case} | {r.expected} | {'' if r.rc is None else r.rc} | {msg} | {verdict} |")
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())

"""A run's resources (erudite_edge.inference.resources): the memory budget that bounds --batch (one line, exit 2,
before the model loads), the model's batch profile that lowers it (one warning), the pixel limit on image
files (one warning per skipped image; an error with --strict), and queued items that hold their model input,
not their decoded frame. Real bundles (tiny ONNX models on ONNX Runtime), real image files, the real CLI."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.api import Classifier
from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.preprocess import load_image, preprocess
from erudite_edge.errors import ImageTooLargeError, UsageError
from erudite_edge.inference.models import load_model
from erudite_edge.inference.pipeline import Pipeline, Prefetcher
from erudite_edge.inference.resources import check_memory, largest_batch, parse_size, pipeline_bytes
from erudite_edge.inference.run_options import RunOptions
from erudite_edge.outputs.results import Result, Sink
from erudite_edge.sources.base import Item
from erudite_edge.sources.open import open_source
from onnx_fixtures import COLORS, solid_image, write_image


def one_bit_png(path: Path, w: int, h: int) -> Path:
    """A real, valid black-and-white PNG of w x h pixels, a few KB on disk (rows of zeros compress well)."""
    row = b"\x00" + bytes((w + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 24x20 images, one per colour, and a 9000x9000 PNG (81 MP: over the default 64 MP limit)."""
    folder = tmp_path_factory.mktemp("big")
    for name, c in COLORS.items():
        write_image(folder / f"{name}.png", solid_image(c))
    one_bit_png(folder / "huge.png", 9000, 9000)
    assert (folder / "huge.png").stat().st_size < 100_000
    return folder


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# -- the memory budget ----------------------------------------------------------------------------------
def test_batch_over_the_budget_is_one_line_exit_2_and_names_the_batch_that_fits(
        erudite: Bundle, big_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder / "red.png"), "--batch", "32", "--max-memory", "100K",
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --batch 32: the pipeline's input buffers would take "), err
    fits = largest_batch(erudite.preprocess, None, 100 * 1024, 32)
    assert 1 <= fits < 32
    assert "over the memory budget of 100.0 KiB (--max-memory 100.0 KiB)" in lines[0]
    assert lines[0].endswith(f"the largest batch within it is {fits}: lower --batch")
    assert not out.exists()  # the result file opened before the check is gone: nothing was written
    assert "backend:" not in err  # refused before the model loaded
    # the batch it names runs under the same budget
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder / "red.png"), "--batch", str(fits),
               "--max-memory", "100K", "-o", str(out)])
    assert rc == 0 and [r["label"] for r in records(out)] == ["red"]


def test_budget_too_small_for_any_batch_and_bad_sizes(erudite: Bundle, big_folder: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder), "--max-memory", "1K"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.endswith("not even --batch 1 fits: raise --max-memory"), err
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder), "--max-memory", "2 lots"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --max-memory 2 lots: give a size such as 512M, 2G or 1.5G (K, M, G, T: powers of 1024)"


def test_default_budget_is_a_share_of_available_memory(erudite: Bundle) -> None:
    """--batch 100000 of 224 px float32 inputs (the issue's 18.7 GB run) needs 280 GiB of buffers: refused by
    the default budget, whatever this machine has; the API says the same (UsageError) before loading."""
    spec = erudite.preprocess.__class__.square(224)
    with pytest.raises(UsageError) as e:
        check_memory(RunOptions(batch=100_000), spec)
    assert "over the memory budget of" in str(e.value) and "a quarter of the" in str(e.value)
    with pytest.raises(UsageError, match="--batch 100000: the pipeline's input buffers"):
        Classifier(erudite.root, options=RunOptions(batch=100_000, max_memory=1 << 20))


@pytest.mark.parametrize("batch,workers", [(1, 1), (3, 2), (8, None), (32, 4), (5, 8)])
def test_the_estimate_is_what_the_pipeline_allocates(erudite: Bundle, batch: int, workers: int | None) -> None:
    model = load_model(erudite, announce=None)
    try:
        pipe = Pipeline(model, erudite.labels, erudite.preprocess, batch=batch, workers=workers, progress=False)
        assert pipe.ring.nbytes == pipeline_bytes(erudite.preprocess, batch, workers)
        pipe.close()
    finally:
        model.close()


def test_parse_size() -> None:
    assert parse_size("512M") == 512 << 20 and parse_size("2GiB") == 2 << 30 and parse_size("1.5g") == 3 << 29
    assert parse_size("100k") == 102400 and parse_size("4096") == 4096 and parse_size("1 TB") == 1 << 40
    for bad in ("", "0", "-1", "2X", "M", "1e9"):
        with pytest.raises(UsageError):
            parse_size(bad)


# -- the model's batch profile ---------------------------------------------------------------------------
def test_batch_above_the_profile_is_lowered_with_one_warning(erudite: Bundle, zoo: Bundle) -> None:
    """ONNX Runtime's sessions take batches of at most 32 (the TensorRT EP profile they are set up with): a
    larger --batch runs batches of 32, said once."""
    said: list[str] = []
    with Classifier(erudite.root, options=RunOptions(batch=64), warn=said.append) as clf:
        assert clf.batch == 32 and clf.options.batch == 32
        images = [solid_image(COLORS["red"]) for _ in range(40)]
        preds = clf.predict(images, color="RGB")
        preds += clf.predict(images, color="RGB")
    assert len(preds) == 80 and max(p.timings.batch for p in preds) == 32
    assert said == ["--batch 64: the onnxruntime fp32 model takes at most 32 images per call (its batch profile); "
                    "running batches of 32"]
    with Classifier(zoo.root, options=RunOptions(batch=33), warn=said.append) as clf:
        assert clf.batch == 32 and clf.model.max_batch == 32
    with Classifier(erudite.root, options=RunOptions(batch=32), warn=said.append) as clf:
        assert clf.batch == 32
    assert len(said) == 2  # the zoo's; none at the profile's own size


# -- the pixel limit --------------------------------------------------------------------------------------
def test_too_large_image_skipped_with_one_warning(erudite: Bundle, big_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    assert sorted(r["label"] for r in records(out)) == sorted(COLORS)
    assert warnings_of(err) == [f"warning: {big_folder / 'huge.png'}: 9000x9000 pixels (81.0 MP), over the limit of "
                                "64000000 (64.0 MP); raise --max-pixels to classify it; skipped"]
    assert "skipped (bad files)" in err


def test_max_pixels_lowered_skips_each_image_once(erudite: Bundle, big_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder), "--max-pixels", "479", "-o", str(out)])
    err = capsys.readouterr().err
    # every image skipped: the run says so after the summary and exits 1
    assert rc == 1 and records(out) == []
    assert err.strip().splitlines()[-1] == ("error: nothing was classified: 5 file(s) skipped (undecodable or over "
                                            "--max-pixels)")
    warned = warnings_of(err)
    assert len(warned) == 5 and all("over the limit of 479" in w and w.endswith("; skipped") for w in warned)
    assert sum("24x20 pixels" in w for w in warned) == 4
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder), "--max-pixels", "480", "-o", str(out),
               "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 0 and len(records(out)) == 4 and len(warnings_of(err)) == 1


def test_too_large_image_is_an_error_under_strict(erudite: Bundle, big_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.jsonl"
    rc = main(["run", "--bundle", str(erudite.root), str(big_folder), "--strict", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {big_folder / 'huge.png'}: 9000x9000 pixels (81.0 MP), over the limit of 64000000 "
                      "(64.0 MP); raise --max-pixels to classify it (--strict stops at the first bad file)"]


def test_api_too_large_is_an_error_item_of_its_kind(erudite: Bundle, big_folder: Path) -> None:
    with Classifier(erudite.root) as clf:
        [huge] = clf.predict(str(big_folder / "huge.png"))
        assert huge.error is not None and huge.error.kind == "too_large" and huge.label == ""
        with pytest.raises(ImageTooLargeError) as e:
            clf.predict(str(big_folder / "huge.png"), on_error="raise")
        assert e.value.kind == "too_large"
        assert [p.label for p in clf.predict(str(big_folder / "red.png"))] == ["red"]
    with Classifier(erudite.root, options=RunOptions(max_pixels=100)) as clf:
        with pytest.raises(ImageTooLargeError):
            clf.predict(str(big_folder / "red.png"), on_error="raise")
        streamed = list(clf.predict_stream(big_folder))  # every image over the limit: one error item each
        assert streamed and all(p.error is not None and p.error.kind == "too_large" for p in streamed)


# -- queued items hold their model input, not their frame ------------------------------------------------
@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for i, (name, c) in enumerate(COLORS.items()):
        for j in range(3):
            write_image(folder / f"{name}_{j}.png", solid_image(c, h=90, w=160, noise=10, seed=10 * i + j))
    return folder


def test_queued_items_release_their_frame(erudite: Bundle, frames_folder: Path) -> None:
    """Items prepared ahead of the model (the Prefetcher's queue) carry no decoded frame, only their slot of the
    input ring, which holds exactly what preprocessing the file gives."""
    from concurrent.futures import ThreadPoolExecutor

    model = load_model(erudite, announce=None)
    pipe = Pipeline(model, erudite.labels, erudite.preprocess, batch=4, workers=2, progress=False)
    src = open_source(str(frames_folder))
    with ThreadPoolExecutor(2) as pool:
        feeder = Prefetcher(src, erudite.preprocess, pool, pipe.depth, ring=pipe.ring, keep_image=False)
        try:
            batch = next(feeder.batches(4, greedy=False))
            assert len(batch) == 4
            for p in batch:
                assert p.item.ok and p.item.error is None
                assert p.item.image is None  # the 160x90 frame is gone once resized
                assert p.tensor is not None and np.shares_memory(p.tensor, pipe.ring.array)
                np.testing.assert_allclose(p.tensor, preprocess(load_image(p.item.name), erudite.preprocess), atol=1e-6)
        finally:
            feeder.stop()
    pipe.close()
    model.close()


class Recorder(Sink):
    """A real sink that keeps what each written item still holds."""

    def __init__(self, needs_image: bool):
        self.needs_image = needs_image
        self.images: list[np.ndarray | None] = []

    def write(self, result: Result, item: Item) -> None:
        self.images.append(item.image)


def test_frames_kept_only_for_an_output_that_draws(erudite: Bundle, frames_folder: Path, tmp_path: Path) -> None:
    model = load_model(erudite, announce=None)
    try:
        for needs in (False, True):
            sink = Recorder(needs)
            pipe = Pipeline(model, erudite.labels, erudite.preprocess, batch=4, progress=False, handle_signals=False)
            summary = pipe.run(open_source(str(frames_folder)), [sink])
            pipe.close()
            assert summary.frames == 12 and len(sink.images) == 12
            if needs:
                assert all(im is not None and im.shape == (90, 160, 3) for im in sink.images)
            else:
                assert all(im is None for im in sink.images)
    finally:
        model.close()
    # --save (an annotated image folder) still gets every frame, at its own size
    saved = tmp_path / "annotated"
    assert main(["run", "--bundle", str(erudite.root), str(frames_folder), "--batch", "4", "--save", str(saved),
                 "-o", str(tmp_path / "p.jsonl")]) == 0
    files = sorted(saved.iterdir())
    assert len(files) == 12 and all(load_image(f).shape == (90, 160, 3) for f in files)

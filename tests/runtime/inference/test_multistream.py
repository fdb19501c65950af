"""Several sources, one model (issue 29): the batcher (one frame per stream, round-robin, the batch timeout,
a slow or ended stream never stalls the others) and the multi-stream pipeline through
Classifier.predict_streams, on real sources: testsrc:// cameras, real video files, real image folders."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from erudite_edge.api import Classifier
from erudite_edge.core.bundle import Bundle
from erudite_edge.errors import UsageError
from erudite_edge.inference.batcher import StreamBatcher, StreamOptions, default_timeout_ms
from erudite_edge.sources.every_frame import EveryFrame
from erudite_edge.sources.open import open_source
from onnx_fixtures import COLORS, solid_image, write_image, write_video


def _folder(root: Path, color: str, n: int) -> Path:
    for i in range(n):
        write_image(root / f"{color}_{i:02d}.png", solid_image(COLORS[color]))
    return root


def _wait(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_default_timeout_is_one_frame_of_the_fastest_stream() -> None:
    assert default_timeout_ms([30.0, None, 60.0]) == pytest.approx(1000 / 60)
    assert default_timeout_ms([None]) == pytest.approx(1000 / 30)  # unknown rates count as 30 fps
    assert StreamOptions().timeout_s([10.0, 25.0]) == pytest.approx(0.04)
    assert StreamOptions(5).timeout_s([10.0]) == pytest.approx(0.005)
    with pytest.raises(UsageError, match="batch-timeout-ms -1"):
        StreamOptions(-1)


def test_round_robin_no_stream_starves(tmp_path: Path) -> None:
    """Three folders always ready, batches of 2: every batch holds at most one item of a stream, each
    stream's items come in order, and no stream falls more than one item behind another at any point
    (a batcher that always scans from stream 0 starves stream 2 until the others end)."""
    names = ("red", "blue", "cyan")
    readers = []
    for c in names:
        src = open_source(str(_folder(tmp_path / c, c, 6)))
        readers.append(EveryFrame(src, depth=10))
    _wait(lambda: all(r.read == 6 for r in readers))  # all queued: which stream is ready never depends on timing
    batcher = StreamBatcher(readers, size=2, timeout_s=5.0, interrupt=threading.Event())
    seen: dict[int, list[str]] = defaultdict(list)
    for batch in batcher.batches():
        streams = [i for i, _ in batch]
        assert len(batch) <= 2 and len(set(streams)) == len(streams)
        for i, item in batch:
            seen[i].append(Path(item.name).name)
        counts = [len(seen[i]) for i in range(3)]
        if min(counts) < 6:  # while every stream still has items
            assert max(counts) - min(counts) <= 1, counts
    assert {i: v for i, v in seen.items()} == {i: [f"{c}_{k:02d}.png" for k in range(6)] for i, c in enumerate(names)}
    assert not any(batcher.open)


@pytest.mark.slow  # streams that stall for seconds
def test_slow_and_ended_streams_do_not_stall_the_others() -> None:
    """A 30 fps camera beside a 2 fps one and one that dies after 3 frames: the fast one's frames go out at
    its own rate (partial batches after the timeout), the dead one is closed and reported, the run goes on."""
    fast = open_source("testsrc://30", reconnect=0)
    slow = open_source("testsrc://2", reconnect=0)
    dying = open_source("testsrc://30?frames=3", reconnect=0)
    sources = [fast, slow, dying]
    ended: list[int] = []
    stop = threading.Event()
    batcher = StreamBatcher([s.latest() for s in sources], size=3, timeout_s=0.01, interrupt=stop,
                            on_end=lambda i, err: ended.append(i))
    got: Counter[int] = Counter()
    t0 = time.monotonic()
    try:
        for batch in batcher.batches():
            assert len({i for i, _ in batch}) == len(batch)
            got.update(i for i, _ in batch)
            if time.monotonic() - t0 > 1.5:
                break
    finally:
        for s in sources:
            s.stop()
    assert ended == [2] and batcher.open == [True, True, False]
    assert 1 <= got[2] <= 3
    # ~45 at 30 fps (fewer on a loaded machine: frames not taken in time are dropped); a batch that waited for
    # the 2 fps camera would give ~3
    assert got[0] >= 15, got
    assert 1 <= got[1] <= 5, got
    assert batcher.partial > 0


def test_predict_streams_files_and_a_camera(erudite: Bundle, tmp_path: Path) -> None:
    """A testsrc camera, a video file and an image folder in one call: every result names its stream, each
    stream numbers its results from 0 without gaps, files keep every frame (the camera's frames not taken in
    time are dropped and counted), and a batch holds at most one frame per stream."""
    video = write_video(tmp_path / "red.mp4", [COLORS["red"]] * 15)
    folder = _folder(tmp_path / "cyan", "cyan", 5)
    with Classifier(erudite, backend="onnxruntime", batch=8) as clf:
        preds = list(clf.predict_streams(["testsrc://30?frames=20&colors=0000ff", video, folder], reconnect=0))
        summary = clf.last_summary
    by: dict[int, list] = defaultdict(list)
    for p in preds:
        by[p.stream].append(p)
        assert 1 <= p.timings.batch <= 3
    assert [len(by[i]) for i in range(1, 3)] == [15, 5] and 1 <= len(by[0]) <= 20
    assert {p.label for p in by[0]} == {"blue"} and {p.label for p in by[1]} == {"red"}
    assert {p.label for p in by[2]} == {"cyan"}
    assert [p.index for p in by[1]] == list(range(15))
    frames = [int(p.source.split(":")[1]) for p in by[0]]  # frame:N, in capture order
    assert frames == sorted(frames)
    assert summary is not None and [s.frames for s in summary.streams] == [len(by[0]), 15, 5]
    assert summary.streams[0].frames + summary.streams[0].dropped == 20 and summary.streams[1].dropped == 0
    assert summary.frames == len(preds) and summary.end_reason == "all 3 streams ended"
    assert summary.streams[0].live and not summary.streams[1].live
    d = summary.to_dict()
    assert [s["uri"] for s in d["streams"]] == ["testsrc://30?frames=20&colors=0000ff", str(video), str(folder)]


def test_smoothing_stays_within_its_stream(erudite: Bundle, tmp_path: Path) -> None:
    """--smooth averages a stream's own last frames: a red video beside a blue one stays red and blue (one
    shared window would average red with blue frames)."""
    red = write_video(tmp_path / "red.mp4", [COLORS["red"]] * 12)
    blue = write_video(tmp_path / "blue.mp4", [COLORS["blue"]] * 12)
    with Classifier(erudite, backend="onnxruntime", smooth=4) as clf:
        preds = list(clf.predict_streams([red, blue]))
    assert len(preds) == 24
    assert {(p.stream, p.label) for p in preds} == {(0, "red"), (1, "blue")}
    assert min(p.confidence for p in preds) > 0.8


def test_a_folder_stream_is_not_smoothed_and_limit_counts_all_streams(erudite: Bundle, tmp_path: Path) -> None:
    """--smooth leaves a stream of separate images alone (a yellow image after red ones stays yellow), and
    --limit counts the results of every stream together."""
    folder = tmp_path / "imgs"
    for i, c in enumerate(["red", "red", "red", "yellow"]):
        write_image(folder / f"{i}_{c}.png", solid_image(COLORS[c]))
    red = write_video(tmp_path / "red.mp4", [COLORS["red"]] * 6)
    with Classifier(erudite, backend="onnxruntime", smooth=4) as clf:
        preds = list(clf.predict_streams([folder, red]))
        assert [p.label for p in preds if p.stream == 0] == ["red", "red", "red", "yellow"]
        limited = list(clf.predict_streams([folder, red], limit=5))
        assert len(limited) == 5 and {p.stream for p in limited} == {0, 1}
        assert clf.last_summary is not None and clf.last_summary.end_reason == "--limit 5 reached"


def test_predict_streams_wants_a_list(erudite: Bundle) -> None:
    with Classifier(erudite, backend="onnxruntime") as clf:
        with pytest.raises(UsageError, match="list of sources"):
            next(iter(clf.predict_streams("testsrc://30")))  # type: ignore[arg-type]

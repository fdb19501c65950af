"""Sources: video files standing in for cameras, reconnects, folders, globs, bad files, URIs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from erudite_edge.core.preprocess import decode_image
from erudite_edge.errors import BadImageError, SourceError
from erudite_edge.sources.base import read_image_item
from erudite_edge.sources.capture import CaptureSource, csi_pipeline, gstreamer_available
from erudite_edge.sources.files import ImageFilesSource, list_images
from erudite_edge.sources.open import open_source
from live_openers import opener_sequence
from onnx_fixtures import COLORS, solid_image, write_bad_files, write_image, write_video


def _mean(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, 3).mean(axis=0)


# ------------------------------------------------------------------------------------------------
# Video files (stand-ins for cameras)
# ------------------------------------------------------------------------------------------------
def test_video_file_frames_names_and_end(tmp_path: Path) -> None:
    colors = [COLORS["red"], COLORS["blue"], COLORS["yellow"], COLORS["cyan"], COLORS["red"]]
    video = write_video(tmp_path / "clip.mp4", colors, size=(32, 24))
    src = open_source(str(video))
    assert isinstance(src, CaptureSource) and src.kind == "video" and not src.live
    assert src.length == len(colors)
    items = list(src)
    assert [it.name for it in items] == [f"frame:{i}" for i in range(len(colors))]
    assert [it.index for it in items] == list(range(len(colors)))
    for it, c in zip(items, colors):
        assert it.ok and it.image is not None
        assert it.image.shape == (24, 32, 3) and it.image.dtype == np.uint8
        # RGB order, as in training (the codec shifts colours a little)
        assert np.abs(_mean(it.image) - np.asarray(c)).max() < 40
    assert src.end_reason == "end of video"


def test_live_source_reconnects_then_gives_up(tmp_path: Path) -> None:
    clip = str(write_video(tmp_path / "cam.mp4", [COLORS["red"]] * 3))
    missing = str(tmp_path / "gone.mp4")
    opened: list[str] = []
    warnings: list[str] = []
    src = CaptureSource("v4l2:///dev/video9", opener_sequence([clip, clip, missing], opened), kind="camera",
                        live=True, open_error="cannot open", reconnect=2, backoff=0.0, warn=warnings.append)
    assert src.length is None  # live: no known length
    items = list(src)
    # 3 frames, the stream "drops", the reconnect gets 3 more, then it is gone for good
    assert [it.name for it in items] == [f"frame:{i}" for i in range(6)]
    assert opened == [clip, clip, missing, missing]
    assert src.reconnects == 3
    assert "could not be reopened after 2 attempts" in src.end_reason
    assert any("reconnecting (attempt 1/2)" in w for w in warnings)


def test_live_source_without_reconnects_stops_at_first_gap(tmp_path: Path) -> None:
    clip = str(write_video(tmp_path / "cam.mp4", [COLORS["blue"]] * 2))
    warnings: list[str] = []
    src = CaptureSource("rtsp://cam/stream", lambda: cv2.VideoCapture(clip), kind="stream", live=True,
                        open_error="x", reconnect=0, warn=warnings.append)
    assert len(list(src)) == 2
    assert src.end_reason == "rtsp://cam/stream stopped delivering frames"
    assert warnings == [src.end_reason]


def test_stop_ends_a_source_early(tmp_path: Path) -> None:
    clip = str(write_video(tmp_path / "cam.mp4", [COLORS["blue"]] * 6))
    src = open_source(clip)
    got = []
    for it in src:
        got.append(it)
        if len(got) == 2:
            src.stop()
    assert len(got) == 2


def test_capture_that_does_not_open_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open camera"):
        CaptureSource("v4l2:///dev/video9", lambda: cv2.VideoCapture(str(tmp_path / "no.mp4")), kind="camera",
                      live=True, open_error="cannot open camera /dev/video9")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot open video"):
        open_source(str(junk))


# ------------------------------------------------------------------------------------------------
# Files, folders, globs
# ------------------------------------------------------------------------------------------------
def test_folder_listing_recursive_and_ignored(tmp_path: Path) -> None:
    write_image(tmp_path / "b.png", solid_image(COLORS["red"]))
    write_image(tmp_path / "a.jpg", solid_image(COLORS["blue"]))
    write_image(tmp_path / "sub" / "c.png", solid_image(COLORS["cyan"]))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")

    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFilesSource)
    assert [Path(p).name for p in src.paths] == ["a.jpg", "b.png"]
    assert src.ignored == 1 and src.length == 2
    items = list(src)
    assert [it.name for it in items] == src.paths
    assert [it.relname for it in items] == ["a.jpg", "b.png"]
    assert np.abs(_mean(items[1].image) - np.asarray(COLORS["red"])).max() < 1  # PNG: exact, RGB

    rec = open_source(str(tmp_path), recursive=True)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in rec.paths] == ["a.jpg", "b.png", "sub/c.png"]
    assert [it.relname for it in rec][-1] == "sub/c.png"


def test_empty_folder_suggests_recursive(tmp_path: Path) -> None:
    write_image(tmp_path / "sub" / "c.png", solid_image(COLORS["cyan"]))
    with pytest.raises(SourceError, match="--recursive"):
        open_source(str(tmp_path))
    paths, ignored, has_subdirs = list_images(str(tmp_path), recursive=True)
    assert len(paths) == 1 and ignored == 0


def test_glob_and_single_image(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", solid_image(COLORS["red"]))
    write_image(tmp_path / "other.jpg", solid_image(COLORS["red"]))
    src = open_source(str(tmp_path / "img*.png"))
    assert [Path(p).name for p in src.paths] == ["img0.png", "img1.png", "img2.png"]
    single = open_source(str(tmp_path / "other.jpg"))
    assert isinstance(single, ImageFilesSource) and single.length == 1
    with pytest.raises(SourceError, match="matches no files"):
        open_source(str(tmp_path / "*.webp"))


def test_missing_source_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SourceError, match="unsupported URI scheme"):
        open_source("ftp://host/x")
    with pytest.raises(SourceError, match="not both"):
        open_source("x", camera=0)


def test_csi_pipeline_and_gstreamer_message() -> None:
    p = csi_pipeline(1, 640, 480, 15)
    assert "nvarguscamerasrc sensor-id=1" in p and "width=640,height=480,framerate=15/1" in p
    assert p.endswith("appsink drop=1 max-buffers=1")
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer; the no-GStreamer message cannot show")
    with pytest.raises(SourceError) as e:
        open_source("csi://0")
    msg = str(e.value)
    assert "GStreamer" in msg and "sudo apt install nvidia-opencv" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------------
# Bad files: undecodable ones carry their error, odd modes decode to RGB uint8
# ------------------------------------------------------------------------------------------------
def test_bad_files_are_items_with_errors_odd_modes_decode(tmp_path: Path) -> None:
    bad, odd = write_bad_files(tmp_path)
    for name in bad:
        with pytest.raises(BadImageError):
            decode_image((tmp_path / name).read_bytes(), name)
        item = read_image_item(0, str(tmp_path / name), name)
        assert not item.ok and isinstance(item.error, BadImageError) and item.image is None
        assert name in str(item.error)
    for name, color in odd.items():
        item = read_image_item(0, str(tmp_path / name), name)
        assert item.ok, item.error
        assert item.image.dtype == np.uint8 and item.image.shape == (12, 14, 3)
        if color is not None:
            assert np.abs(_mean(item.image) - np.asarray(color)).max() < 30, name


def test_first_pipeline_that_opens_wins(tmp_path: Path) -> None:
    from erudite_edge.sources.capture import _capture, _first_that_opens

    video = write_video(tmp_path / "v.mp4", [COLORS[next(iter(COLORS))]] * 3, size=(32, 24))
    cap = _first_that_opens(_capture(str(tmp_path / "absent.avi"), cv2.CAP_ANY), _capture(str(video), cv2.CAP_ANY))()
    assert cap.isOpened()
    cap.release()
    assert not _first_that_opens(_capture(str(tmp_path / "absent.avi"), cv2.CAP_ANY))().isOpened()


def test_capture_mode_fourcc_and_bayer_hint(tmp_path: Path) -> None:
    from erudite_edge.sources.capture import bayer_hint, capture_mode, fourcc_str
    from erudite_edge.sources.v4l2_modes import describe_modes

    video = write_video(tmp_path / "v.mp4", [COLORS["red"]] * 3, size=(32, 24), fps=10)
    cap = cv2.VideoCapture(str(video))
    assert capture_mode(cap) == "32x24 FMP4 10 fps"  # what the capture negotiated (FFmpeg names mp4v FMP4)
    cap.release()
    assert fourcc_str(cv2.VideoWriter.fourcc(*"MJPG")) == "MJPG" and fourcc_str(0) == "?"
    hint = bayer_hint("RG10", "/dev/video0")
    assert hint is not None and "csi://0" in hint and "Bayer" in hint
    assert bayer_hint("YUYV", "/dev/video0") is None
    # no such device: the message falls back to the v4l2-ctl command
    assert describe_modes(str(tmp_path / "video9")) == f"see `v4l2-ctl -d {tmp_path / 'video9'} --list-formats-ext`"
    with pytest.raises(SourceError, match="one of mjpg, yuyv"):
        open_source("/dev/video0", camera_format="h264")

"""Cameras as they are: the CSI/RTSP GStreamer pipelines (no CPU videoconvert where OpenCV takes BGRx), a
devkit's Bayer CSI sensor opened as /dev/videoN, and a camera another program holds (EBUSY).

There is no camera, no Jetson and no v4l2loopback on the test machine (no /dev/video*, no kernel modules
in the container). What is real here: the strings, the BGRx -> RGB conversion, the diagnosis of a missing
device and of a non-V4L2 device (/dev/null), and the /proc scan naming the PID that holds a file. EBUSY and
Bayer-only formats are injected at the ioctl / mode-listing seam (named mocks, not proof on hardware)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.cli.app import main
from erudite_edge.sources import camera_diagnose as cd
from erudite_edge.sources.gst_pipelines import csi_candidates, opencv_takes_bgrx, rtsp_candidates
from onnx_fixtures import make_erudite_bundle


def test_csi_pipeline_without_cpu_videoconvert_where_opencv_takes_bgrx() -> None:
    new = csi_candidates(0, 1920, 1080, 30, opencv="4.10.0")
    assert new[0] == ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! "
                      "nvvidconv ! video/x-raw,format=BGRx ! appsink drop=1 max-buffers=1")
    assert "videoconvert" not in new[0] and "videoconvert ! video/x-raw,format=BGR ! appsink" in new[1]
    old = csi_candidates(1, opencv="4.8.0")  # JetPack 6's OpenCV: BGR only at the appsink
    assert old == ["nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
                   "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                   "appsink drop=1 max-buffers=1"]
    assert opencv_takes_bgrx("4.10.0") and opencv_takes_bgrx("5.0.0") and not opencv_takes_bgrx("4.5.4")
    r = rtsp_candidates("rtsp://cam/x", opencv="4.10.0")
    assert "videoconvert" not in r[0] and "nvvidconv ! video/x-raw,format=BGRx ! appsink" in r[0]
    assert r[-1] == ('rtspsrc location="rtsp://cam/x" latency=0 ! decodebin ! videoconvert ! video/x-raw,format=BGR ! '
                     "appsink drop=1 max-buffers=1")
    assert len(rtsp_candidates("rtsp://cam/x", opencv="4.8.0")) == 2


def test_bgrx_frames_become_rgb_in_one_pass() -> None:
    from erudite_edge.sources.base import Item
    from erudite_edge.sources.capture import to_rgb_item

    bgrx = np.zeros((4, 6, 4), np.uint8)
    bgrx[..., 0], bgrx[..., 1], bgrx[..., 2], bgrx[..., 3] = 10, 20, 30, 255  # B, G, R, X
    rgb = to_rgb_item(Item(0, "frame:0", bgrx)).image
    assert rgb is not None and rgb.shape == (4, 6, 3) and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [30, 20, 10]


def test_bayer_only_devices_are_told_to_use_csi() -> None:
    assert cd.bayer_only({"RG10": [(3280, 2464, [21.0])]}) == "RG10"
    assert cd.bayer_only({"MJPG": [], "RG10": []}) is None and cd.bayer_only({}) is None
    # a devkit's IMX219 through /dev/video0 (mode listing injected: no sensor here)
    caps = _fake_ioctl(card=b"vi-output, imx219 9-0010")
    msg = cd.diagnose("/dev/null", ioctl=caps, modes=lambda dev: {"RG10": [(1920, 1080, [30.0])]})
    assert "raw Bayer" in msg and "csi://0" in msg
    assert "csi://1" in (cd.bayer_hint("RG10", "/dev/video1") or "")


def _fake_ioctl(card: bytes = b"USB Camera", busy: bool = False, capture: bool = True):
    """MOCK of the V4L2 ioctls (no camera here): QUERYCAP answers a capture device; S_FMT answers EBUSY when busy."""

    def ioctl(fd: int, request: int, buf: bytearray) -> int:
        if request == cd.VIDIOC_QUERYCAP:
            buf[:] = cd._CAP.pack(b"uvcvideo", card, b"usb-1", 0, 0x84200001 if capture else 0x84a00000,
                                  0x04200001 if capture else 0x04a00000)
            return 0
        if request == cd.VIDIOC_S_FMT and busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return 0

    return ioctl


@pytest.mark.slow  # child processes
def test_busy_camera_names_the_process_holding_it(tmp_path: Path) -> None:
    """A real process holds a file open; the /proc scan finds it. EBUSY itself is injected (MOCK ioctl)."""
    dev = tmp_path / "video0"
    dev.write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", f"f = open({str(dev)!r}); import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        deadline = 200
        while not cd.holders(str(dev)) and deadline:
            deadline -= 1
            __import__("time").sleep(0.05)
        msg = cd.diagnose(str(dev), ioctl=_fake_ioctl(busy=True), modes=lambda d: {"YUYV": []})
    finally:
        holder.communicate(b"", timeout=30)
    assert msg.startswith(f"camera {dev} is busy") and f"PID {holder.pid} python" in msg, msg
    assert cd.diagnose(str(dev), ioctl=_fake_ioctl(busy=False), modes=lambda d: {"YUYV": []}) == ""
    assert "not a video capture node" in cd.diagnose(str(dev), ioctl=_fake_ioctl(capture=False))


def test_missing_and_non_v4l2_devices_are_one_line(tmp_path: Path, capsys) -> None:
    assert cd.diagnose("/dev/video57").startswith("no camera at /dev/video57")
    assert "not a V4L2 camera" in cd.diagnose("/dev/null")  # a real character device that is no camera
    bundle = make_erudite_bundle(tmp_path / "b")
    assert main(["run", "--bundle", str(bundle.root), "/dev/video57"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no camera at /dev/video57" in err and "Traceback" not in err


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root opens any device: no EACCES to see")
def test_permission_denied_says_video_group(tmp_path: Path) -> None:
    dev = tmp_path / "video0"
    dev.write_bytes(b"")
    dev.chmod(0)
    assert "'video' group" in cd.diagnose(str(dev))


def test_a_mode_the_capture_did_not_take_is_one_line_naming_what_it_gave(tmp_path: Path) -> None:
    """README: "A size or format the camera does not take stops the run with one line listing the modes it
    offers". No camera here: a real capture of a real video file stands in for it (it negotiates 32x24 FMP4
    10 fps, whatever is asked), and the device named is not a V4L2 node, so the listing falls back to the
    v4l2-ctl command (the enumeration ioctls themselves need a camera: not run here)."""
    from erudite_edge.errors import SourceError
    from erudite_edge.sources.capture import check_camera_mode, open_video_file
    from onnx_fixtures import COLORS, write_video

    video = write_video(tmp_path / "v.mp4", [COLORS["red"]] * 3, size=(32, 24), fps=10)
    fake_dev = str(tmp_path / "video9")
    src = open_video_file(str(video))
    check_camera_mode(src, fake_dev, 32, 24, None, None)  # what it took: no complaint
    src.close()
    for asked, want in [((1920, 1080, None, None), "refused 1920x1080"), ((None, None, None, "MJPG"), "refused *x* MJPG")]:
        src = open_video_file(str(video))
        with pytest.raises(SourceError) as e:
            check_camera_mode(src, fake_dev, *asked)
        msg = str(e.value)
        assert "\n" not in msg and want in msg and "it gave 32x24 FMP4 10 fps" in msg
        assert msg.endswith(f"it offers: see `v4l2-ctl -d {fake_dev} --list-formats-ext`")

"""Every GStreamer pipeline erudite-edge hands to OpenCV, built in one place, and what this machine has.

Capture (ending in appsink): a CSI camera (nvarguscamerasrc) and an RTSP stream (rtspsrc). Output
(starting at appsrc): the annotated video as H.264, sent over RTP/UDP or pushed to an RTSP server.

No CPU videoconvert on a Jetson's capture path where OpenCV allows it: nvvidconv (the VIC engine)
turns the ISP's NVMM buffers into BGRx in system memory, and OpenCV >= 4.10 takes BGRx at its appsink
(opencv/opencv#25602; earlier versions accept only BGR, GRAY8, Bayer, JPEG and some YUV). The X
channel is then dropped in the one cvtColor pass that makes the RGB frame the model needs anyway
(BGRA2RGB: 1.5 ms on a 1280x720 frame here, against 1.0 ms for today's BGR2RGB). It is not dropped
with a numpy view (`frame[..., 2::-1]`): every consumer (cv2.resize, the encoder) must then copy the
strided view, which measured 27 ms for the same frame. With an older OpenCV (JetPack 5's 4.5.4,
JetPack 6's 4.8) the pipeline keeps `videoconvert ! video/x-raw,format=BGR`, tried second.

The H.264 encoder is chosen by what GStreamer has: nvv4l2h264enc (Jetson's hardware encoder), then
x264enc (gstreamer1.0-plugins-ugly), then openh264enc (gstreamer1.0-plugins-bad). Element availability
is asked of GStreamer itself (PyGObject in this Python, else `gst-inspect-1.0 --exists`); where neither
can answer, the candidates are tried in that order and the first pipeline that opens wins.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import cv2

CSI_DEFAULTS = (1280, 720, 30)  # width, height, framerate when none are given
APPSINK = "appsink drop=1 max-buffers=1"  # keep only the newest frame: no queued lag


# ------------------------------------------------------------------------------------------------
# What this machine has
# ------------------------------------------------------------------------------------------------
def opencv_version(version: str | None = None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version or cv2.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def opencv_takes_bgrx(version: str | None = None) -> bool:
    """Whether OpenCV's GStreamer capture accepts BGRx at its appsink (4.10 and later)."""
    return opencv_version(version) >= (4, 10)


@functools.lru_cache(maxsize=None)
def element_available(name: str) -> bool | None:
    """True/False where GStreamer can be asked (PyGObject's Gst, else gst-inspect-1.0), None where not."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst

        Gst.init(None)
        return Gst.ElementFactory.find(name) is not None
    except (ImportError, ValueError):
        pass
    exe = shutil.which("gst-inspect-1.0")
    if exe:
        try:
            return subprocess.run([exe, "--exists", name], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return None
    return None


def is_jetson(root: str = "/") -> bool:
    """An NVIDIA Jetson (L4T): /etc/nv_tegra_release, or a device-tree model naming a Jetson."""
    if os.path.exists(os.path.join(root, "etc/nv_tegra_release")):
        return True
    try:
        with open(os.path.join(root, "proc/device-tree/model"), "rb") as f:
            return b"jetson" in f.read().lower()
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# Capture
# ------------------------------------------------------------------------------------------------
def csi_capture(sensor: int, width: int | None = None, height: int | None = None, framerate: int | None = None,
                *, cpu_convert: bool = False) -> str:
    """nvarguscamerasrc -> nvvidconv -> BGRx at the appsink; `cpu_convert` adds videoconvert to BGR (old OpenCV)."""
    w, h, f = CSI_DEFAULTS
    tail = "videoconvert ! video/x-raw,format=BGR ! " if cpu_convert else ""
    return (f"nvarguscamerasrc sensor-id={int(sensor)} ! "
            f"video/x-raw(memory:NVMM),width={width or w},height={height or h},framerate={framerate or f}/1 ! "
            f"nvvidconv ! video/x-raw,format=BGRx ! {tail}{APPSINK}")


def csi_candidates(sensor: int, width: int | None = None, height: int | None = None, framerate: int | None = None,
                   opencv: str | None = None) -> list[str]:
    """The CSI pipelines to try, in order: without videoconvert where this OpenCV takes BGRx, then with it."""
    with_cpu = csi_capture(sensor, width, height, framerate, cpu_convert=True)
    if opencv_takes_bgrx(opencv):
        return [csi_capture(sensor, width, height, framerate), with_cpu]
    return [with_cpu]


def rtsp_capture(uri: str, *, jetson: bool, cpu_convert: bool = True, latency_ms: int = 0) -> str:
    """rtspsrc -> decodebin -> BGR(x) at the appsink. On a Jetson decodebin picks nvv4l2decoder, whose NVMM
    output only nvvidconv can bring to system memory. `latency_ms`: rtspsrc's jitter buffer (0: none, each
    frame as it comes; GStreamer's own default is 2000)."""
    src = f'rtspsrc location="{uri}" latency={int(latency_ms)} ! decodebin ! '
    if jetson:
        tail = "videoconvert ! video/x-raw,format=BGR ! " if cpu_convert else ""
        return f"{src}nvvidconv ! video/x-raw,format=BGRx ! {tail}{APPSINK}"
    return f"{src}videoconvert ! video/x-raw,format=BGR ! {APPSINK}"


def rtsp_candidates(uri: str, opencv: str | None = None, latency_ms: int = 0) -> list[str]:
    """Jetson pipelines first (nvvidconv; fails fast elsewhere), then the portable one."""
    jetson = ([rtsp_capture(uri, jetson=True, cpu_convert=False, latency_ms=latency_ms)]
              if opencv_takes_bgrx(opencv) else [])
    return jetson + [rtsp_capture(uri, jetson=True, latency_ms=latency_ms),
                     rtsp_capture(uri, jetson=False, latency_ms=latency_ms)]


# ------------------------------------------------------------------------------------------------
# Output: H.264 over RTP or to an RTSP server
# ------------------------------------------------------------------------------------------------
def h264_encoder(element: str, gop: int, kbps: int = 2000) -> str:
    """From OpenCV's BGR appsrc to an H.264 byte stream with SPS/PPS repeated (a receiver may join late)."""
    if element == "nvv4l2h264enc":
        return ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                f"nvv4l2h264enc insert-sps-pps=true iframeinterval={gop} idrinterval={gop} "
                f"bitrate={kbps * 1000} ! h264parse")
    if element == "x264enc":
        return ("videoconvert ! video/x-raw,format=I420 ! "
                f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} ! h264parse")
    if element == "openh264enc":
        return (f"videoconvert ! video/x-raw,format=I420 ! openh264enc gop-size={gop} bitrate={kbps * 1000} ! "
                "h264parse")
    raise ValueError(f"unknown H.264 encoder element {element}")


H264_ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc")


def encoder_candidates(available=element_available) -> list[str]:
    """The H.264 encoder elements to try, in order of preference, leaving out those GStreamer says it lacks."""
    return [e for e in H264_ENCODERS if available(e) is not False]


def stream_out(encoder: str, scheme: str, host: str, port: int, url: str = "", gop: int = 30) -> str:
    """appsrc -> encoder -> RTP/UDP to HOST:PORT, or pushed (RECORD) to the RTSP server at URL."""
    head = f"appsrc ! {h264_encoder(encoder, gop)} ! "
    if scheme == "rtp":
        return head + f"rtph264pay config-interval=1 pt=96 ! udpsink host={host} port={int(port)} sync=false async=false"
    if scheme == "rtsp":
        return head + f'rtspclientsink location="{url}" protocols=tcp'
    raise ValueError(f"unknown stream scheme {scheme}")

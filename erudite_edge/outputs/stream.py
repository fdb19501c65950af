"""`--save rtp://HOST:PORT` and `--save rtsp://HOST:PORT/PATH`: the annotated video as an H.264 stream, for
headless devices.

rtp:// sends RTP/UDP (payload type 96, SPS/PPS repeated in-band so a receiver may join at any time) to
HOST:PORT; nothing needs to listen. rtsp:// pushes the stream (RTSP ANNOUNCE/RECORD) to an RTSP server
that accepts publishers at that URL, e.g. MediaMTX; viewers then read it from that server.

Two writers, the first that this machine has:
- OpenCV built with GStreamer (JetPack's OpenCV): cv2.VideoWriter on a pipeline from
  erudite_edge.sources.gst_pipelines, with the hardware encoder nvv4l2h264enc on a Jetson, else x264enc or
  openh264enc (picked by what GStreamer has);
- else ffmpeg (the binary of the imageio-ffmpeg wheel, or `ffmpeg` on PATH) with libx264, fed raw BGR
  frames on its stdin. PyPI's OpenCV has no GStreamer, so this is the writer off a Jetson image.

A stream that cannot start (bad host or port, no encoder, no RTSP server listening) is one line and
exit 2 before the model loads. With ffmpeg, frames are handed over by a thread (a stalled receiver costs
stream frames, never results), stamped with the wall clock (they come at the model's rate), and an RTSP
server lost mid-run is warned about and pushed to again with the live sources' back-off (1 s .. 30 s);
results are written meanwhile. OpenCV's GStreamer writer reports no errors: a lost server goes unnoticed
there (rtp:// needs no server).
"""

from __future__ import annotations

import contextlib
import functools
import queue
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable

import cv2
import numpy as np

from erudite_edge.core.redact import redact, remember_uri, split_uri
from erudite_edge.errors import OutputError, UsageError
from erudite_edge.outputs.results import Result, Sink
from erudite_edge.outputs.video import annotate
from erudite_edge.sources.base import Item
from erudite_edge.sources.live import Backoff

STREAM_SCHEMES = ("rtp", "rtsp")


def is_stream_url(target: str) -> bool:
    parts = split_uri(target)
    return parts is not None and parts.scheme in STREAM_SCHEMES


@dataclass(frozen=True)
class StreamTarget:
    scheme: str  # rtp | rtsp
    host: str
    port: int
    url: str  # with its credentials, percent-encoded (what ffmpeg and rtspclientsink decode once)

    @property
    def shown(self) -> str:
        return redact(self.url)


def parse_target(url: str) -> StreamTarget:
    """Check what --save names; UsageError (one line) when the host or port is not usable."""
    remember_uri(url)
    shown = redact(url)
    parts = split_uri(url)
    scheme = parts.scheme if parts else ""
    if parts is None or scheme not in STREAM_SCHEMES:
        raise UsageError(f"--save {shown}: streams are rtp://HOST:PORT or rtsp://HOST[:PORT]/PATH")
    try:
        port = parts.port_number(0) or None
    except ValueError:
        raise UsageError(f"--save {shown}: the port must be a number from 1 to 65535") from None
    host = parts.host
    if not host:
        raise UsageError(f"--save {shown}: no host; give rtp://HOST:PORT (e.g. rtp://192.168.1.10:5000)"
                         if scheme == "rtp" else f"--save {shown}: no host; give rtsp://HOST:8554/PATH")
    if scheme == "rtp":
        if port is None or port == 0:
            raise UsageError(f"--save {shown}: give the receiver's port (rtp://{host}:5000)")
        if parts.rest not in ("", "/"):
            raise UsageError(f"--save {shown}: an RTP target is only rtp://HOST:PORT (no path)")
    else:
        port = port or 554
        if port == 0:
            raise UsageError(f"--save {shown}: the port must be a number from 1 to 65535")
        if parts.rest.split("?", 1)[0].split("#", 1)[0] in ("", "/"):
            raise UsageError(f"--save {shown}: give the path to publish on (rtsp://{host}:{port}/live)")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM if scheme == "rtp" else socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise UsageError(redact(f"--save {shown}: unknown host {host!r}")) from None
    return StreamTarget(scheme, host, int(port), parts.encoded())


def check_rtsp_server(target: StreamTarget, timeout: float = 3.0) -> None:
    """An RTSP push needs a server: refuse at once (one line) when nothing accepts connections there."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            pass
    except OSError as e:
        why = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or str(e) or "no answer")
        raise UsageError(f"--save {target.shown}: no RTSP server at {target.host}:{target.port} ({why}); start one that "
                         "accepts publishers (e.g. MediaMTX) or stream with rtp://HOST:PORT") from None


# ------------------------------------------------------------------------------------------------
# Which writer
# ------------------------------------------------------------------------------------------------
def ffmpeg_exe() -> str | None:
    """The ffmpeg of the imageio-ffmpeg wheel (honours IMAGEIO_FFMPEG_EXE), else one on PATH."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=None)
def ffmpeg_has_encoder(exe: str, name: str) -> bool:
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def choose_writer(gstreamer: bool | None = None, ffmpeg: str | None | bool = False) -> tuple[str, str | None]:
    """("gstreamer", None) where OpenCV has GStreamer and GStreamer an H.264 encoder (or cannot be asked), else
    ("ffmpeg", EXE); UsageError when neither can encode."""
    from erudite_edge.sources.capture import gstreamer_available
    from erudite_edge.sources.gst_pipelines import encoder_candidates

    if (gstreamer if gstreamer is not None else gstreamer_available()) and encoder_candidates():
        return "gstreamer", None
    exe = ffmpeg_exe() if ffmpeg is False else (ffmpeg or None)
    if exe and ffmpeg_has_encoder(exe, "libx264"):
        return "ffmpeg", str(exe)
    if exe:
        raise UsageError(f"--save rtp/rtsp: {exe} has no libx264 H.264 encoder; install an ffmpeg built with it "
                         "(`pip install imageio-ffmpeg`) or OpenCV with GStreamer (JetPack's `nvidia-opencv`)")
    raise UsageError("--save rtp/rtsp needs an H.264 encoder: OpenCV built with GStreamer (on a Jetson, JetPack's "
                     "OpenCV: `sudo apt install nvidia-opencv`) or ffmpeg (`pip install imageio-ffmpeg`, or "
                     "`sudo apt install ffmpeg`)")


def ffmpeg_command(exe: str, target: StreamTarget, size: tuple[int, int], gop: int) -> list[str]:
    w, h = size
    # Frames come when the model is done with them, not at the camera's rate: each is stamped with the
    # time ffmpeg reads it (wall clock, in a 1 ms time base), and none is dropped or duplicated.
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-use_wallclock_as_timestamps", "1", "-framerate", "1000", "-probesize", "32", "-analyzeduration", "0",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-i", "pipe:0", "-an", "-fps_mode", "passthrough",
           "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(gop), "-pix_fmt", "yuv420p",
           "-x264-params", "repeat-headers=1"]
    if target.scheme == "rtp":
        return cmd + ["-f", "rtp", "-payload_type", "96", target.url]
    return cmd + ["-f", "rtsp", "-rtsp_transport", "tcp", target.url]


class _FfmpegWriter:
    """Raw BGR frames into an ffmpeg process's stdin, from a thread: a receiver or server that stalls
    fills the pipe, and then frames are dropped (counted) instead of holding back the results."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._stderr = ""
        self.dropped = 0
        self.failed = False
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._pump, name="stream-out", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdin is not None
        while (data := self._queue.get()) is not None:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):  # ffmpeg is gone (BrokenPipeError) or the pipe was closed
                self.failed = True
                return

    def write(self, frame: np.ndarray) -> None:
        if self.failed or self.proc.poll() is not None:
            raise BrokenPipeError("ffmpeg stopped")
        try:
            self._queue.put_nowait(np.ascontiguousarray(frame).tobytes())
        except queue.Full:
            self.dropped += 1

    def error(self) -> str:
        """ffmpeg's last message line once it has exited and been closed ("" before); the caller redacts it."""
        lines = [line.strip() for line in self._stderr.splitlines() if line.strip()]
        if lines:
            return lines[-1]
        return f"ffmpeg exited with status {self.proc.returncode}" if self.proc.returncode else ""

    def close(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < end:  # hand over what is queued, then EOF
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=0.1)
                break
        self._thread.join(timeout=max(0.1, end - time.monotonic()))
        if self._thread.is_alive():  # stuck writing into a stalled ffmpeg
            self.proc.kill()
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err: IO[bytes] | None = self.proc.stderr
        if err and not err.closed:
            with contextlib.suppress(OSError, ValueError):
                self._stderr = err.read().decode("utf-8", "replace")
            err.close()


class _GstWriter:
    """cv2.VideoWriter on a GStreamer pipeline (OpenCV built with GStreamer)."""

    def __init__(self, pipeline: str, size: tuple[int, int], fps: float):
        self.pipeline = pipeline
        self.writer = cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, fps, size, True)

    def opened(self) -> bool:
        return bool(self.writer.isOpened())

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def error(self) -> str:
        return ""

    def close(self, timeout: float = 10.0) -> None:
        self.writer.release()


class StreamSink(Sink):
    """The annotated frames as H.264 to an RTP receiver or an RTSP server."""

    needs_image = True  # annotates each frame

    STABLE_S = 10.0  # a stream up this long counts as back: the back-off starts over

    def __init__(self, url: str, fps: float, *, warn: Callable[[str], None] | None = None,
                 writer: tuple[str, str | None] | None = None, gop: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.target = parse_target(url)
        self.kind, self.exe = writer or choose_writer()
        if self.target.scheme == "rtsp":
            if self.kind == "gstreamer":
                from erudite_edge.sources.gst_pipelines import element_available

                if element_available("rtspclientsink") is False:
                    raise UsageError(f"--save {self.target.shown}: GStreamer lacks rtspclientsink (Debian/JetPack: "
                                     "`sudo apt install gstreamer1.0-rtsp`); or stream with rtp://HOST:PORT")
            check_rtsp_server(self.target)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.gop = gop or max(1, int(round(self.fps)))  # a key frame every second: a late viewer waits <= 1 s
        self._warn = (lambda msg: warn(redact(msg))) if warn else (lambda msg: None)
        self._clock = clock
        self._size: tuple[int, int] | None = None
        self._writer: _FfmpegWriter | _GstWriter | None = None
        self.encoder = ""
        self.frames = 0
        self.dropped = 0  # frames left out of the stream while the encoder or the network was behind
        self.restarts = 0
        self._failures = 0
        self._retry_at = 0.0
        self._opened_at = 0.0
        self._backoff = Backoff()

    # the frame path -------------------------------------------------------------------------------
    def _open(self, size: tuple[int, int]) -> None:
        if self.kind == "gstreamer":
            from erudite_edge.sources.gst_pipelines import encoder_candidates, stream_out

            t = self.target
            for element in encoder_candidates():
                w = _GstWriter(stream_out(element, t.scheme, t.host, t.port, t.url, self.gop), size, self.fps)
                if w.opened():
                    self._writer, self.encoder = w, element
                    return
                w.close()
            raise OutputError(f"--save {t.shown}: GStreamer could not start an H.264 stream with any of "
                              "nvv4l2h264enc, x264enc, openh264enc (install gstreamer1.0-plugins-ugly for x264enc)")
        assert self.exe is not None
        self._writer = _FfmpegWriter(ffmpeg_command(self.exe, self.target, size, self.gop))
        self.encoder = "ffmpeg libx264"
        self._opened_at = self._clock()

    def write_frame(self, bgr: np.ndarray) -> None:
        if self._size is None:
            h, w = bgr.shape[:2]
            self._size = (max(2, w - w % 2), max(2, h - h % 2))  # H.264 wants even dimensions
        if (bgr.shape[1], bgr.shape[0]) != self._size:
            bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_AREA)
        if self._writer is None:
            if self._clock() < self._retry_at:
                return  # the server is gone: frames are skipped until the next try
            self._open(self._size)
        assert self._writer is not None
        try:
            self._writer.write(bgr)
            self.frames += 1
            if self._failures and self._clock() - self._opened_at > self.STABLE_S:
                self._failures = 0  # up long enough: the next loss starts the back-off at 1 s again
        except (BrokenPipeError, OSError):
            self._lost()

    def _lost(self) -> None:
        assert self._writer is not None
        self._writer.close(timeout=2.0)
        why = self._writer.error()
        self.dropped += getattr(self._writer, "dropped", 0)
        self._writer = None
        if self.frames == 0 and self.restarts == 0:
            raise OutputError(f"--save {self.target.shown}: the stream did not start ({redact(why) or 'ffmpeg stopped'})")
        self._failures += 1
        self.restarts += 1
        delay = self._backoff.delay(self._failures)
        self._retry_at = self._clock() + delay
        self._warn(f"--save {self.target.shown}: stream lost ({why or 'the receiver went away'}); "
                   f"trying again in {delay:.0f} s, results go on being written")

    # Sink -----------------------------------------------------------------------------------------
    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        self.write_frame(annotate(item.image, result))

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close(timeout=5.0)  # flush and TEARDOWN take well under a second; a stalled server is cut
            self.dropped += getattr(self._writer, "dropped", 0)
            self._writer = None

    def abort(self) -> None:
        self.commit()

    def describe(self) -> str:
        via = self.encoder or ("GStreamer" if self.kind == "gstreamer" else "ffmpeg libx264")
        return f"H.264 stream -> {self.target.shown} ({via})"

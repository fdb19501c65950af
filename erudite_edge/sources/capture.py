"""Capture sources: video files, V4L2 and CSI cameras, RTSP streams, read through OpenCV (FFmpeg or
GStreamer), and what OpenCV can do here (GStreamer/FFmpeg build flags, its log level).

Video sources read frames in order while their tasks are produced, so the only thing a frame's task still
has to do is hand it over (sources.base.ready). Live sources (cameras, CSI, RTSP, testsrc://) are read by
the pipeline through `latest()`: a reader thread keeps only the newest frame (erudite_edge.sources.live).
A lost live source is reopened with exponential back-off (1 s .. 30 s), N times or forever; every message
shows its URI with the password redacted. Which URI opens which source is sources/open.py; still images
are sources/files.py.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import os
import sys
import time
from typing import Any, Callable, Generator, Iterator

import cv2
import numpy as np

from erudite_edge.core.redact import redact, split_uri
from erudite_edge.errors import SourceError, UsageError
from erudite_edge.sources.base import Item, Source, Task, ready
from erudite_edge.sources.camera_diagnose import BAYER_FOURCCS, bayer_hint  # noqa: F401  (BAYER_FOURCCS: re-exported)
from erudite_edge.sources.gst_pipelines import csi_candidates, rtsp_candidates
from erudite_edge.sources.live import Backoff, LatestFrame


# ------------------------------------------------------------------------------------------------
# OpenCV capabilities
# ------------------------------------------------------------------------------------------------
def _build_flag(name: str) -> bool:
    """Whether cv2.getBuildInformation() lists a Video I/O backend as YES."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == name:
            return value.strip().upper().startswith("YES")
    return False


def quiet_video_logs() -> None:
    """Keep OpenCV's and FFmpeg's own log lines (`[ERROR:0@0.1] global cap.cpp ...`, which may show a
    stream's URI) off stderr, errors included: our messages say what went wrong, in one line, with the
    password redacted. OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL set by the user win (for debugging)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        with contextlib.suppress(AttributeError, cv2.error):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


@functools.lru_cache(maxsize=None)
def gstreamer_available() -> bool:
    return _build_flag("GStreamer")


@functools.lru_cache(maxsize=None)
def ffmpeg_available() -> bool:
    return _build_flag("FFMPEG")


def gstreamer_fix_message(uri: str) -> str:
    where = os.path.dirname(getattr(cv2, "__file__", "") or "") or "?"
    return (
        f"{uri} needs OpenCV built with GStreamer, and this OpenCV ({cv2.__version__} from {where}) has none "
        "(PyPI's opencv-python wheels never do): use JetPack's OpenCV (`sudo apt install nvidia-opencv`) and "
        "do not pip-install opencv-python over it (`pip uninstall opencv-python opencv-python-headless`)"
    )


Opener = Callable[[], Any]  # returns a cv2.VideoCapture (or something that reads like one: testsrc)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


class CaptureSource(Source):
    """Frames from cv2.VideoCapture: a video file, a camera or a stream.

    `opener` makes a new capture (returning one whose isOpened() is False when it cannot). A live
    source that stops delivering frames is reopened up to `reconnect` times per loss (None: forever),
    waiting `Backoff(backoff, max_backoff).delay(attempt)` before each try (1 s, 2 s, 4 s ... 30 s by
    default); a frame that arrives ends the loss, which is logged with its duration. With `reconnect=None`
    (forever) a first open that fails is no error: it is said once (`explain()`, where given, says why) and
    retried like a lost source, one line per attempt, 1 s .. 30 s apart (a camera or NVR that comes up after
    the device boots). A video file
    simply ends, with a warning when it ends before the frame count its container announces.
    `sleep(seconds) -> stopped?` and `clock()` are injectable for tests.
    """

    def __init__(
        self,
        uri: str,
        opener: Opener,
        *,
        kind: str,
        live: bool,
        open_error: str,
        reconnect: int | None = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        warn: Callable[[str], None] = _warn,
        sleep: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        explain: Callable[[], str | None] | None = None,
    ):
        super().__init__(uri)
        self.kind = kind
        self.live = live
        self.reconnect = None if reconnect is None else max(0, int(reconnect))
        self.backoff = Backoff(backoff, max_backoff)
        self._opener = opener
        self._open_error = redact(open_error)
        self._warn = lambda msg: warn(redact(msg))
        self._sleep = sleep or self._stop.wait
        self._clock = clock
        self.reconnects = 0  # reopen attempts made, for the summary
        self.losses: list[float] = []  # duration in seconds of each loss (frames stopped, then came back or not)
        self.frames_read = 0
        self.ended_early = False
        self._latest: LatestFrame | None = None
        self._cap = opener()
        self.waiting = not self._cap.isOpened()  # `--reconnect forever`: not open yet, retried as a lost source is
        if self.waiting:
            if not (self.live and self.reconnect is None):
                self._cap.release()
                raise SourceError(self._open_error)
            why = redact((explain() if explain is not None else None) or self._open_error)
            self._warn(f"{why}; --reconnect forever: trying again {self.backoff.initial:g} s, "
                       f"{2 * self.backoff.initial:g} s, ... up to {self.backoff.maximum:g} s apart until it opens")
        self._frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.mode = "" if self.waiting else capture_mode(self._cap)  # as negotiated: `1280x720 MJPG 30 fps`

    @property
    def length(self) -> int | None:
        # Containers' frame counts are estimates; only trust them for files (progress bar), never for live.
        return None if self.live or self._frames <= 0 else self._frames

    @property
    def fps(self) -> float | None:
        return self._fps if 0 < self._fps < 1000 else None

    @property
    def dropped(self) -> int:
        return self._latest.dropped if self._latest is not None else 0

    def _ended(self, n: int) -> None:
        self.end_reason = "end of video"
        expected = self._frames
        if expected > 0 and n + max(2, expected // 100) < expected:
            self.ended_early = True
            self.end_reason = f"video ended early: {n} of the {expected} frames its container announces"
            self._warn(f"{self.uri}: ended early after {n} of the {expected} frames its container announces; "
                       "the file is truncated or corrupt")

    def frames(self, convert: bool = True) -> Generator[Item, None, None]:
        """Every frame, in order, reconnecting a lost live source; releases the capture when done.
        `convert=False`: items carry the capture's raw (BGR) frame; `to_rgb_item` finishes them (the
        latest-frame reader converts only the frames the model takes)."""
        n = 0
        attempts = 0
        lost_at: float | None = None
        limit = "forever" if self.reconnect is None else str(self.reconnect)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, frame = self._cap.read()
                if ok and frame is not None and frame.size:
                    t1, wall = time.perf_counter(), time.time()
                    if self.waiting:  # the first open, retried under --reconnect forever, worked
                        self.waiting = False
                        self.mode = capture_mode(self._cap)
                    if lost_at is not None:
                        self.losses.append(self._clock() - lost_at)
                        self._warn(f"{self.uri}: frames again after {self.losses[-1]:.1f} s without "
                                   f"(loss {len(self.losses)})")
                        lost_at = None
                    attempts = 0
                    yield Item(n, f"frame:{n}", _to_rgb(frame) if convert else frame, None, (t1 - t0) * 1e3,
                               f"frame_{n:06d}", t1, wall)
                    n += 1
                    self.frames_read = n
                    continue
                if not self.live:
                    self._ended(n)
                    return
                if lost_at is None:
                    lost_at = self._clock()
                if self.reconnect is not None and attempts >= self.reconnect:
                    self.losses.append(self._clock() - lost_at)
                    self.end_reason = (
                        f"{self.uri} lost and could not be reopened after {self.reconnect} attempts" if attempts
                        else f"{self.uri} stopped delivering frames")
                    self._warn(self.end_reason)
                    return
                attempts += 1
                self.reconnects += 1
                delay = self.backoff.delay(attempts)
                self._warn(f"no frame from {self.uri}; reconnecting (attempt {attempts}/{limit}) in {delay:.1f} s")
                self._cap.release()
                if delay and self._sleep(delay):
                    break
                if self._stop.is_set():
                    break
                self._cap = self._opener()  # one that did not open reads nothing: the next attempt follows
            if lost_at is not None:
                self.losses.append(self._clock() - lost_at)
            self.end_reason = self.end_reason or "stopped"
        finally:
            self._cap.release()

    def tasks(self) -> Iterator[Task]:
        frames = self.frames()
        try:
            for item in frames:
                yield functools.partial(ready, item)
        finally:
            frames.close()

    def latest(self) -> LatestFrame:
        """Start reading in a thread that keeps only the newest frame (live sources)."""
        self._latest = LatestFrame(self.frames(convert=False), finish=to_rgb_item)
        return self._latest

    def close(self) -> None:
        self._stop.set()
        self._cap.release()


def to_rgb_item(item: Item) -> Item:
    """An item read with convert=False, its frame converted to RGB (the conversion counted as decoding)."""
    if item.image is not None:
        t0 = time.perf_counter()
        item.image = _to_rgb(item.image)
        item.decode_ms += (time.perf_counter() - t0) * 1e3
    return item


# ------------------------------------------------------------------------------------------------
# Opening a source from what the user typed
# ------------------------------------------------------------------------------------------------
def _capture(target: str | int, api: int) -> Opener:
    def open_() -> cv2.VideoCapture:
        try:
            return cv2.VideoCapture(target, api)
        except cv2.error:  # a backend that raises (e.g. a GStreamer format this OpenCV cannot take): not opened
            return cv2.VideoCapture()

    return open_


def _first_that_opens(*openers: Opener) -> Opener:
    """An opener trying each in turn; the last one's capture (opened or not) when none opens."""

    def open_() -> cv2.VideoCapture:
        for opener in openers[:-1]:
            cap = opener()
            if cap.isOpened():
                return cap
            cap.release()
        return openers[-1]()

    return open_


CAMERA_FORMATS = {"mjpg": "MJPG", "yuyv": "YUYV"}
def fourcc_str(value: float) -> str:
    v = int(value)
    chars = "".join(chr((v >> (8 * i)) & 0xFF) for i in range(4))
    return chars if v and chars.isprintable() else "?"


def capture_mode(cap: Any) -> str:
    """What a capture delivers, as negotiated: `1920x1080 MJPG 30 fps`."""
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return f"{w}x{h} {fourcc_str(cap.get(cv2.CAP_PROP_FOURCC) or 0)} {fps:g} fps"


def _configured_capture(target: str | int, api: int, width: int | None, height: int | None,
                        framerate: int | None, fourcc: str | None = None) -> Opener:
    def open_() -> cv2.VideoCapture:
        cap = cv2.VideoCapture(target, api)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
            if fourcc:  # before the size: V4L2 picks the sizes of the pixel format
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if framerate:
                cap.set(cv2.CAP_PROP_FPS, framerate)
        return cap

    return open_


STREAM_TIMEOUT_MS = 5000  # FFmpeg: give up opening / reading a silent stream after this (then reconnect)


def _ffmpeg_stream(uri: str) -> Opener:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]

    def open_() -> cv2.VideoCapture:
        cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    return open_


def open_v4l2(device: str | int, *, width: int | None = None, height: int | None = None,
              framerate: int | None = None, reconnect: int | None = 3, backoff: float = 1.0,
              camera_format: str | None = None) -> CaptureSource:
    if isinstance(device, int) and not 0 <= device < 1 << 16:  # OpenCV takes a C int
        raise SourceError(f"camera {device}: no such camera index; cameras are numbered 0, 1, ... (/dev/videoN)")
    dev = f"/dev/video{device}" if isinstance(device, int) else device
    fourcc = None
    if camera_format:
        if camera_format.lower() not in CAMERA_FORMATS:
            raise SourceError(f"--camera-format {camera_format}: one of {', '.join(CAMERA_FORMATS)}")
        fourcc = CAMERA_FORMATS[camera_format.lower()]
    try:
        src = CaptureSource(
            f"v4l2://{dev}",
            _configured_capture(device if isinstance(device, int) else dev, cv2.CAP_V4L2, width, height, framerate, fourcc),
            kind="camera",
            live=True,
            reconnect=reconnect,
            backoff=backoff,
            open_error=(
                f"cannot open camera {dev} (V4L2): it is not connected, another program holds it, or you lack "
                "permission (check `ls -l /dev/video*`; add yourself to the 'video' group)"
            ),
            explain=lambda: _diagnose_camera(dev),
        )
    except SourceError as e:
        raise SourceError(_diagnose_camera(dev) or str(e)) from None  # each reason names the device
    if not src.waiting:  # (a camera not open yet under --reconnect forever shows its mode once it opens)
        check_camera_mode(src, dev, width, height, framerate, fourcc)
    return src


def _diagnose_camera(dev: str) -> str | None:
    from erudite_edge.sources.camera_diagnose import diagnose

    return diagnose(dev)  # busy (with the PID holding it), Bayer CSI sensor, permission, not connected


def check_camera_mode(src: CaptureSource, dev: str, width: int | None, height: int | None, framerate: int | None,
                      fourcc: str | None) -> None:
    """Refuse (SourceError, listing the modes the camera offers) a mode the camera did not take, and a raw
    Bayer CSI sensor opened through V4L2."""
    hint = bayer_hint(src.mode.split()[1] if len(src.mode.split()) > 1 else "", dev)
    if hint:
        src.close()
        raise SourceError(hint)
    got_w, got_h = (int(v) for v in src.mode.split()[0].split("x"))
    got_fourcc = src.mode.split()[1]
    refused = ((width and got_w != width) or (height and got_h != height)
               or (fourcc and got_fourcc not in ("?", fourcc)))
    if refused:
        from erudite_edge.sources.v4l2_modes import describe_modes

        src.close()
        want = f"{width or '*'}x{height or '*'}" + (f" {fourcc}" if fourcc else "") + (f" {framerate} fps" if framerate else "")
        raise SourceError(f"camera {dev} refused {want} (it gave {src.mode}); it offers: {describe_modes(dev)}")


def csi_pipeline(sensor: int, width: int | None = None, height: int | None = None, framerate: int | None = None) -> str:
    """The first CSI pipeline tried (erudite_edge.sources.gst_pipelines: no CPU videoconvert where OpenCV allows)."""
    return csi_candidates(sensor, width, height, framerate)[0]


def open_csi(uri: str, *, width: int | None = None, height: int | None = None, framerate: int | None = None,
             reconnect: int | None = 3, backoff: float = 1.0) -> CaptureSource:
    rest = uri[len("csi://"):]
    if not rest.isdigit():
        raise SourceError(f"{uri}: expected csi://N with N the sensor id (csi://0)")
    if not gstreamer_available():
        raise SourceError(gstreamer_fix_message(uri))
    pipelines = csi_candidates(int(rest), width, height, framerate)
    return CaptureSource(
        uri,
        _first_that_opens(*(_capture(p, cv2.CAP_GSTREAMER) for p in pipelines)),
        kind="csi camera",
        live=True,
        reconnect=reconnect,
        backoff=backoff,
        open_error=(
            f"cannot open {uri} (nvarguscamerasrc): no camera on that sensor id, the ribbon cable is loose, the "
            "mode is unsupported (try --width/--height/--framerate), or nvargus-daemon needs "
            "`sudo systemctl restart nvargus-daemon`"
        ),
    )


RTSP_LATENCY_MAX_MS = 60_000
_latency_warned: list[int] = []  # the FFmpeg warning is given once per process, not once per stream


def check_rtsp_latency(ms: object) -> int:
    """`--rtsp-latency-ms`: whole milliseconds, 0 to RTSP_LATENCY_MAX_MS; UsageError (one line) otherwise."""
    if isinstance(ms, bool) or not isinstance(ms, numbers.Integral) or not 0 <= int(ms) <= RTSP_LATENCY_MAX_MS:
        raise UsageError(f"--rtsp-latency-ms {ms!r}: give whole milliseconds from 0 to {RTSP_LATENCY_MAX_MS} "
                         "(0, the default: no jitter buffer; 200-2000 for a lossy link)")
    return int(ms)


def open_rtsp(uri: str, *, reconnect: int | None = 3, backoff: float = 1.0, latency_ms: int = 0) -> CaptureSource:
    """An RTSP stream through GStreamer (rtspsrc with a `latency_ms` jitter buffer), else FFmpeg (which has no
    such buffer: `latency_ms` does not apply there)."""
    latency_ms = check_rtsp_latency(latency_ms)
    parts = split_uri(uri)
    # FFmpeg and GStreamer's rtspsrc percent-decode the userinfo once, and FFmpeg ends the host at the first
    # '/', '?' or '#': a password as cameras give it (raw '/', '@', '#', spaces) reaches them encoded.
    wire = parts.encoded() if parts is not None else uri
    if parts is None or not parts.host:
        raise SourceError(f"{redact(uri)}: no host; give rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH")
    try:
        parts.port_number(554)
    except ValueError as e:
        raise SourceError(f"{redact(uri)}: {e}") from None
    if gstreamer_available():
        opener = _first_that_opens(*(_capture(p, cv2.CAP_GSTREAMER) for p in rtsp_candidates(wire, latency_ms=latency_ms)))
        via = "GStreamer"
    elif ffmpeg_available():
        opener, via = _ffmpeg_stream(wire), "FFmpeg"
        if latency_ms and not _latency_warned:
            _latency_warned.append(latency_ms)
            _warn(f"--rtsp-latency-ms {latency_ms}: this OpenCV reads RTSP through FFmpeg, which has no jitter "
                  "buffer to set; ignored (it applies to GStreamer's rtspsrc)")
    else:
        raise SourceError(f"{redact(uri)}: this OpenCV has neither GStreamer nor FFmpeg video I/O; "
                          f"{gstreamer_fix_message(redact(uri))}")
    try:
        return CaptureSource(
            uri,
            opener,
            kind="stream",
            live=True,
            reconnect=reconnect,
            backoff=backoff,
            open_error=f"cannot open {uri} (via {via})",
            explain=lambda: f"cannot open {uri} (via {via}): {_diagnose_stream(uri)}",
        )
    except SourceError as e:
        raise SourceError(f"{e}: {_diagnose_stream(uri)}") from None


def _diagnose_stream(uri: str) -> str:
    from erudite_edge.sources.rtsp_diagnose import diagnose

    return diagnose(uri) or ("the server answers, but OpenCV could not read the stream: its codec or "
                             "transport is one this OpenCV cannot decode; check it with `ffprobe URI`")


def open_video_file(path: str) -> CaptureSource:
    return CaptureSource(
        path,
        _capture(path, cv2.CAP_ANY),
        kind="video",
        live=False,
        reconnect=0,
        open_error=(
            f"cannot open video {path}: the file is corrupt, or its codec/container is one this OpenCV cannot "
            f"decode (FFmpeg video I/O: {'yes' if ffmpeg_available() else 'no'})"
        ),
    )



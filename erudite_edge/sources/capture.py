"""Where images come from: files, folders, globs, video files, V4L2 and CSI cameras, RTSP streams.

The URI conventions are jetson-inference's (`csi://0`, `v4l2:///dev/video0`, `/dev/video0`,
`rtsp://host/path`, a file, a folder). A source yields *tasks*, each a callable that returns one
`Item`: image files give independent tasks (decoded in parallel by the pipeline's thread pool),
video sources read frames in order while the tasks are produced, so the only thing a frame's task
still has to do is hand it over. Still images are always decoded by erudite_edge.core.preprocess
(RGB, exactly as in training); a file that does not decode becomes an Item carrying its
BadImageError, so the caller can warn, count and skip it (or stop, under --strict).

Live sources (cameras, CSI, RTSP, testsrc://) are read by the pipeline through `latest()`: a reader
thread keeps only the newest frame (erudite_edge.sources.live). A lost live source is reopened with exponential
back-off (1 s .. 30 s), N times or forever; every message shows its URI with the password redacted.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import glob as globlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import cv2
import numpy as np

from erudite_edge.sources.camera_diagnose import BAYER_FOURCCS, bayer_hint  # noqa: F401  (BAYER_FOURCCS: re-exported)
from erudite_edge.errors import BadImageError, SourceError
from erudite_edge.sources.gst_pipelines import csi_candidates
from erudite_edge.sources.gst_pipelines import rtsp_candidates
from erudite_edge.sources.live import Backoff
from erudite_edge.sources.live import LatestFrame
from erudite_edge.sources.live import redact
from erudite_edge.core.preprocess import load_image

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .png .bmp .dib .webp .tif .tiff .ppm .pgm .pbm .pnm .pxm .jp2 .sr .ras .exr .hdr .pic .avif".split()
)
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .mts .m2ts .ts .wmv .flv .3gp .ogv .h264 .h265 .264 .265 .mjpeg .mjpg".split()
)
GLOB_CHARS = frozenset("*?[")



@dataclass
class Item:
    """One image or frame: its name (file path, or `frame:<n>`), the decoded RGB uint8 image or the
    error that kept it from decoding, and how long reading + decoding took."""

    index: int
    name: str
    image: np.ndarray | None
    error: BadImageError | None = None
    decode_ms: float = 0.0
    relname: str = ""  # path relative to the source root (used to name saved annotated images)
    timestamp: float = 0.0  # time.perf_counter() when the item was read (a frame: captured)
    captured_at: float = 0.0  # time.time() at the same moment
    box: Any = None  # a crop: the erudite_edge.sources.crops.Box it was cut from (None: the whole image)
    part: int = 0  # a crop: which box of its image (0, 1, ...)

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None


Task = Callable[[], Item]


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
    """Keep OpenCV's and FFmpeg's own log lines (which may show a stream's URI) off stderr: our
    messages say what went wrong, with the password redacted. OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL
    set by the user win."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        with contextlib.suppress(AttributeError, cv2.error):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


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


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------
class Source(abc.ABC):
    """Something that produces images. `tasks()` yields callables returning Items in order."""

    kind: str = "?"
    live: bool = False  # a camera or stream: frames come in real time, there is no end to wait for

    def __init__(self, uri: str):
        self.uri = redact(uri)  # for messages; the opener keeps the real one
        self.end_reason = ""  # why the source stopped (end of stream, stream lost, ...), for the summary
        self._stop = threading.Event()

    @property
    def length(self) -> int | None:
        """How many items the source will produce, where that is known in advance."""
        return None

    @property
    def fps(self) -> float | None:
        """Frame rate of a video source, where known."""
        return None

    @abc.abstractmethod
    def tasks(self) -> Iterator[Task]:
        """Yield one task per item, in order."""

    def stop(self) -> None:
        """Ask a running tasks() generator to finish after the item in hand."""
        self._stop.set()

    def close(self) -> None:
        """Release the device of a source that will not be read (tasks() releases it itself)."""

    def __iter__(self) -> Iterator[Item]:
        for task in self.tasks():
            yield task()

    def describe(self) -> str:
        return f"{self.kind} {self.uri}"


def read_image_item(index: int, path: str, relname: str) -> Item:
    """Load one image file; a file that does not decode becomes an Item carrying its BadImageError."""
    t0, wall = time.perf_counter(), time.time()
    try:
        image: np.ndarray | None = load_image(path)
        error = None
    except BadImageError as e:
        image, error = None, e
    return Item(index, path, image, error, (time.perf_counter() - t0) * 1e3, relname, t0, wall)


class ImageFilesSource(Source):
    """A list of image files (a single image, a folder or a glob), decoded independently."""

    kind = "images"

    def __init__(self, uri: str, paths: list[str], root: str | None = None, ignored: int = 0):
        super().__init__(uri)
        self.paths = list(paths)
        self.root = root
        self.ignored = ignored  # files in the folder passed over because their extension is not an image's

    @property
    def length(self) -> int:
        return len(self.paths)

    def relname(self, path: str) -> str:
        if self.root:
            try:
                return os.path.relpath(path, self.root)
            except ValueError:
                pass
        return os.path.basename(path)

    def tasks(self) -> Iterator[Task]:
        for i, p in enumerate(self.paths):
            if self._stop.is_set():
                self.end_reason = "stopped"
                return
            yield functools.partial(read_image_item, i, p, self.relname(p))
        self.end_reason = self.end_reason or "all files read"

    def describe(self) -> str:
        return f"{self.uri} ({len(self.paths)} image{'s' if len(self.paths) != 1 else ''})"


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
    default); a frame that arrives ends the loss, which is logged with its duration. A video file
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
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(self._open_error)
        self._frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.mode = capture_mode(self._cap)  # as negotiated: `1280x720 MJPG 30 fps`

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
                yield functools.partial(_identity, item)
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


def _identity(item: Item) -> Item:
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
        )
    except SourceError as e:
        from erudite_edge.sources.camera_diagnose import diagnose

        why = diagnose(dev)  # busy (with the PID holding it), Bayer CSI sensor, permission, not connected
        raise SourceError(why or str(e)) from None  # each reason names the device
    check_camera_mode(src, dev, width, height, framerate, fourcc)
    return src


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


def open_rtsp(uri: str, *, reconnect: int | None = 3, backoff: float = 1.0) -> CaptureSource:
    if gstreamer_available():
        opener = _first_that_opens(*(_capture(p, cv2.CAP_GSTREAMER) for p in rtsp_candidates(uri)))
        via = "GStreamer"
    elif ffmpeg_available():
        opener, via = _ffmpeg_stream(uri), "FFmpeg"
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
        )
    except SourceError as e:
        from erudite_edge.sources.rtsp_diagnose import diagnose

        why = diagnose(uri) or ("the server answers, but OpenCV could not read the stream: its codec or "
                                "transport is one this OpenCV cannot decode; check it with `ffprobe URI`")
        raise SourceError(f"{e}: {why}") from None


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


def list_images(folder: str, recursive: bool = False) -> tuple[list[str], int, bool]:
    """Image files in a folder, sorted; also how many other files were passed over and whether there
    are subfolders (to suggest --recursive)."""
    images: list[str] = []
    ignored = 0
    has_subdirs = False
    if recursive:
        walker: Iterator[tuple[str, list[str], list[str]]] = os.walk(folder, followlinks=True)
    else:
        entries = list(os.scandir(folder))
        has_subdirs = any(e.is_dir() and not e.name.startswith(".") for e in entries)
        walker = iter([(folder, [], [e.name for e in entries if e.is_file()])])
    seen: set[str] = set()
    for dirpath, dirnames, filenames in walker:
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop: do not walk it twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.startswith("."):
                continue
            if Path(fn).suffix.lower() in IMAGE_EXTENSIONS:
                images.append(os.path.join(dirpath, fn))
            else:
                ignored += 1
    return sorted(images), ignored, has_subdirs


def _is_image_file(path: str) -> bool:
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    if suffix in VIDEO_EXTENSIONS:
        return False
    return bool(cv2.haveImageReader(path))


def open_source(
    spec: str | None = None,
    *,
    camera: int | None = None,
    recursive: bool = False,
    width: int | None = None,
    height: int | None = None,
    framerate: int | None = None,
    reconnect: int | None = 3,
    backoff: float = 1.0,
    camera_format: str | None = None,
) -> Source:
    """Open what the user named: `--camera N`, /dev/videoN, v4l2://DEV, csi://N, rtsp://..., a video
    file, an image, a folder of images (recursive on request) or a glob. SourceError if it cannot be."""
    live_kw = dict(width=width, height=height, framerate=framerate, reconnect=reconnect, backoff=backoff)
    v4l2_kw = dict(live_kw, camera_format=camera_format)
    if camera is not None:
        if spec:
            raise SourceError(f"give either --camera {camera} or a SOURCE ({spec}), not both")
        return open_v4l2(int(camera), **v4l2_kw)  # type: ignore[arg-type]
    if not spec:
        raise SourceError("no source: give a file, folder, glob, /dev/videoN, csi://N or rtsp://... (or --camera N)")
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    if spec.startswith("v4l2://"):
        return open_v4l2(spec[len("v4l2://"):], **v4l2_kw)  # type: ignore[arg-type]
    if spec.startswith("csi://"):
        return open_csi(spec, **live_kw)  # type: ignore[arg-type]
    if spec.startswith(("rtsp://", "rtsps://")):
        return open_rtsp(spec, reconnect=reconnect, backoff=backoff)
    if spec.startswith("testsrc://"):
        from erudite_edge.sources.testsrc import open_testsrc

        return open_testsrc(spec, width=width, height=height, reconnect=reconnect, backoff=backoff)
    if spec.startswith("/dev/video"):
        return open_v4l2(spec, **v4l2_kw)  # type: ignore[arg-type]
    if "://" in spec:
        raise SourceError(f"{redact(spec)}: unsupported URI scheme; use csi://N, v4l2:///dev/videoN, rtsp://..., "
                          "testsrc://FPS or a path")

    if os.path.isdir(spec):
        paths, ignored, has_subdirs = list_images(spec, recursive)
        if not paths:
            hint = "; pass --recursive to look in its subfolders" if has_subdirs and not recursive else ""
            raise SourceError(f"{spec}: folder holds no images (by extension: .jpg, .png, .bmp, .webp, .tif, ...){hint}")
        return ImageFilesSource(spec, paths, root=spec, ignored=ignored)
    if os.path.isfile(spec):
        if _is_image_file(spec):
            return ImageFilesSource(spec, [spec], root=os.path.dirname(spec) or ".")
        return open_video_file(spec)
    if spec.isdigit():
        return open_v4l2(int(spec), **v4l2_kw)  # type: ignore[arg-type]
    if GLOB_CHARS & set(spec):
        matches = sorted(p for p in globlib.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
        if not matches:
            raise SourceError(f"{spec}: the glob matches no files (quote it so the shell does not expand it)")
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches])
        return ImageFilesSource(spec, matches, root=root)
    raise SourceError(
        f"{spec}: no such file or folder, and not a camera or stream URI "
        "(check the path; cameras are /dev/videoN, v4l2:///dev/videoN, csi://N; streams rtsp://...)"
    )

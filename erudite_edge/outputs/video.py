"""Pictures out: the caption drawn on a frame, annotated video files, folders of annotated images and a
display window. Video files and image folders are written under a temporary name and renamed when the run ends."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from erudite_edge.core.fileio import atomic_directory
from erudite_edge.errors import UsageError
from erudite_edge.outputs.results import Result, Sink
from erudite_edge.sources.base import Item

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv"})


STILLS_FPS = 2.0  # frame rate of a video made from still images: each stays on screen long enough to read


def caption(result: Result) -> str:
    top = result.top
    if result.answer_label != top.label:  # below --min-confidence
        return f"{result.answer_label} ({top.label}? {top.score:.2f})"
    return f"{top.label} ({top.dataset}) {top.score:.2f}"


def annotate(image_rgb: np.ndarray, result: Result) -> np.ndarray:
    """A BGR copy of the image with the top-1 label, its data set and score drawn on a dark band."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    text = caption(result)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, min(h, w) / 640.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, th // 3)
    cv2.rectangle(bgr, (0, 0), (min(w, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), thickness=-1)
    cv2.putText(bgr, text, (pad, pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return bgr


class VideoSink(Sink):
    """An annotated video (cv2.VideoWriter, mp4v). Frames of other sizes than the first are resized."""

    needs_image = True  # annotates each frame

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = float(fps) if fps and fps > 0 else 30.0
        # A temporary name that keeps the suffix: OpenCV picks the container from it.
        self.tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        frame = annotate(item.image, result)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._size = (w - w % 2, h - h % 2)  # most encoders want even dimensions
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise UsageError(f"--save {self.path}: this OpenCV cannot write mp4v video into "
                                 f"{self.path.suffix or 'a file without suffix'}; use a .mp4 or .avi name")
        assert self._size is not None
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def commit(self) -> None:
        self._release()
        if self.tmp.exists():
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._release()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def describe(self) -> str:
        return f"annotated video -> {self.path}"


class ImageFolderSink(Sink):
    """Annotated images in a folder, named like their sources (frames: frame_000000.jpg); the folder
    is built under a temporary name and appears whole at the end."""

    needs_image = True  # annotates each frame

    def __init__(self, path: Path, overwrite: bool = False):
        self.path = path
        if path.exists() and not path.is_dir():
            raise UsageError(f"--save {path}: exists and is not a folder; use a new folder name or a .mp4 file")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise UsageError(f"--save {path}: folder exists and is not empty; choose another or pass --overwrite")
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_directory(path, overwrite=True))
        self._used: set[str] = set()
        self.images = 0

    def _name_for(self, result: Result, relname: str) -> str:
        rel = Path(relname or result.name.replace(":", "_"))
        suffix = rel.suffix.lower()
        if suffix not in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
            rel = rel.with_name(rel.name + ".jpg")
        name = rel.as_posix().lstrip("/")
        base, n = name, 1
        while name in self._used:
            stem, ext = os.path.splitext(base)
            name = f"{stem}-{n}{ext}"
            n += 1
        self._used.add(name)
        return name

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        out = self.tmp / self._name_for(result, item.relname)
        out.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(out.suffix, annotate(item.image, result))
        if not ok:
            raise UsageError(f"--save: cannot encode {out.name}")
        buf.tofile(str(out))
        self.images += 1

    def commit(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        self._stack.__exit__(RuntimeError, RuntimeError("run failed"), None)

    def describe(self) -> str:
        return f"annotated images -> {self.path}/"


def display_available() -> tuple[bool, str]:
    """Whether a window can be shown: a display server and an OpenCV built with a GUI."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY is not set; over SSH use `ssh -X` or run on the device's desktop)"
    return True, ""


class DisplaySink(Sink):
    """A cv2.imshow window; q or Esc (or closing the window) stops the run."""

    needs_image = True  # annotates each frame

    TITLE = "erudite-edge"

    def __init__(self) -> None:
        cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        self.show(annotate(item.image, result))

    def show(self, bgr: np.ndarray) -> None:
        """Draw a BGR image in the window; q or Esc (or the window closed) asks the run to stop."""
        cv2.imshow(self.TITLE, bgr)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
            self.stop_requested = True
            self.stop_reason = "stopped from the display window"

    def _close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.TITLE)

    commit = _close
    abort = _close

    def describe(self) -> str:
        return "display window"


def open_display(warn: Callable[[str], None]) -> DisplaySink | None:
    """The display window, or None (with one warning) where no window can be created."""
    ok, why = display_available()
    if not ok:
        warn(f"--display: {why}; continuing without a window")
        return None
    try:
        return DisplaySink()
    except cv2.error:
        warn("--display: this OpenCV has no GUI support (opencv-python-headless?); use JetPack's OpenCV "
             "(`sudo apt install nvidia-opencv`); continuing without a window")
        return None



"""`testsrc://FPS`: a synthetic live camera, for trying a bundle on a device without one and for tests
and benchmarks of the live path (like GStreamer's videotestsrc).

`read()` blocks until the next frame is due, as a camera's does, and returns a solid-colour frame;
the colour changes every `hold` frames. Options in the query: `testsrc://30?size=64x48&colors=ff0000,0000ff
&hold=15&frames=N` (frames: the camera "dies" after N frames, for reconnect tests).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from erudite_edge.errors import SourceError

DEFAULT_COLORS = ("ff0000", "0000ff", "ffff00", "00ffff")


class SyntheticCapture:
    """Stands in for cv2.VideoCapture (isOpened, read, get, set, release)."""

    def __init__(self, fps: float, size: tuple[int, int] = (64, 48), colors: tuple[str, ...] = DEFAULT_COLORS,
                 hold: int = 15, frames: int | None = None):
        self.fps = float(fps)
        self.size = size
        self.bgr = [tuple(int(c[i:i + 2], 16) for i in (4, 2, 0)) for c in colors]
        self.hold = max(1, int(hold))
        self.frames = frames
        self.n = 0
        self._t0: float | None = None
        self._open = True
        self._frames: dict[int, np.ndarray] = {}

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return self._open

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self._open or (self.frames is not None and self.n >= self.frames):
            return False, None
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self.n / self.fps
        if due > now:
            time.sleep(due - now)
        else:  # a late reader gets the frame of this moment, as from a camera (the ones missed are gone)
            self.n = int((now - self._t0) * self.fps)
        idx = (self.n // self.hold) % len(self.bgr)
        frame = self._frames.get(idx)
        if frame is None:
            w, h = self.size
            frame = self._frames[idx] = np.empty((h, w, 3), dtype=np.uint8)
            frame[:] = self.bgr[idx]
        self.n += 1
        return True, frame.copy()

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_FOURCC:
            return float(cv2.VideoWriter.fourcc(*"BGR3"))
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.size[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.size[1])
        return 0.0

    def set(self, prop: int, value: Any) -> bool:
        return False

    def release(self) -> None:
        self._open = False


def parse_testsrc(uri: str) -> dict[str, Any]:
    try:
        parts = urlsplit(uri)  # ValueError for a bad [IPv6] host
        fps = float(parts.netloc or "30")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kw: dict[str, Any] = {"fps": fps}
        if "size" in q:
            w, h = q["size"].lower().split("x")
            kw["size"] = (int(w), int(h))
            if min(kw["size"]) < 1:
                raise ValueError(q["size"])
        if "colors" in q:
            kw["colors"] = tuple(c.strip().lstrip("#") for c in q["colors"].split(","))
            for c in kw["colors"]:
                int(c, 16)
                if len(c) != 6:
                    raise ValueError(c)
        if "hold" in q:
            kw["hold"] = int(q["hold"])
            if kw["hold"] < 1:
                raise ValueError(q["hold"])
        if "frames" in q:
            kw["frames"] = int(q["frames"])
            if kw["frames"] < 0:
                raise ValueError(q["frames"])
    except ValueError:
        raise SourceError(f"{uri}: expected testsrc://FPS[?size=WxH&colors=RRGGBB,...&hold=N&frames=N]") from None
    if not 0 < fps <= 1000:
        raise SourceError(f"{uri}: the frame rate must be between 0 and 1000")
    return kw


def open_testsrc(uri: str, *, width: int | None = None, height: int | None = None, reconnect: int | None = 3,
                 backoff: float = 1.0) -> Any:
    from erudite_edge.sources.capture import CaptureSource

    kw = parse_testsrc(uri)
    if width and height:
        kw["size"] = (int(width), int(height))
    return CaptureSource(uri, lambda: SyntheticCapture(**kw), kind="test camera", live=True,
                         open_error=f"cannot open {uri}", reconnect=reconnect, backoff=backoff)

"""`--display` with several sources: one window, one tile per stream, each the newest annotated frame of
its stream (a multi-stream run's tiled view, as DeepStream's tiler). The mosaic is one preallocated image,
so memory does not grow with the run; the window is redrawn at most `max_fps` times a second."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import cv2
import numpy as np

from erudite_edge.outputs.results import Result, Sink
from erudite_edge.outputs.video import annotate
from erudite_edge.sources.base import Item

TILE = (480, 270)  # width, height of one stream's tile (16:9; other shapes are letterboxed)


def grid(streams: int) -> tuple[int, int]:
    """(rows, columns) of the mosaic: as square as it gets, filled row by row."""
    cols = max(1, math.ceil(math.sqrt(streams)))
    return max(1, math.ceil(streams / cols)), cols


class Mosaic:
    """A BGR image of `streams` tiles; put() letterboxes an image into its stream's tile."""

    def __init__(self, streams: int, tile: tuple[int, int] = TILE):
        self.streams = streams
        self.tile = tile
        self.rows, self.cols = grid(streams)
        w, h = tile
        self.image = np.zeros((self.rows * h, self.cols * w, 3), dtype=np.uint8)

    def cell(self, index: int) -> np.ndarray:
        """The view of stream `index`'s tile."""
        if not 0 <= index < self.streams:
            raise IndexError(f"stream {index}: the mosaic has {self.streams}")
        w, h = self.tile
        r, c = divmod(index, self.cols)
        return self.image[r * h:(r + 1) * h, c * w:(c + 1) * w]

    def put(self, index: int, bgr: np.ndarray) -> None:
        cell = self.cell(index)
        th, tw = cell.shape[:2]
        h, w = bgr.shape[:2]
        scale = min(tw / w, th / h)
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        cell[:] = 0
        y, x = (th - nh) // 2, (tw - nw) // 2
        cell[y:y + nh, x:x + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA)


class TiledDisplaySink(Sink):
    """Each result's annotated frame into its stream's tile; the mosaic to `window` (a DisplaySink: its
    show() and its q / Esc / close handling) at most `max_fps` times a second."""

    needs_image = True

    def __init__(self, window: Any, streams: int, max_fps: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.mosaic = Mosaic(streams)
        self.interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.clock = clock
        self._shown = -math.inf

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        self.mosaic.put(result.stream.index, annotate(item.image, result))
        now = self.clock()
        if now - self._shown >= self.interval:
            self._shown = now
            self.window.show(self.mosaic.image)
            self.stop_requested = self.window.stop_requested
            self.stop_reason = self.window.stop_reason

    def commit(self) -> None:
        self.window.commit()

    def abort(self) -> None:
        self.window.abort()

    def describe(self) -> str:
        return f"display window ({self.mosaic.streams} streams tiled {self.mosaic.rows}x{self.mosaic.cols})"

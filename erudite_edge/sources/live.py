"""Latest-frame semantics for live sources (cameras, CSI, RTSP): answer about NOW.

A reader thread pulls frames off the capture as fast as they come and keeps only the newest in one
slot; a frame the model had no time for is overwritten (and counted as dropped). The model takes the
newest frame whenever it is free, so a result is at most one frame interval + one model call old,
however slow the model is. Files and folders never go through here: they keep every frame.

Also: `Backoff` (reopen delays 1 s, 2 s, 4 s ... 30 s) and `redact` (no password in any message).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from erudite_edge.sources.base import Item

_END = object()


class LatestFrame:
    """One slot, overwritten by a reader thread; `take()` returns the newest frame not yet taken."""

    def __init__(self, frames: Iterator[Item], finish: Callable[[Item], Item] | None = None):
        self._frames = frames
        self._finish = finish  # applied to the frames taken only (e.g. the BGR -> RGB conversion)
        self._cond = threading.Condition()
        self._item: Item | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.read = 0  # frames the reader got
        self.dropped = 0  # frames overwritten before anyone took them
        # called (in the reader thread) after each new frame and once at the end: a multi-stream batcher
        # waits on one event for all its streams (erudite_edge.inference.batcher)
        self.on_frame: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="erudite-edge-live-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._frames:
                with self._cond:
                    if self._item is not None:
                        self.dropped += 1
                    self._item = item
                    self.read += 1
                    self._cond.notify_all()
                if self.on_frame is not None:
                    self.on_frame()
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()  # releases the capture in the thread that used it
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            if self.on_frame is not None:
                self.on_frame()

    def take(self, timeout: float = 0.1) -> Item | None | object:
        """The newest frame; None when none came within `timeout`; `LatestFrame.END` once the source ended
        and every frame was taken."""
        with self._cond:
            if self._item is None and not self._ended:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is None:
                if not self._ended:
                    return None
                if self._error is not None:
                    raise self._error
                return _END
        return self._finish(item) if self._finish is not None else item

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    END = _END


class Backoff:
    """Delays before reopening a lost stream: `initial`, doubling per attempt, capped at `maximum`."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0):
        self.initial = max(0.0, float(initial))
        self.maximum = max(self.initial, float(maximum))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1-based)."""
        return min(self.maximum, self.initial * (2.0 ** max(0, attempt - 1)))



"""The multi-stream batcher (nvstreammux's job): one batch of frames from several streams per model call.

Each stream has its own reader thread (erudite_edge.sources.live.LatestFrame for cameras and streams: only the
newest frame is kept; erudite_edge.sources.every_frame.EveryFrame for files: every item, in order), so reading
one camera never waits on another. The batcher takes the newest unprocessed frame of each ready stream:

- a batch holds at most one frame per stream, and at most `size` frames;
- it goes out as soon as every open stream has a frame in it or it is full; otherwise at most `timeout_s`
  after its first frame arrived (nvstreammux's batched-push-timeout), partial;
- streams are scanned round-robin from just after the last stream taken, so with more streams than `size`
  none starves;
- a stream that ends (or whose reader fails) is closed and reported through `on_end`; the others go on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from erudite_edge.errors import UsageError
from erudite_edge.sources.live import LatestFrame

FALLBACK_FPS = 30.0  # streams whose frame rate is not known count as 30 fps


@dataclass(frozen=True)
class StreamOptions:
    """How a multi-stream run batches (`run SRC SRC ...`'s and Classifier.predict_streams'):
    `batch_timeout_ms` the longest a partial batch waits for the other streams after its first frame (None:
    one frame interval of the fastest stream, erudite_edge.inference.batcher.default_timeout_ms)."""

    batch_timeout_ms: float | None = None

    def __post_init__(self) -> None:
        if self.batch_timeout_ms is not None and not self.batch_timeout_ms >= 0:
            raise UsageError(f"batch-timeout-ms {self.batch_timeout_ms}: 0 or more")

    def timeout_s(self, fps: Sequence[float | None]) -> float:
        ms = self.batch_timeout_ms if self.batch_timeout_ms is not None else default_timeout_ms(fps)
        return ms / 1e3


def default_timeout_ms(fps: Sequence[float | None]) -> float:
    """One frame interval of the fastest stream (frame rates not known count as FALLBACK_FPS)."""
    rates = [f if f and f > 0 else FALLBACK_FPS for f in fps] or [FALLBACK_FPS]
    return 1e3 / max(rates)


class StreamBatcher:
    """Batches of (stream index, Item) from `readers` (objects with LatestFrame's take(timeout) and on_frame)."""

    def __init__(self, readers: Sequence[Any], size: int, timeout_s: float, interrupt: threading.Event,
                 on_end: Callable[[int, BaseException | None], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.readers = list(readers)
        self.size = size
        self.timeout_s = max(0.0, timeout_s)
        self.interrupt = interrupt
        self.on_end = on_end
        self.clock = clock
        self.open = [True] * len(self.readers)
        self._wake = threading.Event()
        for r in self.readers:
            r.on_frame = self._wake.set
        self._next = 0  # where the next scan starts (round-robin)
        self.batches_out = 0
        self.partial = 0  # batches that left by the timeout with open streams missing

    def _close(self, i: int, error: BaseException | None) -> None:
        self.open[i] = False
        if self.on_end is not None:
            self.on_end(i, error)

    def _scan(self, batch: dict[int, Any]) -> int | None:
        """Add the newest frame of each ready stream not in `batch` yet, round-robin; the last stream taken."""
        n = len(self.readers)
        last = None
        for k in range(n):
            if len(batch) >= self.size:
                break
            i = (self._next + k) % n
            if not self.open[i] or i in batch:
                continue
            try:
                got = self.readers[i].take(timeout=0)
            except BaseException as e:  # this stream's reader failed: it ends, the others go on
                self._close(i, e)
                continue
            if got is LatestFrame.END:
                self._close(i, None)
            elif got is not None:
                batch[i] = got
                last = i
        return last

    def batches(self) -> Iterator[list[tuple[int, Any]]]:
        """Until every stream ended or `interrupt` is set."""
        n = len(self.readers)
        while any(self.open) and not self.interrupt.is_set():
            batch: dict[int, Any] = {}
            deadline: float | None = None
            last: int | None = None
            while not self.interrupt.is_set():
                self._wake.clear()  # before the scan: a frame arriving during it wakes the wait below
                taken = self._scan(batch)
                last = taken if taken is not None else last
                if not batch:
                    if not any(self.open):
                        break
                    self._wake.wait(0.1)
                    continue
                now = self.clock()
                if deadline is None:
                    deadline = now + self.timeout_s
                waiting_for = sum(1 for i in range(n) if self.open[i] and i not in batch)
                if len(batch) >= self.size or waiting_for == 0:
                    break
                if now >= deadline:
                    self.partial += 1
                    break
                self._wake.wait(min(deadline - now, 0.1))
            if not batch:
                continue
            self._next = ((last if last is not None else self._next) + 1) % n
            self.batches_out += 1
            yield sorted(batch.items())


__all__ = ["FALLBACK_FPS", "StreamBatcher", "StreamOptions", "default_timeout_ms"]

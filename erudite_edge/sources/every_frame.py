"""Every-frame reader for the file sources of a multi-stream run (images, folders, globs, video files).

A live source of a multi-stream run keeps its newest frame (erudite_edge.sources.live.LatestFrame); a file
source keeps every item: a thread reads (decodes) it in order, at most `depth` items ahead, so memory stays
bounded and a file stream never runs ahead of the batcher. `take()` has LatestFrame's meaning, so the
batcher treats both alike; `dropped` is always 0.
"""

from __future__ import annotations

import queue
import threading
import types
from typing import TYPE_CHECKING, Callable

from erudite_edge.sources.live import LatestFrame

if TYPE_CHECKING:
    from erudite_edge.sources.base import Item, Source


class EveryFrame:
    """Reads `source.tasks()` in a thread, every item in order, at most `depth` items ahead of `take()`."""

    dropped = 0

    def __init__(self, source: Source, depth: int = 2):
        self.source = source
        self._q: queue.Queue[Item] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self.read = 0
        self.on_frame: Callable[[], None] | None = None  # as LatestFrame.on_frame
        self._thread = threading.Thread(target=self._run, name="erudite-edge-file-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        tasks = self.source.tasks()
        try:
            for task in tasks:
                if self._stop.is_set() or not self._put(task()):
                    break
                self.read += 1
                if self.on_frame is not None:
                    self.on_frame()
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            if isinstance(tasks, types.GeneratorType):
                tasks.close()  # releases a capture in the thread that used it
            self._ended.set()
            if self.on_frame is not None:
                self.on_frame()

    def take(self, timeout: float = 0.1) -> Item | None | object:
        """The next item; None when none came within `timeout`; LatestFrame.END once the source ended and
        every item was taken."""
        try:
            return self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            pass
        if not self._ended.is_set():
            return None
        try:  # the last items may have been queued just before the end
            return self._q.get_nowait()
        except queue.Empty:
            pass
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return LatestFrame.END

    def stop(self) -> None:
        self._stop.set()
        self.source.stop()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

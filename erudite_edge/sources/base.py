"""What every source is: an Item (one decoded image or frame, or the error that kept it from decoding),
a Task (a callable that returns one Item) and the Source interface that yields tasks in order."""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.core.preprocess import load_image
from erudite_edge.core.redact import redact, remember_uri
from erudite_edge.errors import BadImageError
from erudite_edge.sources.camera_diagnose import BAYER_FOURCCS, bayer_hint  # noqa: F401  (BAYER_FOURCCS: re-exported)

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
    error that kept it from decoding, and how long reading + decoding took. Once the pipeline has resized
    the image into the model's input, `image` is None unless an output needs the pixels (an annotated
    --save, --display, --save-attention): a queued item holds its model input, not its full frame."""

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
        """Decoded (its pixels may have been released since: see above)."""
        return self.error is None


Task = Callable[[], Item]


def ready(item: Item) -> Item:
    """The task of an item already read (a captured frame, a crop): `functools.partial(ready, item)`."""
    return item


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------
class Source(abc.ABC):
    """Something that produces images. `tasks()` yields callables returning Items in order."""

    kind: str = "?"
    live: bool = False  # a camera or stream: frames come in real time, there is no end to wait for

    def __init__(self, uri: str):
        remember_uri(uri)
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


def read_image_item(index: int, path: str, relname: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Item:
    """Load one image file; a file that does not decode becomes an Item carrying its BadImageError, one of
    more than `max_pixels` pixels (None: no limit) its ImageTooLargeError, found before decoding."""
    t0, wall = time.perf_counter(), time.time()
    try:
        image: np.ndarray | None = load_image(path, max_pixels)
        error = None
    except BadImageError as e:
        image, error = None, e
    return Item(index, path, image, error, (time.perf_counter() - t0) * 1e3, relname, t0, wall)



"""Regions of a frame to classify: `run --roi x,y,w,h`, `run --crops-from detections.jsonl`, and the API's
`predict(image, boxes=...)`.

Boxes are in pixels, `x, y, w, h` (top-left corner, width, height: the COCO convention). A box reaching
outside the image is clipped to it; a box with nothing left inside the image (zero width or height after
clipping) is reported as empty, not classified and not an error: warned about once per cause (outside the
image, or zero width or height, for an image size), then only counted, so a box that misses every frame of
a camera does not flood the log; when no box has fit any of the first NEVER_FIT_AFTER images or frames, that
is said once. A negative width or height is an error, and so is a `--roi` box of zero width or height.

A detections file holds one JSON object per line, one line per image or video frame:

    {"image": "birds/0001.jpg", "boxes": [[12, 30, 200, 160], [250, 40, 90, 120]]}
    {"frame": 17, "boxes": [{"bbox": [12, 30, 200, 160], "score": 0.91}]}

`image` names a file of the source (as given, relative to the source folder, or its base name); `frame`
is a video or stream frame number counted from 0. A box is `[x, y, w, h]` or an object with such a
`bbox` (what COCO-style detectors write; its other keys are ignored). An image or frame without a line
is not classified. Anything else is refused with the file name and line number.

Crops of one frame are cut after the frame is decoded, in the thread that reads the source (a slice of
the decoded array; resizing and normalising each crop still runs in the pipeline's worker threads), so
one image is decoded once however many boxes it has.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from erudite_edge.errors import BadImageError, UsageError
from erudite_edge.sources.base import ready


@dataclass(frozen=True)
class Box:
    """A region in pixels: top-left corner (x, y), width w and height h. `clipped`: it was cut to fit
    the image; `empty`: nothing of it lies inside the image."""

    x: int
    y: int
    w: int
    h: int
    clipped: bool = False

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


class EmptyBoxError(BadImageError):
    """A box with nothing inside the image: reported (a warning, an empty prediction), never fatal.
    `repeated`: an earlier box of the run was empty for the same cause; counted, not warned about again."""

    def __init__(self, message: str, repeated: bool = False):
        super().__init__(message)
        self.repeated = repeated


def make_box(value: Any, where: str = "box") -> tuple[float, float, float, float]:
    """[x, y, w, h] (any 4 finite numbers, width and height not negative) as floats; UsageError otherwise."""
    if isinstance(value, Box):
        return float(value.x), float(value.y), float(value.w), float(value.h)
    try:
        if isinstance(value, (str, bytes)) or len(value) != 4:
            raise TypeError
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past the float range
        raise UsageError(f"{where}: {value!r} is not a box; give 4 numbers x, y, w, h in pixels") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise UsageError(f"{where}: {value!r} holds a number that is not finite")
    if w < 0 or h < 0:
        raise UsageError(f"{where}: {value!r} has a negative width or height; boxes are x, y, w, h in pixels")
    return x, y, w, h


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    """The part of the box inside a width x height image, rounded outward to whole pixels."""
    x, y, w, h = box
    x0, y0 = math.floor(x), math.floor(y)
    x1, y1 = math.ceil(x + w), math.ceil(y + h)
    cx0, cy0 = min(max(x0, 0), width), min(max(y0, 0), height)
    cx1, cy1 = min(max(x1, 0), width), min(max(y1, 0), height)
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    return Box(cx0, cy0, max(0, cx1 - cx0), max(0, cy1 - cy0), clipped)


def parse_roi(text: str) -> tuple[float, float, float, float]:
    """`--roi x,y,w,h`; a box of zero width or height (it can never hold a pixel) is a UsageError."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise UsageError(f"--roi {text}: give x,y,w,h in pixels (4 numbers separated by commas)")
    box = make_box(parts, f"--roi {text}")
    if box[2] == 0 or box[3] == 0:
        raise UsageError(f"--roi {text}: a box of zero width or height holds no pixel of any image; "
                         "give x,y,w,h with w and h above 0")
    return box


# -- detections files ------------------------------------------------------------------------------
@dataclass
class Detections:
    """The boxes of a detections file, by image name and by frame number."""

    path: Path
    by_image: dict[str, list[tuple[float, float, float, float]]]
    by_frame: dict[int, list[tuple[float, float, float, float]]]

    def boxes_for(self, name: str, relname: str, index: int) -> list[tuple[float, float, float, float]] | None:
        if name.startswith("frame:"):
            return self.by_frame.get(index)
        for key in (name, relname, os.path.normpath(name), os.path.basename(name)):
            if key in self.by_image:
                return self.by_image[key]
        return None


def read_detections(path: Path) -> Detections:
    """Parse a detections file (the schema in this module's docstring); UsageError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--crops-from {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--crops-from {path}: cannot read it ({e})") from None
    by_image: dict[str, list[tuple[float, float, float, float]]] = {}
    by_frame: dict[int, list[tuple[float, float, float, float]]] = {}
    schema = 'expected {"image": NAME or "frame": N, "boxes": [[x, y, w, h], ...]}'
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, an integer of 4300+ digits
            raise UsageError(f"{where}: not JSON ({getattr(e, 'msg', e)}); {schema}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("boxes"), list) or ("image" in obj) == ("frame" in obj):
            raise UsageError(f"{where}: unknown schema; {schema}")
        boxes = []
        for entry in obj["boxes"]:
            if isinstance(entry, Mapping):
                if "bbox" not in entry:
                    raise UsageError(f"{where}: a box object without \"bbox\"; {schema}")
                entry = entry["bbox"]
            boxes.append(make_box(entry, where))
        if "image" in obj:
            if not isinstance(obj["image"], str) or not obj["image"]:
                raise UsageError(f"{where}: \"image\" must be a file name; {schema}")
            by_image.setdefault(obj["image"], []).extend(boxes)
            by_image.setdefault(os.path.normpath(obj["image"]), by_image[obj["image"]])
        else:
            frame = obj["frame"]
            if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
                raise UsageError(f"{where}: \"frame\" must be a frame number (0, 1, ...); {schema}")
            by_frame.setdefault(frame, []).extend(boxes)
    return Detections(path, by_image, by_frame)


# -- the crop source ---------------------------------------------------------------------------------
WHOLE_IMAGE: Any = object()  # what a boxes function returns for "classify this item whole"
BoxesFor = Callable[[Any], "Sequence[tuple[float, float, float, float]] | None"]


def crop_items(item: Any, boxes: Sequence[tuple[float, float, float, float]],
               seen: set[tuple[str, int, int]] | None = None) -> list[Any]:
    """One Item per box, cut from a decoded item (the box recorded on each; an empty box becomes an item
    carrying EmptyBoxError, `repeated` when `seen` already holds its cause, which is added to it). An item
    that did not decode stays as it is."""
    from erudite_edge.sources.base import Item

    if not item.ok:
        return [item]
    h, w = item.image.shape[:2]
    out = []
    for part, raw in enumerate(boxes):
        box = clip_box(raw, w, h)
        if box.empty:
            why = "has zero width or height" if raw[2] <= 0 or raw[3] <= 0 else f"lies outside the {w}x{h} image"
            cause = (why, w, h)
            repeated = seen is not None and cause in seen
            if seen is not None:
                seen.add(cause)
            err = EmptyBoxError(f"{item.name}: box {[round(v, 1) for v in raw]} {why}; not classified "
                                f"(further boxes that {why.replace('has', 'have').replace('lies', 'lie')} "
                                "are counted in the summary, not warned about again)", repeated)
            out.append(Item(item.index, item.name, None, err, item.decode_ms, item.relname, item.timestamp,
                            item.captured_at, box=box, part=part))
            continue
        crop = np.ascontiguousarray(item.image[box.y : box.y + box.h, box.x : box.x + box.w])
        out.append(Item(item.index, item.name, crop, None, item.decode_ms, item.relname, item.timestamp,
                        item.captured_at, box=box, part=part))
    return out


NEVER_FIT_AFTER = 30  # images or frames in a row, from the start, without one box inside: said once


def _stderr_warn(msg: str) -> None:
    import sys

    print(f"warning: {msg}", file=sys.stderr, flush=True)


class CropSource:
    """A source whose items are the boxes of another source's items. Everything else (kind, live, fps,
    dropped frames, reconnects, end reason) is the wrapped source's. `warn`: where to say, once, that no
    box has fit any of the first NEVER_FIT_AFTER images or frames."""

    def __init__(self, inner: Any, boxes_for: BoxesFor, warn: Callable[[str], None] = _stderr_warn):
        self.inner = inner
        self.boxes_for = boxes_for
        self.warn = warn
        self.uncovered = 0  # items for which boxes_for gave None (no line in a detections file)
        self.empty_boxes = 0
        self._causes: set[tuple[str, int, int]] = set()  # why boxes were empty, each warned about once
        self._missed = 0  # items in a row, from the start, whose boxes were all empty (-1: one box fitted)

    def __getattr__(self, name: str) -> Any:  # only for what this class does not define
        return getattr(self.inner, name)

    @property
    def length(self) -> int | None:
        return None  # boxes per item are known only once it is read

    def _expand(self, item: Any) -> list[Any]:
        boxes = self.boxes_for(item) if item.ok else [(0.0, 0.0, 0.0, 0.0)]
        if boxes is None:
            self.uncovered += 1
            return []
        if boxes is WHOLE_IMAGE:
            return [item]
        items = crop_items(item, boxes, self._causes)
        empty = sum(isinstance(i.error, EmptyBoxError) for i in items)
        self.empty_boxes += empty
        if item.ok and items and self._missed >= 0:
            self._missed = self._missed + 1 if empty == len(items) else -1
            if self._missed == NEVER_FIT_AFTER:
                h, w = item.image.shape[:2]
                self.warn(f"no box has fit any of the first {NEVER_FIT_AFTER} images/frames (the last {w}x{h}): "
                          "nothing is classified until one does; check the boxes against the image size")
        return items

    def tasks(self) -> Iterator[Any]:
        tasks = self.inner.tasks()
        try:
            for task in tasks:
                for crop in self._expand(task()):
                    yield functools.partial(ready, crop)
        finally:
            close = getattr(tasks, "close", None)
            if close is not None:
                close()

    def latest(self) -> "_LatestCrops":
        return _LatestCrops(self.inner.latest(), self._expand)

    def __iter__(self) -> Iterator[Any]:
        for task in self.tasks():
            yield task()

    def describe(self) -> str:
        return f"{self.inner.describe()}, crops"


class _LatestCrops:
    """The newest frame of a live source, handed out one crop at a time (all crops of a frame before
    the next frame is taken)."""

    def __init__(self, reader: Any, expand: Callable[[Any], list[Any]]):
        self.reader = reader
        self.expand = expand
        self.pending: list[Any] = []

    def take(self, timeout: float = 0.1) -> Any:
        while not self.pending:
            item = self.reader.take(timeout=timeout)
            if item is None or not hasattr(item, "ok"):  # nothing yet, or the end marker
                return item
            self.pending = self.expand(item)
        return self.pending.pop(0)

    def join(self, timeout: float = 5.0) -> None:
        self.reader.join(timeout=timeout)


def fixed_boxes(boxes: Sequence[tuple[float, float, float, float]]) -> BoxesFor:
    """The same boxes for every item (`--roi`)."""
    return lambda item: list(boxes)


def detection_boxes(detections: Detections) -> BoxesFor:
    return lambda item: detections.boxes_for(item.name, item.relname, item.index)


__all__ = ["Box", "CropSource", "Detections", "EmptyBoxError", "clip_box", "crop_items", "detection_boxes",
           "fixed_boxes", "make_box", "parse_roi", "read_detections"]

"""Image files: a single image, a folder (optionally recursive) or a glob, decoded independently in the
pipeline's thread pool. Files that are not images by extension are counted and passed over; an image of
more than `max_pixels` pixels is an item with its ImageTooLargeError (read from its header, not decoded)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator

import cv2

from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.sources.base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Source, Task, read_image_item
from erudite_edge.sources.camera_diagnose import BAYER_FOURCCS, bayer_hint  # noqa: F401  (BAYER_FOURCCS: re-exported)


class ImageFilesSource(Source):
    """A list of image files (a single image, a folder or a glob), decoded independently."""

    kind = "images"

    def __init__(self, uri: str, paths: list[str], root: str | None = None, ignored: int = 0,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        super().__init__(uri)
        self.paths = list(paths)
        self.max_pixels = max_pixels  # larger images are skipped from their header, undecoded (None: no limit)
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
            yield functools.partial(read_image_item, i, p, self.relname(p), self.max_pixels)
        self.end_reason = self.end_reason or "all files read"

    def describe(self) -> str:
        return f"{self.uri} ({len(self.paths)} image{'s' if len(self.paths) != 1 else ''})"


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



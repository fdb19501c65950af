"""The source URI grammar (jetson-inference's): `--camera N`, /dev/videoN, v4l2://DEV, csi://N, rtsp://...,
testsrc://FPS, file://PATH, a video file, an image, a folder of images or a glob -> an opened Source."""

from __future__ import annotations

import glob as globlib
import os
import stat

from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.core.redact import redact, remember_uri, split_uri
from erudite_edge.errors import SourceError
from erudite_edge.sources.base import GLOB_CHARS, Source
from erudite_edge.sources.camera_diagnose import BAYER_FOURCCS, bayer_hint  # noqa: F401  (BAYER_FOURCCS: re-exported)
from erudite_edge.sources.capture import check_rtsp_latency, open_csi, open_rtsp, open_v4l2, open_video_file
from erudite_edge.sources.files import ImageFilesSource, _is_image_file, list_images


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
    rtsp_latency_ms: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Source:
    """Open what the user named: `--camera N`, /dev/videoN, v4l2://DEV, csi://N, rtsp://..., a video
    file, an image, a folder of images (recursive on request) or a glob. SourceError if it cannot be.
    `max_pixels`: image files with more pixels are skipped undecoded (None: no limit); frames are not checked.
    `rtsp_latency_ms`: rtsp:// streams' jitter buffer (GStreamer rtspsrc's latency; checked for every source)."""
    check_rtsp_latency(rtsp_latency_ms)
    if spec:
        remember_uri(spec)  # its password is hidden from every message from now on
    live_kw = dict(width=width, height=height, framerate=framerate, reconnect=reconnect, backoff=backoff)
    v4l2_kw = dict(live_kw, camera_format=camera_format)
    if camera is not None:
        if spec:
            raise SourceError(f"give either --camera {camera} or a SOURCE ({redact(spec)}), not both")
        return open_v4l2(int(camera), **v4l2_kw)  # type: ignore[arg-type]
    if not spec:
        raise SourceError("no source: give a file, folder, glob, /dev/videoN, csi://N or rtsp://... (or --camera N)")
    if "\0" in spec:
        raise SourceError(f"{redact(spec)}: holds a NUL byte, which no path or URI can")
    parts = split_uri(spec)
    if parts is not None:  # the scheme in lower case: RTSP://cam/x is rtsp://cam/x
        spec = parts.scheme + spec[spec.index("://"):]
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    if spec.startswith("v4l2://"):
        return open_v4l2(spec[len("v4l2://"):], **v4l2_kw)  # type: ignore[arg-type]
    if spec.startswith("csi://"):
        return open_csi(spec, **live_kw)  # type: ignore[arg-type]
    if spec.startswith(("rtsp://", "rtsps://")):
        return open_rtsp(spec, reconnect=reconnect, backoff=backoff, latency_ms=rtsp_latency_ms)
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
        return ImageFilesSource(spec, paths, root=spec, ignored=ignored, max_pixels=max_pixels)
    if os.path.isfile(spec):
        if _is_image_file(spec):
            return ImageFilesSource(spec, [spec], root=os.path.dirname(spec) or ".", max_pixels=max_pixels)
        return open_video_file(spec)
    if spec.isascii() and spec.isdigit():
        return open_v4l2(int(spec), **v4l2_kw)  # type: ignore[arg-type]
    if _is_char_device(spec):  # /dev/null, /dev/v4l/by-id/...: a device, tried (and diagnosed) as a V4L2 camera
        return open_v4l2(spec, **v4l2_kw)  # type: ignore[arg-type]
    if GLOB_CHARS & set(spec):
        matches = sorted(p for p in globlib.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
        if not matches:
            raise SourceError(f"{spec}: the glob matches no files (quote it so the shell does not expand it)")
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches])
        return ImageFilesSource(spec, matches, root=root, max_pixels=max_pixels)
    raise SourceError(
        f"{spec}: no such file or folder, and not a camera or stream URI "
        "(check the path; cameras are /dev/videoN, v4l2:///dev/videoN, csi://N; streams rtsp://...)"
    )




def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False

"""The capture modes a V4L2 camera offers (pixel formats, frame sizes, frame rates), for the message
when it refuses the one asked for.

Three ioctls of the V4L2 API (VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES, VIDIOC_ENUM_FRAMEINTERVALS) on
the device, with the structs' layouts from linux/videodev2.h. Hand-written because OpenCV does not
enumerate modes and the alternatives (v4l2-ctl, python bindings) are not installed on a Jetson by
default; when the ioctls fail the message falls back to the v4l2-ctl command. Not exercised by the
test suite, which has no camera (README, "Running `run` as a service").
"""

from __future__ import annotations

import fcntl
import os
import struct

_CAPTURE = 1  # V4L2_BUF_TYPE_VIDEO_CAPTURE
_DISCRETE = 1


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("V") << 8) | nr


_FMTDESC = struct.Struct("=III32sII12x")  # index, type, flags, description, pixelformat, mbus_code, reserved
_FRMSIZE = struct.Struct("=IIIII16x8x")  # index, pixel_format, type, width, height, (rest of the union), reserved
_FRMIVAL = struct.Struct("=IIIIIII16x8x")  # index, pixel_format, width, height, type, numerator, denominator, ...
VIDIOC_ENUM_FMT = _iowr(2, _FMTDESC.size)
VIDIOC_ENUM_FRAMESIZES = _iowr(74, _FRMSIZE.size)
VIDIOC_ENUM_FRAMEINTERVALS = _iowr(75, _FRMIVAL.size)


def _fourcc(v: int) -> str:
    return "".join(chr((v >> (8 * i)) & 0xFF) for i in range(4))


def list_modes(device: str, limit: int = 64) -> dict[str, list[tuple[int, int, list[float]]]]:
    """{fourcc: [(width, height, [fps, ...]), ...]} for the discrete modes of a V4L2 capture device."""
    modes: dict[str, list[tuple[int, int, list[float]]]] = {}
    fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    try:
        for i in range(limit):
            buf = bytearray(_FMTDESC.pack(i, _CAPTURE, 0, b"", 0, 0))
            try:
                fcntl.ioctl(fd, VIDIOC_ENUM_FMT, buf)
            except OSError:
                break
            pixfmt = _FMTDESC.unpack(buf)[4]
            sizes = modes.setdefault(_fourcc(pixfmt), [])
            for j in range(limit):
                sbuf = bytearray(_FRMSIZE.pack(j, pixfmt, 0, 0, 0))
                try:
                    fcntl.ioctl(fd, VIDIOC_ENUM_FRAMESIZES, sbuf)
                except OSError:
                    break
                _, _, kind, w, h = _FRMSIZE.unpack(sbuf)
                if kind != _DISCRETE:
                    break
                rates = []
                for k in range(limit):
                    ibuf = bytearray(_FRMIVAL.pack(k, pixfmt, w, h, 0, 0, 0))
                    try:
                        fcntl.ioctl(fd, VIDIOC_ENUM_FRAMEINTERVALS, ibuf)
                    except OSError:
                        break
                    _, _, _, _, ikind, num, den = _FRMIVAL.unpack(ibuf)
                    if ikind != _DISCRETE or not num:
                        break
                    rates.append(round(den / num, 2))
                sizes.append((w, h, rates))
    finally:
        os.close(fd)
    return modes


def describe_modes(device: str) -> str:
    """`MJPG 1920x1080@30, 1280x720@30/60; YUYV 640x480@30`, or how to list them when that fails."""
    try:
        modes = list_modes(device)
    except OSError:
        modes = {}
    if not any(modes.values()):
        return f"see `v4l2-ctl -d {device} --list-formats-ext`"
    parts = []
    for fourcc, sizes in modes.items():
        items = [f"{w}x{h}" + ("@" + "/".join(f"{r:g}" for r in rates) if rates else "") for w, h, rates in sizes]
        parts.append(f"{fourcc.strip()} " + ", ".join(items))
    return "; ".join(parts)

"""Why a V4L2 camera did not open, in words a user can act on: not connected, no permission, not a
capture node, a raw Bayer CSI sensor (use csi://N), or busy (another program captures from it, named
with its PID).

OpenCV's VideoCapture only says "not opened". After it fails, the device is opened here and asked with
three V4L2 ioctls (VIDIOC_QUERYCAP, VIDIOC_G_FMT, then VIDIOC_S_FMT with the same format: a driver
answers EBUSY while another file handle holds the capture queue), plus the format enumeration of
erudite_edge.sources.v4l2_modes. Struct layouts from linux/videodev2.h. Hand-written for the same reason as
v4l2_modes: OpenCV does not expose these, and v4l2-ctl is not installed on a Jetson by default.
The processes holding the device are found by reading /proc/PID/fd links.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Callable

from erudite_edge.sources.v4l2_modes import list_modes

# V4L2 pixel formats of raw Bayer sensors (what a Jetson devkit's CSI camera gives through /dev/videoN)
BAYER_FOURCCS = frozenset("BA81 GBRG GRBG RGGB BG10 GB10 BA10 RG10 BG12 GB12 BA12 RG12 pBAA pGAA pgAA pRAA "
                          "pBCC pGCC pgCC pRCC".split())

_CAP = struct.Struct("=16s32s32sIII12x")  # driver, card, bus_info, version, capabilities, device_caps, reserved
# struct v4l2_format: u32 type + a union aligned to 8 bytes on 64-bit (it holds pointers) of 200 bytes
_FMT_SIZE = 4 + (4 if struct.calcsize("P") == 8 else 0) + 200
_CAPTURE, _CAPTURE_MPLANE = 0x1, 0x1000  # V4L2_CAP_VIDEO_CAPTURE(_MPLANE)
_DEVICE_CAPS = 0x80000000  # V4L2_CAP_DEVICE_CAPS: device_caps is valid


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


VIDIOC_QUERYCAP = _ioc(2, 0, _CAP.size)
VIDIOC_G_FMT = _ioc(3, 4, _FMT_SIZE)
VIDIOC_S_FMT = _ioc(3, 5, _FMT_SIZE)

Ioctl = Callable[[int, int, bytearray], object]


def sensor_number(device: str) -> str:
    return "".join(ch for ch in os.path.basename(device) if ch.isdigit()) or "0"


def bayer_hint(fourcc: str, device: str) -> str | None:
    """The fix when a V4L2 device gives raw Bayer: it is a CSI sensor, whose ISP only csi:// goes through."""
    if fourcc in BAYER_FOURCCS:
        return (f"{device} gives raw Bayer frames ({fourcc}): it is a CSI sensor; open it as csi://{sensor_number(device)} "
                "so the Jetson's ISP debayers it (nvarguscamerasrc)")
    return None


def bayer_only(modes: dict[str, list]) -> str | None:
    """The first Bayer pixel format when every format a device offers is raw Bayer, else None."""
    formats = [f.strip() for f in modes]
    if formats and all(f in BAYER_FOURCCS for f in formats):
        return formats[0]
    return None


def holders(device: str, proc: str = "/proc") -> list[tuple[int, str]]:
    """(pid, command name) of other processes with `device` open, as far as /proc lets us see."""
    target = os.path.realpath(device)
    found: list[tuple[int, str]] = []
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            links = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in links:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) == target:
                    try:
                        with open(os.path.join(proc, pid, "comm")) as f:
                            name = f.read().strip()
                    except OSError:
                        name = "?"
                    found.append((int(pid), name))
                    break
            except OSError:
                continue
    return sorted(found)


def busy_message(device: str, held_by: list[tuple[int, str]]) -> str:
    who = (" (held by " + ", ".join(f"PID {pid} {name}" for pid, name in held_by[:3]) + ")") if held_by else ""
    return (f"camera {device} is busy: another program is capturing from it{who}; stop that program "
            "(or run only one erudite-edge per camera) and try again")


def diagnose(device: str, ioctl: Ioctl = fcntl.ioctl, proc: str = "/proc",
             modes: Callable[[str], dict[str, list]] = list_modes) -> str:
    """A short reason a V4L2 device did not open; "" when none is found. `ioctl` and `modes` are injectable
    for tests (there is no camera, and no v4l2loopback, on the test machine)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"no camera at {device}: it is not connected or has another number (see `ls /dev/video*`)"
    except PermissionError:
        return (f"no permission to open {device}: add yourself to the 'video' group "
                "(`sudo usermod -aG video $USER`, then log in again)")
    except OSError as e:
        if e.errno == errno.EBUSY:
            return busy_message(device, holders(device, proc))
        return f"cannot open {device}: {e.strerror or e}"
    try:
        cap = bytearray(_CAP.size)
        try:
            ioctl(fd, VIDIOC_QUERYCAP, cap)
        except OSError:
            return f"{device} is not a V4L2 camera (it does not answer VIDIOC_QUERYCAP)"
        _, card, _, _, caps, device_caps = _CAP.unpack(bytes(cap))
        if caps & _DEVICE_CAPS:
            caps = device_caps
        if not caps & (_CAPTURE | _CAPTURE_MPLANE):
            name = card.split(b"\0", 1)[0].decode("latin-1")
            return (f"{device} ({name}) is not a video capture node (a metadata or "
                    "output node); try the camera's other /dev/videoN")
        try:
            fourcc = bayer_only(modes(device))
        except OSError:
            fourcc = None
        if fourcc:
            return bayer_hint(fourcc, device) or ""
        fmt = bytearray(_FMT_SIZE)
        struct.pack_into("=I", fmt, 0, 2 if caps & _CAPTURE_MPLANE and not caps & _CAPTURE else 1)
        try:
            ioctl(fd, VIDIOC_G_FMT, fmt)
            ioctl(fd, VIDIOC_S_FMT, fmt)  # the format it has: changes nothing, but a held queue answers EBUSY
        except OSError as e:
            if e.errno == errno.EBUSY:
                return busy_message(device, holders(device, proc))
        return ""
    finally:
        os.close(fd)

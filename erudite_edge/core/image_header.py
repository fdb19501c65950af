"""An image file's width and height from its header, without decoding it: how the pixel limit (`run
--max-pixels`) turns a 20000x20000 PNG of 1.2 MB on disk away before the decoder allocates 1.2 GB for it.

OpenCV has no header-only read (cv2.imread/imdecode decode everything; its own limit,
OPENCV_IO_MAX_IMAGE_PIXELS, is one process-wide 2^30 read once) and Pillow is not a dependency of the
device runtime, so the formats people feed a classifier are read here from their specifications:
PNG (IHDR), JPEG (the SOFn segment: baseline, progressive, lossless, arithmetic), BMP (BITMAPINFOHEADER and
the OS/2 core header), GIF (the logical screen), WebP (VP8, VP8L, VP8X), PBM/PGM/PPM (P1-P6) and TIFF (the
first IFD's ImageWidth/ImageLength). Anything else (JPEG 2000, OpenEXR, Radiance HDR, AVIF, Sun raster,
BigTIFF) gives None: the caller checks the decoded image instead.
"""

from __future__ import annotations

import struct

# 64 megapixels: an 8000 x 8000 image, 192 MB decoded as RGB (twice that while OpenCV < 4.10 converts BGR to RGB)
DEFAULT_MAX_PIXELS = 64_000_000

_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except C4 (DHT), C8 (JPG, reserved) and CC (DAC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG: the two types ImageWidth/ImageLength may have


def image_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(width, height) from the header of an encoded image, or None for a format not read here or a header
    too damaged to say (the decoder then decides)."""
    head = bytes(data[:32])
    try:
        if head.startswith(_PNG):
            return _png(data)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if head.startswith(b"BM"):
            return _bmp(data)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return _positive(*struct.unpack_from("<HH", data, 6))
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(data)
        if head[:2] in (b"II", b"MM"):
            return _tiff(data)
        if len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"123456":
            return _pnm(data)
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _positive(w: int, h: int) -> tuple[int, int] | None:
    return (int(w), int(h)) if w > 0 and h > 0 else None


def _png(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    if bytes(data[12:16]) != b"IHDR":
        return None
    return _positive(*struct.unpack_from(">II", data, 16))


def _jpeg(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            i += 2
            continue
        if marker == 0xD9 or marker == 0xDA:  # EOI or the scan started before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _SOF:
            h, w = struct.unpack_from(">HH", data, i + 5)
            return _positive(w, h)  # a height of 0 (set later by a DNL segment): not known here
        i += 2 + length
    return None


def _bmp(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit
        return _positive(*struct.unpack_from("<HH", data, 18))
    w, h = struct.unpack_from("<ii", data, 18)
    return _positive(w, abs(h))  # a negative height: rows stored top-down


def _webp(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":  # lossy: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height
        w, h = struct.unpack_from("<HH", data, 26)
        return _positive(w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L":  # lossless: signature 0x2f, then width-1 and height-1 in 14 bits each
        (bits,) = struct.unpack_from("<I", data, 21)
        return _positive((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":  # extended: canvas width-1 and height-1, 24 bits each
        w = int.from_bytes(bytes(data[24:27]), "little") + 1
        h = int.from_bytes(bytes(data[27:30]), "little") + 1
        return _positive(w, h)
    return None


def _tiff(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    order = "<" if bytes(data[:2]) == b"II" else ">"
    (magic, ifd) = struct.unpack_from(order + "HI", data, 2)
    if magic != 42:  # 43 is BigTIFF: not read here
        return None
    (count,) = struct.unpack_from(order + "H", data, ifd)
    size: dict[int, int] = {}
    for k in range(count):
        tag, typ = struct.unpack_from(order + "HH", data, ifd + 2 + 12 * k)
        if tag in (256, 257) and typ in _TIFF_TYPES:
            code, _ = _TIFF_TYPES[typ]
            (size[tag],) = struct.unpack_from(order + code, data, ifd + 2 + 12 * k + 8)
    if 256 in size and 257 in size:
        return _positive(size[256], size[257])
    return None


def _pnm(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """P1-P6: the magic, then width and height as ASCII decimals, separated by whitespace and # comments."""
    text = bytes(data[2:4096])
    tokens: list[int] = []
    i = 0
    while len(tokens) < 2 and i < len(text):
        c = text[i : i + 1]
        if c == b"#":
            end = text.find(b"\n", i)
            i = len(text) if end < 0 else end + 1
        elif c.isspace():
            i += 1
        elif c.isdigit():
            j = i
            while j < len(text) and text[j : j + 1].isdigit():
                j += 1
            tokens.append(int(text[i:j]))
            i = j
        else:
            return None
    return _positive(*tokens) if len(tokens) == 2 else None


__all__ = ["DEFAULT_MAX_PIXELS", "image_size"]

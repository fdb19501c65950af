"""The pixel limit: an image's size from its header (erudite_edge.core.image_header), read from real files
that OpenCV and Pillow wrote, and load_image turning a too-large image away before it decodes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from erudite_edge.core.image_header import image_size
from erudite_edge.core.preprocess import load_image
from erudite_edge.errors import BadImageError, ImageTooLargeError

W, H = 53, 37  # odd, different sizes: a swapped width/height shows


def _bgr() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext,params", [
    (".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []), (".webp", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tif", []), (".ppm", []), (".pgm", []), (".pbm", []),
])
def test_size_from_opencv_files(ext: str, params: list[int]) -> None:
    img = _bgr()[..., 0] if ext in (".pgm", ".pbm") else _bgr()
    ok, buf = cv2.imencode(ext, img, params)
    assert ok
    assert image_size(memoryview(buf)) == (W, H), ext


@pytest.mark.parametrize("fmt,kw", [
    ("JPEG", {"exif": Image.Exif()}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True}),
    ("WEBP", {"exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}),  # EXIF: the VP8X header
    ("PNG", {"bits": 1}), ("PPM", {}),
])
def test_size_from_pillow_files(fmt: str, kw: dict) -> None:
    im = Image.fromarray(_bgr()[..., ::-1].copy())
    if kw.get("bits"):
        im = im.convert("1")
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    data = buf.getvalue()
    if fmt == "WEBP" and "exif" in kw:
        assert data[12:16] == b"VP8X"
    assert image_size(data) == (W, H), fmt


def test_hand_written_headers() -> None:
    """Variants neither library writes here: a top-down BMP (negative height), a big-endian TIFF with LONG
    dimensions, a PNM header with comments, and the OS/2 BMP core header."""
    bmp = b"BM" + bytes(12) + struct.pack("<Iii", 40, W, -H) + bytes(40)
    assert image_size(bmp) == (W, H)
    os2 = b"BM" + bytes(12) + struct.pack("<IHH", 12, W, H) + bytes(8)
    assert image_size(os2) == (W, H)
    entries = struct.pack(">HHII", 256, 4, 1, W) + struct.pack(">HHII", 257, 4, 1, H)
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 2) + entries + bytes(4)
    assert image_size(tiff) == (W, H)
    assert image_size(b"P6\n# made by hand\n53 # width\n37\n255\n" + bytes(10)) == (W, H)


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00\xff\xff\xff\xff", b"P6\n53",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"#?RADIANCE\n", b"not an image at all",
])
def test_unknown_or_truncated_gives_none(data: bytes) -> None:
    assert image_size(data) is None


def header_only_png(path: Path, w: int, h: int) -> Path:
    """A PNG of w x h pixels with no image data: its header is all there is (it cannot decode)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


def test_too_large_is_found_before_decoding(tmp_path: Path) -> None:
    """A 20000 x 20000 header without pixels: were it decoded first, it would fail as undecodable; the limit
    reads the header and says it is too large. Under the limit the decoder is reached (and fails)."""
    p = header_only_png(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageTooLargeError) as e:
        load_image(p, max_pixels=64_000_000)
    assert str(e.value).startswith(f"{p}: 20000x20000 pixels (400.0 MP), over the limit of 64000000")
    assert "--max-pixels" in str(e.value) and e.value.kind == "too_large"
    with pytest.raises(BadImageError) as e2:
        load_image(p, max_pixels=None)
    assert not isinstance(e2.value, ImageTooLargeError) and e2.value.kind == "bad_image"


def test_limit_on_decoded_size_where_the_header_is_not_read(tmp_path: Path) -> None:
    """Radiance HDR: no header reader here, so the decoded image is measured (and turned away) instead."""
    ok, buf = cv2.imencode(".hdr", np.ones((H, W, 3), np.float32))
    assert ok and image_size(memoryview(buf)) is None
    p = tmp_path / "scene.hdr"
    buf.tofile(str(p))
    with pytest.raises(ImageTooLargeError):
        load_image(p, max_pixels=W * H - 1)
    assert load_image(p, max_pixels=W * H).shape == (H, W, 3)

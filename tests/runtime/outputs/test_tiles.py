"""`--display` with several sources: the mosaic (one tile per stream, letterboxed) built from real frames and
real results of a multi-stream run. The window itself cannot exist here (no display, headless OpenCV): a
stand-in records what would be shown; the mosaic it receives is the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erudite_edge.api import Classifier
from erudite_edge.core.bundle import Bundle
from erudite_edge.outputs.tiles import TILE, Mosaic, TiledDisplaySink, grid
from erudite_edge.sources.open import open_source
from onnx_fixtures import COLORS, write_video


def test_grid_is_as_square_as_it_gets() -> None:
    assert [grid(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 3)]


def test_a_frame_is_letterboxed_into_its_tile() -> None:
    m = Mosaic(3)
    w, h = TILE
    assert m.image.shape == (2 * h, 2 * w, 3)
    m.put(2, np.full((240, 320, 3), 200, np.uint8))  # 4:3 into 16:9: black bars left and right
    cell = m.cell(2)
    assert (cell[h // 2, w // 2] == 200).all() and (cell[h // 2, 2] == 0).all()
    assert not m.cell(0).any() and not m.cell(1).any()  # the other tiles untouched


class ShownWindow:
    """Stands in for the display window (none can open here): keeps what it was asked to show."""

    stop_requested = False
    stop_reason = ""

    def __init__(self) -> None:
        self.shown: list[np.ndarray] = []
        self.closed = False

    def show(self, bgr: np.ndarray) -> None:
        self.shown.append(bgr.copy())

    def commit(self) -> None:
        self.closed = True

    abort = commit


def test_each_stream_lands_in_its_own_tile(erudite: Bundle, tmp_path: Path) -> None:
    red = write_video(tmp_path / "red.mp4", [COLORS["red"]] * 6, size=(64, 36))
    blue = write_video(tmp_path / "blue.mp4", [COLORS["blue"]] * 6, size=(64, 36))
    window = ShownWindow()
    sink = TiledDisplaySink(window, 2, max_fps=0)  # every result redraws
    with Classifier(erudite, backend="onnxruntime") as clf:
        summary = clf.run_streams([open_source(str(red)), open_source(str(blue))], [sink], handle_signals=False)
    assert summary.frames == 12
    assert len(window.shown) == 12 and window.closed
    last = window.shown[-1]
    w, h = TILE
    below_caption = (h * 3 // 4, w // 2)
    b, g, r = (int(v) for v in last[below_caption])
    assert r > 200 and b < 60 and g < 60  # red in tile 0 (BGR; the video's compression moves a value or two)
    b, g, r = (int(v) for v in last[below_caption[0], w + w // 2])
    assert b > 200 and r < 60 and g < 60  # blue in tile 1
    assert "2 streams tiled 1x2" in sink.describe()

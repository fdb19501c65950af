"""The Python API's errors per image (issue 25 item 8): a bad image costs its own Prediction, not the call;
what `predict` accepts (paths, encoded bytes, arrays) and the UsageError for anything else; `close()` beside
calls in other threads; FFmpeg's own log lines kept off stderr. Real files (a truncated JPEG, a text file
named .jpg, a missing file), real encoded bytes, real threads, a real subprocess; the tiny nearest-colour
ONNX bundle of onnx_fixtures (onnxruntime)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnx_fixtures import COLORS, solid_image, write_image
from paths import REPO


def encoded(rgb: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """A good PNG, a JPEG cut in half (truncated in transfer), a text file named .jpg, a missing file."""
    jpeg = encoded(solid_image(COLORS["blue"], 64, 64, noise=40), ".jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is a text file renamed .jpg\n")
    return {"good": write_image(tmp_path / "red.png", solid_image(COLORS["red"])), "truncated": truncated,
            "text": text, "missing": tmp_path / "missing.jpg"}


def test_one_bad_image_costs_its_own_prediction_not_the_call(clf, files, caplog) -> None:
    from erudite_edge import Prediction

    cyan = encoded(solid_image(COLORS["cyan"]))
    with caplog.at_level(logging.WARNING, logger="erudite_edge"):
        preds = clf.predict([files["good"], files["truncated"], cyan, files["text"], files["missing"],
                             solid_image(COLORS["yellow"])], color="RGB")
    assert [type(p) for p in preds] == [Prediction] * 6
    assert [p.index for p in preds] == list(range(6))
    assert [p.label for p in preds] == ["red", "", "cyan", "", "", "yellow"]
    assert [p.error.kind if p.error else None for p in preds] == [None, "bad_image", None, "bad_image", "unreadable", None]
    for i, key in ((1, "truncated"), (3, "text"), (4, "missing")):
        p = preds[i]
        assert p.source == str(files[key]) and str(files[key]) in p.error.message  # type: ignore[union-attr]
        assert (p.dataset, p.class_index, p.confidence, p.topk, p.empty) == ("", -1, 0.0, (), False)
        assert "--strict" not in p.error.message  # type: ignore[union-attr]
    assert "cannot read" in preds[4].error.message  # type: ignore[union-attr]
    assert preds[2].source == "bytes[2]" and preds[2].dataset == "cool"
    assert not caplog.records  # the error is in the Prediction; no warning besides


def test_on_error_raise_keeps_the_old_behaviour(clf, files) -> None:
    from erudite_edge import BadImageError, UsageError
    from erudite_edge.errors import UnreadableImageError

    with pytest.raises(BadImageError, match="truncated.jpg") as raised:
        clf.predict([files["good"], files["truncated"], files["good"]], on_error="raise")
    assert raised.value.kind == "bad_image" and "--strict" not in str(raised.value)
    with pytest.raises(UnreadableImageError, match="missing.jpg"):
        clf.predict(files["missing"], on_error="raise")
    with pytest.raises(UsageError, match="on_error='skip'.*'item', 'raise'"):
        clf.predict(files["good"], on_error="skip")
    assert clf.predict(files["good"], on_error="raise")[0].label == "red"  # still usable afterwards


def test_bytes_are_an_encoded_image_not_a_list_of_ints(clf, files) -> None:
    png = encoded(solid_image(COLORS["yellow"]))
    jpg = encoded(solid_image(COLORS["blue"], 32, 32), ".jpg")
    for one in (png, bytearray(png), memoryview(png), files["good"].read_bytes()):
        preds = clf.predict(one)
        assert len(preds) == 1 and preds[0].error is None and preds[0].source == "bytes[0]"
    assert clf.predict(png)[0].label == "yellow"
    assert [p.label for p in clf.predict([jpg, png])] == ["blue", "yellow"]
    # a file name given as bytes is bytes that do not decode: one Prediction saying so, not five ints
    (p,) = clf.predict(b"x.jpg")
    assert p.error is not None and p.error.kind == "bad_image" and "bytes[0]" in p.error.message
    assert clf.predict([b""])[0].error.message == "bytes[0]: empty file"  # type: ignore[union-attr]
    # boxes on encoded bytes; a bad image with boxes: one error Prediction for the image
    crops = clf.predict([png, b"junk"], boxes=[[(0, 0, 8, 8), (4, 4, 8, 8)], [(0, 0, 8, 8)]])
    assert [(p.index, p.label, p.error is not None) for p in crops] == [(0, "yellow", False), (0, "yellow", False),
                                                                         (1, "", True)]


@pytest.mark.parametrize("images, what", [
    (None, "images: None"), (7, "images: a int"), ({"a.jpg": 1}, "images: a dict"), (3.5, "images: a float"),
    (["a.jpg", None], "image 1: None"), ([np.zeros((4, 4, 3), np.uint8), 12], "image 1: a int"),
])
def test_what_is_not_an_image_is_a_usage_error_naming_what_is(clf, images, what: str) -> None:
    from erudite_edge import UsageError

    with pytest.raises(UsageError) as raised:
        clf.predict(images, color="RGB")
    msg = str(raised.value)
    assert msg.startswith(what) and "file path" in msg and "bytes" in msg and "uint8 array" in msg, msg


def test_encoded_bytes_as_an_array_say_how_to_pass_them(clf) -> None:
    from erudite_edge import UsageError

    buf = cv2.imencode(".png", solid_image(COLORS["red"]))[1]  # (N, 1) uint8: what cv2.imencode gives
    with pytest.raises(UsageError, match=r"tobytes\(\)"):
        clf.predict(buf, color="BGR")
    assert clf.predict(buf.tobytes())[0].error is None


def test_predict_stream_yields_error_items_the_same_way(clf, tmp_path: Path) -> None:
    from erudite_edge import BadImageError

    folder = tmp_path / "imgs"
    write_image(folder / "0.png", solid_image(COLORS["red"]))
    jpeg = encoded(solid_image(COLORS["blue"], 64, 64, noise=40), ".jpg")
    (folder / "1.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "2.jpg").write_text("not a jpeg")
    write_image(folder / "3.png", solid_image(COLORS["cyan"]))
    got = [(Path(p.source).name, p.label, p.error.kind if p.error else None) for p in clf.predict_stream(folder)]
    assert got == [("0.png", "red", None), ("1.jpg", "", "bad_image"), ("2.jpg", "", "bad_image"), ("3.png", "cyan", None)]
    assert clf.last_summary is not None and clf.last_summary.skipped == 2
    with pytest.raises(BadImageError, match="1.jpg") as raised:
        list(clf.predict_stream(folder, on_error="raise"))
    assert "--strict" not in str(raised.value)
    with warnings.catch_warnings(record=True) as caught:  # the old spelling still raises, and says it is old
        warnings.simplefilter("always")
        with pytest.raises(BadImageError, match="1.jpg"):
            list(clf.predict_stream(folder, strict=True))
    assert any(issubclass(w.category, DeprecationWarning) and "on_error" in str(w.message) for w in caught)


def test_error_kinds_are_a_closed_set() -> None:
    import erudite_edge.api as api
    from erudite_edge.errors import BadImageError

    def subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    kinds = {c.kind for c in subclasses(BadImageError)}  # type: ignore[attr-defined]
    assert kinds <= set(api.ERROR_KINDS) and {"bad_image", "unreadable"} <= kinds
    for kind in api.ERROR_KINDS:  # each documented where users read it
        assert f'"{kind}"' in (api.ErrorInfo.__doc__ or "")


class _BlockingHandler(logging.Handler):
    """A real logging handler that holds the thread logging its first record until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.go.wait(30)


def test_close_waits_for_a_predict_in_another_thread(bundle_dir: Path) -> None:
    from erudite_edge import Classifier, UsageError

    clf = Classifier(bundle_dir, batch=2)
    handler = _BlockingHandler()  # the empty box's warning holds predict inside its run, mid-way
    logger = logging.getLogger("erudite_edge")
    logger.addHandler(handler)
    done: dict[str, object] = {}

    def call() -> None:
        try:
            done["preds"] = clf.predict([solid_image(COLORS["red"])] * 6, boxes=[[(0, 0, 8, 8), (50, 50, 4, 4)]] * 6,
                                        color="RGB")
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            done["error"] = e

    try:
        caller = threading.Thread(target=call)
        caller.start()
        assert handler.entered.wait(30), done
        closer = threading.Thread(target=clf.close)
        closer.start()
        closer.join(0.5)
        assert closer.is_alive()  # close() waits for the call in hand...
        with pytest.raises(UsageError, match="closed"):  # ...and no new call starts meanwhile
            clf.predict(solid_image(COLORS["red"]), color="RGB")
        handler.go.set()
        caller.join(30)
        closer.join(30)
    finally:
        handler.go.set()
        logger.removeHandler(handler)
    assert not caller.is_alive() and not closer.is_alive()
    assert "error" not in done, done.get("error")
    preds = done["preds"]
    assert [(p.label, p.empty) for p in preds] == [("red", False), ("", True)] * 6  # type: ignore[attr-defined]
    assert clf.model is None
    with pytest.raises(UsageError, match="closed"):
        clf.predict(solid_image(COLORS["red"]), color="RGB")
    clf.close()  # idempotent


def test_close_ends_a_stream_iterated_in_another_thread(bundle_dir: Path) -> None:
    """Also while its camera is silent: this one dies after 3 frames and waits 60 s before reopening."""
    import time

    from erudite_edge import Classifier, UsageError

    clf = Classifier(bundle_dir, batch=2)
    first = threading.Event()
    got: list[object] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for p in clf.predict_stream("testsrc://50?size=32x24&colors=0000ff&hold=1000&frames=3", reconnect=None,
                                        backoff=60.0):
                got.append(p)
                first.set()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            errors.append(e)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert first.wait(30)
    time.sleep(0.3)  # 3 frames at 50 fps are gone: the camera is silent, its reopening 60 s away
    t0 = time.monotonic()
    clf.close()  # the live stream never ends on its own
    assert time.monotonic() - t0 < 10
    consumer.join(15)
    assert not consumer.is_alive() and errors == []
    assert got and all(p.label == "blue" for p in got)  # type: ignore[attr-defined]
    assert clf.model is None
    with pytest.raises(UsageError, match="closed"):
        next(clf.predict_stream("testsrc://50?size=32x24", reconnect=0))


@pytest.mark.slow  # a child process
def test_predict_stream_keeps_ffmpeg_log_lines_off_stderr(bundle_dir: Path, tmp_path: Path) -> None:
    """A stream that cannot be opened: our one line (password redacted), none of FFmpeg's / OpenCV's own
    (`[tcp @ 0x...] Connection to tcp://... failed`, `[ WARN:0@...] global cap.cpp ...`)."""
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "stream.py"
    script.write_text(
        "from erudite_edge import Classifier, SourceError\n"
        f"with Classifier({str(bundle_dir)!r}) as clf:\n"
        "    try:\n"
        f"        list(clf.predict_stream('rtsp://cam:s3cret@127.0.0.1:{port}/live', reconnect=0))\n"
        "    except SourceError as e:\n"
        "        print(e)\n")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"cannot open rtsp://cam:***@127.0.0.1:{port}/live" in done.stdout
    assert "[tcp @" not in done.stderr and "WARN" not in done.stderr and "s3cret" not in done.stderr, done.stderr


def test_empty_boxes_and_bad_images_keep_source_order_within_a_batch(clf) -> None:
    """The pipeline tells sinks of unclassified items as it meets them; they must not jump ahead of the
    classified results of their own batch (batch=2 here)."""
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = COLORS["red"]
    img[:, 20:] = COLORS["yellow"]
    preds = clf.predict(img, boxes=[(0, 0, 20, 20), (45, 0, 5, 5), (20, 0, 20, 20)], color="RGB")
    assert [(p.label, p.empty) for p in preds] == [("red", False), ("", True), ("yellow", False)]
    from erudite_edge.api import ImagesSource  # predict's own source, handed to predict_stream opened

    red = solid_image(COLORS["red"])
    got = list(clf.predict_stream(ImagesSource([red, b"junk", red, b"junk"], "RGB")))
    assert [(p.index, p.label, p.error is not None) for p in got] == [
        (0, "red", False), (1, "", True), (2, "red", False), (3, "", True)]

"""Post-processing and outputs: top-k over the joint label space, JSON lines / CSV, annotated video or
images, a display window, and the end-of-run summary.

JSON lines and CSV results go straight into their file, one whole line per result, fsynced about once
a second and at the end (erudite_edge.outputs.result_log): a killed run keeps every complete line it wrote.
Annotated videos and image folders are written under a temporary name and renamed when the run ends
(also on Ctrl-C/SIGTERM, keeping what was done); a run that fails leaves none of them half-written.

File names that are not UTF-8 (Linux allows any bytes) are written losslessly: `name` holds the name with
the undecodable bytes shown as U+FFFD, and `name_b64` the exact bytes in base64 (only for such names).
"""

from __future__ import annotations

import abc
import base64
import contextlib
import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import cv2
import numpy as np

from erudite_edge.errors import UsageError
from erudite_edge.core.fileio import atomic_directory
from erudite_edge.core.labels import LabelSpace
from erudite_edge.sources.base import Item

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv"})
STILLS_FPS = 2.0  # frame rate of a video made from still images: each stays on screen long enough to read


# ------------------------------------------------------------------------------------------------
# Post-processing
# ------------------------------------------------------------------------------------------------
def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(logits, dtype=np.float32)
    x = x - x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


@dataclass(frozen=True)
class Prediction:
    rank: int
    class_id: int  # index in the joint label space
    label: str  # the class's own name inside its data set
    dataset: str  # the data set (coarse label) the class belongs to
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "label": self.label, "dataset": self.dataset,
                "class_id": self.class_id, "score": round(self.score, 6)}


def top_k(probs: np.ndarray, labels: LabelSpace, k: int) -> list[list[Prediction]]:
    """Top-k predictions for each row of a (B, K) probability array over the joint label space."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != labels.num_classes:
        raise ValueError(f"expected scores of shape (B, {labels.num_classes}), got {probs.shape}")
    k = max(1, min(int(k), probs.shape[1]))
    if k < probs.shape[1]:
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(probs.shape[1]), probs.shape)
    owner = labels.dataset_of_class
    offsets = labels.offsets
    out: list[list[Prediction]] = []
    for row, cand in zip(probs, part):
        order = cand[np.argsort(-row[cand], kind="stable")]
        preds = []
        for rank, j in enumerate(order, start=1):
            d = owner[int(j)]
            preds.append(Prediction(rank, int(j), labels.classes[d][int(j) - offsets[d]], labels.datasets[d],
                                    float(row[j])))
        out.append(preds)
    return out


def name_fields(name: str) -> tuple[str, str]:
    """(printable name, base64 of its bytes or "") for a name from the file system. Names that are
    valid UTF-8 come back as they are; others (decoded by Python with surrogateescape) get U+FFFD for
    the bad bytes, plus their exact bytes in base64, so nothing is lost."""
    try:
        name.encode("utf-8")
        return name, ""
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def printable(name: str) -> str:
    """A name fit for a message: undecodable file-name bytes shown as U+FFFD."""
    return name_fields(name)[0]


def iso_utc(t: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


@dataclass
class Result:
    """What the model said about one image or frame."""

    index: int
    name: str
    predictions: list[Prediction]
    label: str = ""  # the answer: the top-1 class, or "unknown" below --min-confidence ("": the top-1)
    dataset: str = ""
    dataset_mass: dict[str, float] = field(default_factory=dict)  # data set -> summed probability
    captured_at: float = 0.0  # time.time() when the image was read / the frame captured
    frame_age_ms: float = 0.0  # from capture to this result
    box: Any = None  # a crop's erudite_edge.sources.crops.Box (None: the whole image)
    timings: dict[str, float] = field(default_factory=dict)  # decode_ms, preprocess_ms, inference_ms (its share)

    @property
    def top(self) -> Prediction:
        return self.predictions[0]

    @property
    def answer_label(self) -> str:
        return self.label or self.top.label

    @property
    def answer_dataset(self) -> str:
        return self.dataset if self.label else self.top.dataset

    def to_dict(self) -> dict[str, Any]:
        name, raw = name_fields(self.name)
        d: dict[str, Any] = {"name": name}
        if raw:
            d["name_b64"] = raw
        d.update({
            "index": self.index,
            "captured_at": iso_utc(self.captured_at) if self.captured_at else None,
            "frame_age_ms": round(self.frame_age_ms, 2),
            "label": self.answer_label, "dataset": self.answer_dataset, "score": round(self.top.score, 6),
            "datasets": {k: round(v, 6) for k, v in self.dataset_mass.items()},
            "predictions": [p.to_dict() for p in self.predictions],
        })
        if self.box is not None:
            d["box"] = self.box.as_list()
            if self.box.clipped:
                d["box_clipped"] = True
        return d


# ------------------------------------------------------------------------------------------------
# Sinks
# ------------------------------------------------------------------------------------------------
class Sink(abc.ABC):
    """Receives every result (with the RGB image it came from). commit() makes the output final;
    abort() is called when the run fails (result files keep what they hold; videos/folders are dropped)."""

    stop_requested = False  # a sink may ask the run to stop (the display window's q / Esc / close)
    stop_reason = ""

    @abc.abstractmethod
    def write(self, result: Result, item: Item) -> None:
        """`item` is what the result came from: its RGB image and relative name."""

    def empty(self, item: Item) -> None:
        """A crop whose box holds nothing of its image (`item.box`): not classified; the run warns."""

    def commit(self) -> None:
        """The run ended (normally or interrupted): keep the output."""

    def abort(self) -> None:
        """The run failed."""

    def describe(self) -> str:
        return type(self).__name__


class JsonlSink(Sink):
    """One JSON object per line (Result.to_dict): to stdout (flushed per line, for piping) or appended
    to a file through an AppendLog (one write per line, fsync about once a second and at the end)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None, mode: str = "new",
                 fsync_interval: float = 1.0):
        from erudite_edge.outputs.result_log import AppendLog

        self.path = path
        self._log: AppendLog | None = None
        if path is not None:
            self._log = AppendLog(path, mode, fsync_interval=fsync_interval)
        else:
            self._stream: IO[str] = stream or sys.stdout

    def write(self, result: Result, item: Item) -> None:
        if self.stop_requested:
            return
        line = json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
        if self._log is not None:
            self._log.write(line.encode("utf-8"))
            return
        try:
            self._stream.write(line)
            self._stream.flush()
        except BrokenPipeError:
            # the reader went away (`| head`): stop the run quietly, as other Unix tools do
            self.stop_requested = True
            self.stop_reason = "stdout closed by its reader"
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())

    def commit(self) -> None:
        if self._log is not None:
            self._log.close()
        else:
            with contextlib.suppress(BrokenPipeError):
                self._stream.flush()

    def abort(self) -> None:
        if self._log is not None:
            self._log.close(keep_empty=False)

    def describe(self) -> str:
        return f"JSON lines -> {printable(str(self.path)) if self.path else 'stdout'}"


def csv_header(k: int, datasets: list[str] | tuple[str, ...] = (), boxes: bool = False) -> list[str]:
    cols = ["name"] + (["box_x", "box_y", "box_w", "box_h"] if boxes else []) + ["label", "dataset", "score"]
    for r in range(1, k + 1):
        cols += [f"top{r}_label", f"top{r}_dataset", f"top{r}_score"]
    cols += ["captured_at", "frame_age_ms"] + [f"mass_{d}" for d in datasets] + ["name_b64"]
    return cols


def _csv_line(row: list[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    return buf.getvalue().encode("utf-8")


class CsvSink(Sink):
    """One row per image: name, the answer (label, data set, score), the top-k as columns (top1_label,
    top1_dataset, top1_score, top2_label, ...), captured_at, frame_age_ms, the mass of each data set,
    and name_b64 (the exact bytes of a file name that is not UTF-8, else empty). Appended like JSONL."""

    def __init__(self, path: Path, k: int, datasets: list[str] | tuple[str, ...] = (), mode: str = "new",
                 fsync_interval: float = 1.0, boxes: bool = False):
        from erudite_edge.outputs.result_log import AppendLog

        self.path = path
        self.k = k
        self.datasets = list(datasets)
        self.boxes = boxes  # crops: box_x, box_y, box_w, box_h after the name
        self._log = AppendLog(path, mode, header=_csv_line(csv_header(k, self.datasets, boxes)),
                              fsync_interval=fsync_interval)

    def write(self, result: Result, item: Item) -> None:
        top = result.top
        name, raw = name_fields(result.name)
        row: list[Any] = [name]
        if self.boxes:
            row += result.box.as_list() if result.box is not None else ["", "", "", ""]
        row += [result.answer_label, result.answer_dataset, f"{top.score:.6f}"]
        for r in range(self.k):
            if r < len(result.predictions):
                p = result.predictions[r]
                row += [p.label, p.dataset, f"{p.score:.6f}"]
            else:
                row += ["", "", ""]
        row += [iso_utc(result.captured_at) if result.captured_at else "", f"{result.frame_age_ms:.2f}"]
        row += [f"{result.dataset_mass[d]:.6f}" if d in result.dataset_mass else "" for d in self.datasets]
        row.append(raw)
        self._log.write(_csv_line(row))

    def commit(self) -> None:
        self._log.close()

    def abort(self) -> None:
        self._log.close(keep_empty=False)

    def describe(self) -> str:
        return f"CSV -> {printable(str(self.path))}"


def caption(result: Result) -> str:
    top = result.top
    if result.answer_label != top.label:  # below --min-confidence
        return f"{result.answer_label} ({top.label}? {top.score:.2f})"
    return f"{top.label} ({top.dataset}) {top.score:.2f}"


def annotate(image_rgb: np.ndarray, result: Result) -> np.ndarray:
    """A BGR copy of the image with the top-1 label, its data set and score drawn on a dark band."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    text = caption(result)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, min(h, w) / 640.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, th // 3)
    cv2.rectangle(bgr, (0, 0), (min(w, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), thickness=-1)
    cv2.putText(bgr, text, (pad, pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return bgr


class VideoSink(Sink):
    """An annotated video (cv2.VideoWriter, mp4v). Frames of other sizes than the first are resized."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = float(fps) if fps and fps > 0 else 30.0
        # A temporary name that keeps the suffix: OpenCV picks the container from it.
        self.tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        frame = annotate(item.image, result)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._size = (w - w % 2, h - h % 2)  # most encoders want even dimensions
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise UsageError(f"--save {self.path}: this OpenCV cannot write mp4v video into "
                                 f"{self.path.suffix or 'a file without suffix'}; use a .mp4 or .avi name")
        assert self._size is not None
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def commit(self) -> None:
        self._release()
        if self.tmp.exists():
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._release()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def describe(self) -> str:
        return f"annotated video -> {self.path}"


class ImageFolderSink(Sink):
    """Annotated images in a folder, named like their sources (frames: frame_000000.jpg); the folder
    is built under a temporary name and appears whole at the end."""

    def __init__(self, path: Path, overwrite: bool = False):
        self.path = path
        if path.exists() and not path.is_dir():
            raise UsageError(f"--save {path}: exists and is not a folder; use a new folder name or a .mp4 file")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise UsageError(f"--save {path}: folder exists and is not empty; choose another or pass --overwrite")
        self._stack = contextlib.ExitStack()
        self.tmp = self._stack.enter_context(atomic_directory(path, overwrite=True))
        self._used: set[str] = set()
        self.images = 0

    def _name_for(self, result: Result, relname: str) -> str:
        rel = Path(relname or result.name.replace(":", "_"))
        suffix = rel.suffix.lower()
        if suffix not in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
            rel = rel.with_name(rel.name + ".jpg")
        name = rel.as_posix().lstrip("/")
        base, n = name, 1
        while name in self._used:
            stem, ext = os.path.splitext(base)
            name = f"{stem}-{n}{ext}"
            n += 1
        self._used.add(name)
        return name

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        out = self.tmp / self._name_for(result, item.relname)
        out.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(out.suffix, annotate(item.image, result))
        if not ok:
            raise UsageError(f"--save: cannot encode {out.name}")
        buf.tofile(str(out))
        self.images += 1

    def commit(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        self._stack.__exit__(RuntimeError, RuntimeError("run failed"), None)

    def describe(self) -> str:
        return f"annotated images -> {self.path}/"


def display_available() -> tuple[bool, str]:
    """Whether a window can be shown: a display server and an OpenCV built with a GUI."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY is not set; over SSH use `ssh -X` or run on the device's desktop)"
    return True, ""


class DisplaySink(Sink):
    """A cv2.imshow window; q or Esc (or closing the window) stops the run."""

    TITLE = "erudite-edge"

    def __init__(self) -> None:
        cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)

    def write(self, result: Result, item: Item) -> None:
        if item.image is None:
            return
        cv2.imshow(self.TITLE, annotate(item.image, result))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.TITLE, cv2.WND_PROP_VISIBLE) < 1:
            self.stop_requested = True
            self.stop_reason = "stopped from the display window"

    def _close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.TITLE)

    commit = _close
    abort = _close

    def describe(self) -> str:
        return "display window"


def open_display(warn: Callable[[str], None]) -> DisplaySink | None:
    """The display window, or None (with one warning) where no window can be created."""
    ok, why = display_available()
    if not ok:
        warn(f"--display: {why}; continuing without a window")
        return None
    try:
        return DisplaySink()
    except cv2.error:
        warn("--display: this OpenCV has no GUI support (opencv-python-headless?); use JetPack's OpenCV "
             "(`sudo apt install nvidia-opencv`); continuing without a window")
        return None


def open_output(path: Path | None, k: int, datasets: list[str] | tuple[str, ...] = (), mode: str = "new",
                boxes: bool = False) -> Sink:
    """JSON lines to stdout (no path), or to FILE.jsonl, or CSV to FILE.csv. `mode`: "new" refuses an
    existing file, "append" adds to it, "overwrite" empties it (both only once its lock is held).
    `boxes`: results are crops; CSV gets box columns (JSON lines carry `box` on their own)."""
    if path is None:
        return JsonlSink()
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return JsonlSink(path, mode=mode)
    if suffix == ".csv":
        return CsvSink(path, k, datasets, mode=mode, boxes=boxes)
    raise UsageError(f"--output {path}: use a .jsonl or .csv file name")


def open_save(target: str | Path, fps: float | None, overwrite: bool = False,
              warn: Callable[[str], None] | None = None) -> Sink:
    """An H.264 stream for rtp://HOST:PORT or rtsp://HOST:PORT/PATH (erudite_edge.outputs.stream), an annotated
    video when the path ends in a video suffix (at `fps`; still images at STILLS_FPS), else a folder of
    annotated images."""
    text = str(target)
    if "://" in text:
        from erudite_edge.outputs.stream import StreamSink
        from erudite_edge.outputs.stream import is_stream_url

        if not is_stream_url(text):
            from erudite_edge.core.redact import redact

            raise UsageError(f"--save {redact(text)}: unsupported URL; streams are rtp://HOST:PORT or "
                             "rtsp://HOST:PORT/PATH, files a .mp4/.avi name or a folder")
        return StreamSink(text, fps or 30.0, warn=warn)
    path = Path(target)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if path.exists() and not overwrite:
            raise UsageError(f"--save {path}: file exists; choose another name or pass --overwrite")
        return VideoSink(path, fps or STILLS_FPS)
    return ImageFolderSink(path, overwrite)


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    source: str
    backend: str
    frames: int = 0  # images/frames classified
    skipped: int = 0  # undecodable files, warned and skipped
    skipped_names: list[str] = field(default_factory=list)
    ignored: int = 0  # files in a folder passed over as not images (by extension)
    wall_s: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)  # totals: decode, preprocess, inference, postprocess, output
    role_ms: dict[str, float] = field(default_factory=dict)  # inference totals per model role (the zoo's)
    end_reason: str = ""
    interrupted: bool = False
    signal: int = 0  # the signal that stopped the run (SIGINT, SIGTERM, SIGHUP), 0 if none
    outputs: list[str] = field(default_factory=list)
    live: bool = False
    dropped: int = 0  # live frames overwritten by a newer one before the model took them
    frame_age_ms: list[float] = field(default_factory=list)  # per result (the last AGE_WINDOW), capture -> result
    losses: list[float] = field(default_factory=list)  # durations (s) of each loss of a live source
    reconnects: int = 0
    empty_boxes: int = 0  # crops with nothing inside their image, warned about and not classified
    # per-stage samples for p50/p99 (the last AGE_WINDOW each): decode and preprocess per file; the model's
    # stages (inference, and h2d / compute / d2h where the backend measures them), postprocess and output
    # per batch, divided by its images
    stage_samples: dict[str, list[float]] = field(default_factory=dict)

    AGE_WINDOW = 100_000
    STAGES = ("decode", "preprocess", "h2d", "compute", "d2h", "inference", "postprocess", "output")

    def add_stage(self, stage: str, ms: float) -> None:
        samples = self.stage_samples.setdefault(stage, [])
        samples.append(ms)
        if len(samples) > 2 * self.AGE_WINDOW:
            del samples[: len(samples) - self.AGE_WINDOW]

    def stage_percentiles(self) -> dict[str, dict[str, float]]:
        """{stage: {"p50", "p99" (ms per image), "n" (samples)}} in pipeline order."""
        out: dict[str, dict[str, float]] = {}
        for stage in self.STAGES:
            v = self.stage_samples.get(stage)
            if v:
                out[stage] = {"p50": round(float(np.percentile(v, 50)), 4), "p99": round(float(np.percentile(v, 99)), 4),
                              "n": len(v)}
        return out

    def age_percentile(self, q: float) -> float:
        return float(np.percentile(self.frame_age_ms, q)) if self.frame_age_ms else 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    # decode and preprocess run for every file, the model and what follows only for classified frames
    PER_FILE_STAGES = ("decode", "preprocess")

    def ms_per_frame(self, total_ms: float, stage: str = "inference") -> float:
        n = self.frames + self.skipped if stage in self.PER_FILE_STAGES else self.frames
        return total_ms / n if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "backend": self.backend, "frames": self.frames, "skipped": self.skipped,
            "ignored": self.ignored, "wall_s": round(self.wall_s, 4), "fps": round(self.fps, 2),
            "ms_per_frame": {k: round(self.ms_per_frame(v, k), 3) for k, v in self.stage_ms.items()},
            "role_ms_per_frame": {k: round(self.ms_per_frame(v), 3) for k, v in self.role_ms.items()},
            "stage_ms": self.stage_percentiles(),
            "end_reason": self.end_reason, "interrupted": self.interrupted, "signal": self.signal,
            "live": self.live, "dropped": self.dropped,
            "frame_age_ms": {"p50": round(self.age_percentile(50), 2), "p99": round(self.age_percentile(99), 2),
                             "n": len(self.frame_age_ms)},
            "losses": len(self.losses), "lost_s": round(sum(self.losses), 3), "reconnects": self.reconnects,
        }


def render_summary(summary: RunSummary, console: Any) -> None:
    """The end-of-run report on stderr (a rich table), like jetson-inference's timing report.

    Stage times are summed over items; decoding and preprocessing overlap inference, so they add
    up to more than the wall time and FPS is frames / wall time."""
    from rich.table import Table

    title = "erudite-edge run" + (" (interrupted)" if summary.interrupted else "")
    source = printable(summary.source)
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    table.add_row("source", source)
    table.add_row("backend", summary.backend)
    table.add_row("frames classified", str(summary.frames))
    table.add_row("skipped (undecodable)", str(summary.skipped))
    if summary.ignored:
        table.add_row("ignored (not images)", str(summary.ignored))
    if summary.empty_boxes:
        table.add_row("empty boxes (not classified)", str(summary.empty_boxes))
    table.add_row("wall time", f"{summary.wall_s:.2f} s")
    table.add_row("FPS", f"{summary.fps:.1f}")
    if summary.frame_age_ms:
        table.add_row("frame age p50 / p99", f"{summary.age_percentile(50):.1f} / {summary.age_percentile(99):.1f} ms"
                      f" (n={len(summary.frame_age_ms)})")
    if summary.live:
        table.add_row("dropped frames (newer one taken)", str(summary.dropped))
    if summary.losses or summary.reconnects:
        table.add_row("stream losses", f"{len(summary.losses)} ({sum(summary.losses):.1f} s without frames), "
                      f"{summary.reconnects} reopen attempt(s)")
    pct = summary.stage_percentiles()
    for stage in summary.STAGES:
        p = pct.get(stage)
        spread = f" (p50 {p['p50']:.2f} / p99 {p['p99']:.2f}, n={int(p['n'])})" if p else ""
        if stage in summary.stage_ms:
            table.add_row(f"{stage} ms/frame", f"{summary.ms_per_frame(summary.stage_ms[stage], stage):.2f}{spread}")
        elif p:  # device stages (TensorRT): percentiles only
            table.add_row(f"  {stage} ms/frame", f"p50 {p['p50']:.2f} / p99 {p['p99']:.2f} (n={int(p['n'])})")
    if len(summary.role_ms) > 1:
        for role, ms in summary.role_ms.items():
            table.add_row(f"  {role} ms/frame", f"{summary.ms_per_frame(ms):.2f}")
    if summary.end_reason:
        table.add_row("ended", printable(summary.end_reason))
    for out in summary.outputs:
        table.add_row("output", out)
    console.print(table)


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)

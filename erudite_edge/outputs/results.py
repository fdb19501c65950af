"""What the pipeline hands every output: one Result per image, frame or box; the Sink interface every
output implements; the end-of-run RunSummary and how it is printed; names made printable."""

from __future__ import annotations

import abc
import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from erudite_edge.core.redact import redact
from erudite_edge.core.scores import ClassScore
from erudite_edge.outputs.schema import RECORD_VERSION, run_id
from erudite_edge.sources.base import Item


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


@dataclass(frozen=True)
class StreamRef:
    """Which source of the run a result came from (the record's `stream`, erudite_edge.outputs.schema):
    its index among the run's sources and its URI as given, any password masked."""

    index: int = 0
    uri: str = ""

    @classmethod
    def of(cls, index: int, source: str) -> StreamRef:
        return cls(index, redact(printable(source)))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "uri": self.uri}


@dataclass
class Result:
    """What the model said about one image or frame."""

    index: int
    name: str
    predictions: list[ClassScore]
    label: str = ""  # the answer: the top-1 class, or "unknown" below --min-confidence ("": the top-1)
    dataset: str = ""
    dataset_mass: dict[str, float] = field(default_factory=dict)  # data set -> summed probability
    captured_at: float = 0.0  # time.time() when the image was read / the frame captured
    frame_age_ms: float = 0.0  # from capture to this result
    box: Any = None  # a crop's erudite_edge.sources.crops.Box (None: the whole image)
    timings: dict[str, float] = field(default_factory=dict)  # decode_ms, preprocess_ms, inference_ms (its share)
    seq: int = 0  # its number among the results of its source in this run (erudite_edge.outputs.schema)
    run_id: str = field(default_factory=run_id)  # this process's (erudite_edge.outputs.schema.run_id)
    stream: StreamRef = field(default_factory=StreamRef)  # the source it came from (index 0 for a run of one)

    @property
    def top(self) -> ClassScore:
        return self.predictions[0]

    @property
    def answer_label(self) -> str:
        return self.label or self.top.label

    @property
    def answer_dataset(self) -> str:
        return self.dataset if self.label else self.top.dataset

    def to_dict(self) -> dict[str, Any]:
        """The JSON lines record, keys in erudite_edge.outputs.schema.JSONL_FIELDS order."""
        name, raw = name_fields(self.name)
        d: dict[str, Any] = {"record_version": RECORD_VERSION, "run_id": self.run_id, "seq": self.seq,
                             "stream": self.stream.to_dict(), "name": name}
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
    # True: write() draws on item.image, so the pipeline keeps each item's full frame until its result is written;
    # False: the frame is released once resized into the model's input (a queued item holds only that)
    needs_image = False
    # the sink hands each image that did not decode to its user (failed()): the run does not warn about it
    reports_failures = False

    @abc.abstractmethod
    def write(self, result: Result, item: Item) -> None:
        """`item` is what the result came from: its RGB image and relative name."""

    def empty(self, item: Item) -> None:
        """A crop whose box holds nothing of its image (`item.box`): not classified; the run warns."""

    def failed(self, item: Item) -> None:
        """An image that did not decode (`item.error`, a BadImageError): not classified; the run skips it
        (warning unless a sink reports_failures). A sink that raises here stops the run with that error."""

    def commit(self) -> None:
        """The run ended (normally or interrupted): keep the output."""

    def abort(self) -> None:
        """The run failed."""

    def describe(self) -> str:
        return type(self).__name__


# ------------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------------
@dataclass
class StreamStats:
    """One stream of a multi-stream run, for the summary: what it gave, how fresh, what it lost."""

    index: int
    uri: str  # as given, any password masked
    kind: str
    live: bool
    frames: int = 0
    skipped: int = 0
    dropped: int = 0  # live frames overwritten by a newer one before the batcher took them
    reconnects: int = 0
    losses: list[float] = field(default_factory=list)
    frame_age_ms: list[float] = field(default_factory=list)  # the last RunSummary.AGE_WINDOW
    wall_s: float = 0.0  # from the start of the run to this stream's end (or the run's)
    end_reason: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def age_percentile(self, q: float) -> float:
        return float(np.percentile(self.frame_age_ms, q)) if self.frame_age_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "uri": self.uri, "kind": self.kind, "live": self.live, "frames": self.frames,
                "skipped": self.skipped, "fps": round(self.fps, 2), "wall_s": round(self.wall_s, 4),
                "frame_age_ms": {"p50": round(self.age_percentile(50), 2), "p99": round(self.age_percentile(99), 2),
                                 "n": len(self.frame_age_ms)},
                "dropped": self.dropped, "losses": len(self.losses), "lost_s": round(sum(self.losses), 3),
                "reconnects": self.reconnects, "end_reason": self.end_reason}


@dataclass
class RunSummary:
    source: str
    backend: str
    frames: int = 0  # images/frames classified
    skipped: int = 0  # bad files (undecodable, or over --max-pixels), warned and skipped
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
    streams: list[StreamStats] = field(default_factory=list)  # a multi-stream run's, one per source, in order
    batch_timeout_ms: float = 0.0  # a multi-stream run's
    partial_batches: int = 0  # a multi-stream run's batches that left by the timeout, streams missing

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

    def why_nothing(self, uncovered: int = 0) -> str | None:
        """For a run that ended by itself without classifying anything, the line that says why; else None.
        `uncovered`: images or frames without a line in a --crops-from file."""
        if self.frames or self.interrupted:
            return None
        parts = [f"{self.skipped} file(s) skipped (undecodable or over --max-pixels)"] if self.skipped else []
        if self.empty_boxes:
            parts.append(f"{self.empty_boxes} box(es) held nothing of their image")
        if uncovered:
            parts.append(f"{uncovered} image(s)/frame(s) had no line in the --crops-from file")
        if not parts and self.end_reason:
            parts.append(printable(self.end_reason))
        return "nothing was classified" + (": " + "; ".join(parts) if parts else "")

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
            **({"streams": [st.to_dict() for st in self.streams], "batch_timeout_ms": round(self.batch_timeout_ms, 3),
                "partial_batches": self.partial_batches} if self.streams else {}),
        }


def render_summary(summary: RunSummary, console: Any) -> None:
    """The end-of-run report on stderr (a rich table), like jetson-inference's timing report.

    Stage times are summed over items; decoding and preprocessing overlap inference, so they add
    up to more than the wall time and FPS is frames / wall time."""
    from rich.table import Table

    title = "erudite-edge run" + (" (interrupted)" if summary.interrupted else "")
    source = redact(printable(summary.source))
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    table.add_row("source", source)
    table.add_row("backend", summary.backend)
    table.add_row("frames classified", str(summary.frames))
    table.add_row("skipped (bad files)", str(summary.skipped))
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
            # a live source's "decode" is its read: the wait for the next frame, then its decoding
            name = "read (wait + decode)" if stage == "decode" and summary.live else stage
            table.add_row(f"{name} ms/frame", f"{summary.ms_per_frame(summary.stage_ms[stage], stage):.2f}{spread}")
        elif p:  # device stages (TensorRT): percentiles only
            table.add_row(f"  {stage} ms/frame", f"p50 {p['p50']:.2f} / p99 {p['p99']:.2f} (n={int(p['n'])})")
    if len(summary.role_ms) > 1:
        for role, ms in summary.role_ms.items():
            table.add_row(f"  {role} ms/frame", f"{summary.ms_per_frame(ms):.2f}")
    if summary.end_reason:
        table.add_row("ended", printable(summary.end_reason))
    for out in summary.outputs:
        table.add_row("output", out)
    if summary.streams:
        table.add_row("batch timeout", f"{summary.batch_timeout_ms:.1f} ms ({summary.partial_batches} partial "
                      "batch(es) left by it)")
    console.print(table)
    if summary.streams:
        render_streams(summary.streams, console)


def render_streams(streams: list[StreamStats], console: Any) -> None:
    """A multi-stream run's lines, one per stream: FPS, frame age p50 / p99, dropped frames, losses, reopen
    attempts, why it ended (lines rather than a table: URIs stay whole in a narrow terminal)."""
    for st in streams:
        line = (f"stream {st.index} {redact(printable(st.uri))}: {st.frames} frames, {st.fps:.1f} FPS, frame age "
                f"p50 / p99 {st.age_percentile(50):.1f} / {st.age_percentile(99):.1f} ms")
        if st.live:
            line += (f", {st.dropped} dropped, {len(st.losses)} loss(es) ({sum(st.losses):.1f} s without frames), "
                     f"{st.reconnects} reopen attempt(s)")
        if st.skipped:
            line += f", {st.skipped} skipped"
        if st.end_reason:
            line += f"; ended: {redact(printable(st.end_reason))}"
        console.print(line, markup=False, highlight=False)


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)



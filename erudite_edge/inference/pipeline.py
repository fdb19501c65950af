"""The batched inference pipeline: source -> decode -> preprocess -> inference -> top-k -> outputs.

Decoding and preprocessing run ahead of inference: a feeder thread walks the source (reading video
frames in order) and hands each item's work to a thread pool (OpenCV releases the GIL, so images
decode in parallel); a bounded queue of futures keeps results in source order and memory bounded.
The main thread takes batches off that queue and runs the model, so the CPU work of batch n+1
overlaps the inference of batch n.
Each worker resizes its image straight into a slot of the pipeline's one preallocated input buffer
(erudite_edge.inference.batch_buffer.InputRing, in the model's input dtype: uint8 bytes for a bundle that
normalises in its graph); a batch is a view of consecutive slots, so batch assembly copies nothing.

Live sources (cameras, CSI, RTSP) do not queue: a reader thread keeps only the newest frame
(erudite_edge.sources.live.LatestFrame) and the model takes it, one frame at a time, whenever it is free, so a
result describes the scene of at most one frame interval + one model call ago.

SIGINT, SIGTERM and SIGHUP stop the run the same way: after the batch in hand, outputs closed (result
files fsynced), summary returned with the signal; a second one stops at once.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import signal
import threading
import time
import types
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, preprocess, preprocess_into
from erudite_edge.core.signals import STOP_SIGNALS, signal_handlers
from erudite_edge.errors import BadImageError
from erudite_edge.inference.answers import Answerer
from erudite_edge.inference.batch_buffer import InputRing
from erudite_edge.inference.models import Model
from erudite_edge.inference.resources import decode_workers, queue_depth
from erudite_edge.inference.run_options import RunOptions  # re-exported: documented here before it had its own module
from erudite_edge.outputs.results import Result, RunSummary, Sink, StreamRef
from erudite_edge.sources.base import Item, Source, Task, ready
from erudite_edge.sources.crops import EmptyBoxError


@dataclass
class Prepared:
    item: Item
    tensor: np.ndarray | None  # with a ring: a view of its slot, overwritten once its batch has run
    preprocess_ms: float = 0.0
    seq: int | None = None  # the item's number in the ring (InputRing.slot), when prepared into one


def prepare(task: Task, spec: PreprocessSpec, out: np.ndarray | None = None, seq: int | None = None,
            keep_image: bool = True) -> Prepared:
    """Decode (run the source's task) and preprocess one item; a bad file stays an item with its error.
    `out`: the slot of the pipeline's input buffer to write into (item number `seq`). `keep_image` False:
    the decoded frame is let go once resized (the item keeps its model input only; no output draws on it)."""
    item = task()
    if not item.ok:
        return Prepared(item, None)
    if item.image is None:  # a source's item that is neither decoded nor failed
        item.error = BadImageError(f"{item.name}: no pixels")
        return Prepared(item, None)
    t0 = time.perf_counter()
    if out is not None:
        tensor = preprocess_into(item.image, spec, out)
    else:
        tensor = preprocess(item.image, spec)
        seq = None
    if not keep_image:
        item.image = None
    return Prepared(item, tensor, (time.perf_counter() - t0) * 1e3, seq)


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Runs a source's tasks ahead of the consumer, in order, at most `depth` items ahead."""

    def __init__(self, source: Source, spec: PreprocessSpec, pool: ThreadPoolExecutor, depth: int,
                 interrupt: threading.Event | None = None, ring: InputRing | None = None, keep_image: bool = True):
        self.source = source
        self.keep_image = keep_image  # False: queued items hold their model input, not their decoded frame
        self.interrupt = interrupt or threading.Event()  # set: stop handing out items (Ctrl-C)
        self.spec = spec
        self.pool = pool
        # ring: each item is preprocessed into its slot (needs ring.slots >= depth + batch + 2)
        self.ring = ring
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="erudite-edge-feeder", daemon=True)
        self._thread.start()

    def _put(self, obj: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _feed(self) -> None:
        tasks = self.source.tasks()
        try:
            for seq, task in enumerate(tasks):
                out = self.ring.slot(seq) if self.ring is not None else None
                if self._stop.is_set() or not self._put(self.pool.submit(prepare, task, self.spec, out, seq,
                                                                         self.keep_image)):
                    break
        except BaseException as e:  # an unexpected failure reading the source: hand it to the consumer
            self._put(_Failed(e))
        finally:
            if isinstance(tasks, types.GeneratorType):
                tasks.close()  # releases a capture in the thread that used it
            self._put(_END)

    def _get(self, block: bool) -> Prepared | object:
        while True:
            try:
                obj = self._q.get(timeout=0.1) if block else self._q.get_nowait()
            except queue.Empty:
                if not block:
                    raise
                if self.interrupt.is_set():  # do not wait on a stalled camera after Ctrl-C
                    return _END
                continue
            if isinstance(obj, _Failed):
                raise obj.error
            if obj is _END:
                return _END
            assert isinstance(obj, Future)
            return obj.result()

    def batches(self, size: int, greedy: bool) -> Iterator[list[Prepared]]:
        """Batches of up to `size` items in source order; `greedy`: do not wait to fill one."""
        done = False
        while not done and not self.interrupt.is_set():
            first = self._get(block=True)
            if first is _END:
                return
            batch = [first]
            while len(batch) < size:
                try:
                    nxt = self._get(block=not greedy)
                except queue.Empty:
                    break
                if nxt is _END:
                    done = True
                    break
                batch.append(nxt)
            yield batch  # type: ignore[misc]

    def stop(self) -> None:
        self.source.stop()
        self._stop.set()
        while True:  # drop what is queued; running work finishes on its own
            try:
                obj = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(obj, Future):
                obj.cancel()
        self._thread.join(timeout=5.0)


def _tell(sinks: Sequence[Sink], unclassified: list[tuple[int, Item]], before: int) -> None:
    """Tell the sinks of the unclassified items (empty boxes, images that did not decode) that come before
    position `before` of their group, taking them off the list."""
    while unclassified and unclassified[0][0] < before:
        item = unclassified.pop(0)[1]
        for sink in sinks:
            if isinstance(item.error, EmptyBoxError):
                sink.empty(item)
            else:
                sink.failed(item)


class StopFlag(threading.Event):
    """Set by a stop signal (its number kept in `signum`) or by the caller."""

    signum = 0


def stop_requested(sinks: Sequence[Sink], frames: int, limit: int | None) -> str:
    """Why a run stops after its latest batch ("" to go on): an output that asked to stop, or --limit reached.
    Shared by Pipeline and MultiStreamPipeline."""
    stopping = [s for s in sinks if s.stop_requested]
    if stopping:
        return stopping[0].stop_reason or "stopped by an output"
    if limit is not None and frames >= limit:
        return f"--limit {limit} reached"
    return ""


def abort_all(sinks: Sequence[Sink]) -> None:
    """Abort every sink after a failure, each on its own (one that fails to abort does not spare the others)."""
    for s in sinks:
        with contextlib.suppress(Exception):
            s.abort()


def commit_all(sinks: Sequence[Sink]) -> None:
    """Commit every sink; on a failure abort them all and re-raise."""
    try:
        for s in sinks:
            s.commit()
    except BaseException:
        abort_all(sinks)
        raise


def mark_interrupted(summary: RunSummary, interrupt: StopFlag) -> str:
    """Record a signal-stopped run in its summary; the stop reason to report."""
    summary.interrupted = True
    summary.signal = interrupt.signum or int(signal.SIGINT)
    name = signal.Signals(summary.signal).name
    return f"interrupted ({'Ctrl-C' if name == 'SIGINT' else name})"


@contextlib.contextmanager
def signals_set(flag: StopFlag) -> Iterator[None]:
    """While running in the main thread, a first SIGINT/SIGTERM/SIGHUP only sets `flag` (the loop stops
    after the batch in hand, so outputs stay consistent); a second one raises KeyboardInterrupt at once."""

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.signum = signum
        flag.set()

    with signal_handlers(STOP_SIGNALS, handler):
        yield


class _LiveFeeder:
    """Batches of one: the newest frame of a live source each time the model is free."""

    def __init__(self, source: Source, spec: PreprocessSpec, interrupt: threading.Event, ring: InputRing | None = None,
                 keep_image: bool = True):
        self.source = source
        self.keep_image = keep_image
        self.spec = spec
        self.interrupt = interrupt
        self.ring = ring
        self.reader = source.latest()  # type: ignore[attr-defined]

    def batches(self, size: int, greedy: bool) -> Iterator[list[Prepared]]:
        from erudite_edge.sources.live import LatestFrame

        seq = 0
        while not self.interrupt.is_set():
            item = self.reader.take(timeout=0.1)
            if item is LatestFrame.END:
                return
            if item is None:
                continue
            out = self.ring.slot(seq) if self.ring is not None else None
            yield [prepare(functools.partial(ready, item), self.spec, out, seq, self.keep_image)]
            seq += 1

    def stop(self) -> None:
        self.source.stop()
        self.reader.join(timeout=2.0)


class Pipeline:
    """Runs a model over a source in batches and sends each result to the sinks."""

    def __init__(
        self,
        model: Model,
        labels: LabelSpace,
        spec: PreprocessSpec,
        *,
        batch: int = 8,
        topk: int = 5,
        workers: int | None = None,
        strict: bool = False,
        limit: int | None = None,
        console: Any = None,
        progress: bool = True,
        answerer: Answerer | None = None,
        handle_signals: bool = True,
        attention: Any = None,
    ):
        if batch < 1 or topk < 1:
            raise ValueError("batch and topk must be at least 1")
        self.model = model
        self.labels = labels
        self.spec = spec
        self.batch = batch
        self.topk = topk
        self.workers = decode_workers(workers)
        self.strict = strict
        self.limit = limit
        self.console = console
        self.show_progress = progress
        self.answerer = answerer or Answerer(labels, topk)
        # False (the Python API): the caller's signal handlers stay as they are; Ctrl-C ends the run after
        # the batch in hand (summary.interrupted) and the caller decides what follows.
        self.handle_signals = handle_signals
        # an attention_maps.AttentionWriter (`run --save-attention`): a grid per result from the
        # classifier's last_attention
        self.attention = attention
        self.depth = queue_depth(self.batch, self.workers)  # inference.resources bounds the memory this takes
        # the one input buffer of this pipeline: workers resize into its slots, batches are views of it
        # the runner's page-locked memory where it has one (TensorRT): batches go to the device from their slots
        allocator = getattr(model, "host_allocator", None)
        self.ring = InputRing(spec, self.batch, self.depth, allocate=allocator() if callable(allocator) else None)
        self.stream = StreamRef()  # the record's `stream` of the source being run (set by run())

    def close(self) -> None:
        """Give the input ring's memory back to where it came from: a runner's page-locked memory is freed now,
        before that runner closes (api.Classifier closes its pipelines first). The pipeline cannot run after;
        idempotent. Not needed for numpy memory, harmless there."""
        self.ring.release()

    def _warn(self, msg: str) -> None:
        from erudite_edge.outputs.results import printable

        msg = printable(msg)
        if self.console is not None:
            self.console.print(f"warning: {msg}", style="yellow", markup=False, highlight=False)
        else:
            import sys

            print(f"warning: {msg}", file=sys.stderr, flush=True)

    @staticmethod
    def _finish(feeder: Prefetcher, pool: ThreadPoolExecutor, progress: Any) -> None:
        feeder.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.stop()

    def _process(self, group: list[Prepared], sinks: Sequence[Sink], summary: RunSummary, stage: dict[str, float]) -> None:
        """One batch: count/skip bad items, run the model on the good ones, top-k, write results. Sinks hear
        of every item in source order: results, empty boxes (Sink.empty) and images that did not decode
        (Sink.failed)."""
        good: list[Prepared] = []
        unclassified: list[tuple[int, Item]] = []  # (position in the group, item): told to the sinks in order
        for n, p in enumerate(group):
            stage["decode"] += p.item.decode_ms
            stage["preprocess"] += p.preprocess_ms
            summary.add_stage("decode", p.item.decode_ms)
            if p.item.ok:
                summary.add_stage("preprocess", p.preprocess_ms)
                good.append(p)
                continue
            unclassified.append((n, p.item))
            if isinstance(p.item.error, EmptyBoxError):  # reported once per cause, counted, never fatal
                if not p.item.error.repeated:
                    self._warn(str(p.item.error))
                summary.empty_boxes += 1
                continue
            if self.strict:  # the same class (ImageTooLargeError stays one: its `kind` says which error it is)
                cls = type(p.item.error) if isinstance(p.item.error, BadImageError) else BadImageError
                raise cls(f"{p.item.error} (--strict stops at the first bad file)")
            summary.skipped += 1
            summary.skipped_names.append(p.item.name)
            if not any(s.reports_failures for s in sinks):
                self._warn(f"{p.item.error}; skipped")
        if self.limit is not None:
            good = good[: max(0, self.limit - summary.frames)]
        if not good:
            _tell(sinks, unclassified, len(group))
            return
        at = {id(p): n for n, p in enumerate(group)}
        t0 = time.perf_counter()
        probs = self.model.predict(self._assemble(good))
        t1 = time.perf_counter()
        answers = self.answerer(probs)
        t2 = time.perf_counter()
        ages = summary.frame_age_ms
        share = (t1 - t0) * 1e3 / len(good)
        for i, (p, a) in enumerate(zip(good, answers)):
            age = (time.perf_counter() - p.item.timestamp) * 1e3 if p.item.timestamp else 0.0
            timings = {"decode_ms": p.item.decode_ms, "preprocess_ms": p.preprocess_ms, "inference_ms": share,
                       "batch": float(len(good))}
            result = Result(p.item.index, p.item.name, a.predictions, a.label, a.dataset, a.dataset_mass,
                            p.item.captured_at, age, box=p.item.box, timings=timings, seq=summary.frames,
                            stream=self.stream)
            _tell(sinks, unclassified, at[id(p)])
            for sink in sinks:
                sink.write(result, p.item)
            if self.attention is not None:
                masks = getattr(self.model, "last_attention", None)
                if masks is not None:
                    self.attention.write(p.item.index, p.item.name, p.item.image, masks[i],
                                         f"{a.dataset}/{a.label}")
            summary.frames += 1
            ages.append(age)
        _tell(sinks, unclassified, len(group))
        if len(ages) > 2 * summary.AGE_WINDOW:
            del ages[: len(ages) - summary.AGE_WINDOW]
        t3 = time.perf_counter()
        stage["inference"] += (t1 - t0) * 1e3
        stage["postprocess"] += (t2 - t1) * 1e3
        stage["output"] += (t3 - t2) * 1e3
        n = len(good)
        summary.add_stage("inference", (t1 - t0) * 1e3 / n)
        summary.add_stage("postprocess", (t2 - t1) * 1e3 / n)
        summary.add_stage("output", (t3 - t2) * 1e3 / n)
        for name, ms in (getattr(self.model, "last_stage_ms", None) or {}).items():
            summary.add_stage(name, ms / n)

    def _assemble(self, good: list[Prepared]) -> np.ndarray:
        """The model's input batch: a view of the ring when the items' slots are consecutive, else one
        gather into its batch buffer; items prepared without a slot are stacked (a copy)."""
        seqs = [p.seq for p in good]
        if all(s is not None for s in seqs):
            return self.ring.batch_of(seqs)  # type: ignore[arg-type]
        return np.stack([p.tensor for p in good])  # type: ignore[misc]

    def _progress(self, source: Source) -> Any:
        if not (self.show_progress and self.console is not None and self.console.is_terminal and source.length):
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=self.console, transient=True)

    def run(self, source: Source, sinks: Sequence[Sink] = ()) -> RunSummary:
        """Process the whole source. Sinks are committed at the end (also when interrupted with
        Ctrl-C: what was done is kept) and aborted when the run fails."""
        if self.ring.released:
            raise RuntimeError("this pipeline is closed (its input ring was released); make another")
        self.stream = StreamRef(0, source.uri)
        summary = RunSummary(source=source.describe(), backend=getattr(self.model, "backend", "?"),
                             ignored=getattr(source, "ignored", 0), outputs=[s.describe() for s in sinks])
        stage = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "output": 0.0}
        roles_before = dict(self.model.role_ms)
        depth = self.depth
        progress = self._progress(source)
        stop_reason = ""
        interrupt = StopFlag()
        summary.live = bool(source.live)
        t_start = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="erudite-edge-prep")
        latest = getattr(source, "latest", None)
        live = source.live and latest is not None
        # the decoded frames are kept only for an output that draws on them or the attention overlays
        keep = self.attention is not None or any(getattr(s, "needs_image", False) for s in sinks)
        feeder: Any = (_LiveFeeder(source, self.spec, interrupt, self.ring, keep) if live
                       else Prefetcher(source, self.spec, pool, depth, interrupt, self.ring, keep))
        try:
            with signals_set(interrupt) if self.handle_signals else contextlib.nullcontext():
                if progress is not None:
                    progress.start()
                    bar = progress.add_task("classifying", total=source.length)
                for group in feeder.batches(self.batch, greedy=source.live):
                    self._process(group, sinks, summary, stage)
                    if progress is not None:
                        progress.advance(bar, len(group))
                    if interrupt.is_set():
                        break
                    stop_reason = stop_requested(sinks, summary.frames, self.limit)
                    if stop_reason:
                        break
        except KeyboardInterrupt:  # a second Ctrl-C, or a run outside the main thread
            interrupt.set()
        except BaseException:
            self._finish(feeder, pool, progress)
            abort_all(sinks)
            raise
        if interrupt.is_set():
            stop_reason = mark_interrupted(summary, interrupt)
        self._finish(feeder, pool, progress)
        commit_all(sinks)
        summary.wall_s = time.perf_counter() - t_start
        summary.dropped = int(getattr(source, "dropped", 0))
        summary.losses = list(getattr(source, "losses", []))
        summary.reconnects = int(getattr(source, "reconnects", 0))
        if len(summary.frame_age_ms) > summary.AGE_WINDOW:
            del summary.frame_age_ms[: len(summary.frame_age_ms) - summary.AGE_WINDOW]
        summary.stage_ms = stage
        summary.role_ms = {r: ms - roles_before.get(r, 0.0) for r, ms in self.model.role_ms.items()}
        summary.end_reason = stop_reason or source.end_reason
        return summary


__all__ = ["Pipeline", "Prefetcher", "Prepared", "RunOptions", "StopFlag", "prepare", "signals_set"]

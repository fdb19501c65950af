"""Several sources, one model: `run SRC SRC ...` and Classifier.predict_streams.

One reader thread per source (cameras and streams keep their newest frame, files every item), the batcher
(erudite_edge.inference.batcher) groups at most one frame per stream into a batch, the batch is resized in
parallel into the pipeline's input ring (erudite_edge.inference.batch_buffer) and goes through the model in
one call. Each result carries its stream (erudite_edge.outputs.results.StreamRef) and its stream's `seq`, and
goes to the run's sinks and to its stream's own (`--save` with `{stream}`). Each stream smooths (`--smooth`)
on its own frames only; streams of separate images (folders, globs) are not smoothed.

A stream that ends (a file read to its end, a camera lost beyond `--reconnect`: the source says so, a
reader that failed: one warning) is closed; the others go on; the run ends when every stream has ended, at
`--limit`, or on a stop signal (after the batch in hand, as the single-source pipeline).
"""

from __future__ import annotations

import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BadImageError
from erudite_edge.inference.answers import Answerer
from erudite_edge.inference.batch_buffer import InputRing
from erudite_edge.inference.batcher import StreamBatcher, StreamOptions
from erudite_edge.inference.models import Model
from erudite_edge.inference.pipeline import (
    StopFlag,
    abort_all,
    commit_all,
    mark_interrupted,
    prepare,
    signals_set,
    stop_requested,
)
from erudite_edge.inference.resources import decode_workers
from erudite_edge.outputs.results import Result, RunSummary, Sink, StreamRef, StreamStats, printable
from erudite_edge.sources.base import Item, Source, ready
from erudite_edge.sources.every_frame import EveryFrame


class _Stream:
    """One source of the run: its reader, its answerer (smoothing state), its own sinks, its numbers."""

    def __init__(self, index: int, source: Source, answerer: Answerer, sinks: Sequence[Sink]):
        self.index = index
        self.source = source
        self.ref = StreamRef(index, source.uri)
        self.answerer = answerer
        self.sinks = list(sinks)
        self.stats = StreamStats(index, source.uri, source.kind, bool(source.live))
        self.seq = 0
        self.ended_at: float | None = None
        latest = getattr(source, "latest", None)
        self.reader: Any = latest() if source.live and latest is not None else EveryFrame(source)

    def stop(self) -> None:
        self.source.stop()
        stop = getattr(self.reader, "stop", None)
        if stop is not None:
            stop()

    def join(self) -> None:
        self.reader.join(timeout=2.0)


class MultiStreamPipeline:
    """Runs a model over several sources at once, batching across them."""

    def __init__(self, model: Model, labels: LabelSpace, spec: PreprocessSpec, *, answerer: Answerer,
                 batch: int = 8, workers: int | None = None, strict: bool = False, limit: int | None = None,
                 console: Any = None, handle_signals: bool = True, options: StreamOptions | None = None):
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.model = model
        self.labels = labels
        self.spec = spec
        self.answerer = answerer
        self.batch = batch
        self.workers = decode_workers(workers)
        self.strict = strict
        self.limit = limit
        self.console = console
        self.handle_signals = handle_signals
        self.options = options or StreamOptions()
        allocator = getattr(model, "host_allocator", None)
        # one batch in hand and one being resized: consecutive slots, so a batch is a view of the ring
        self.ring = InputRing(spec, self.batch, self.batch, allocate=allocator() if callable(allocator) else None)
        self._seq = 0

    def close(self) -> None:
        """As Pipeline.close: the input ring's memory goes back now. Idempotent."""
        self.ring.release()

    def _warn(self, msg: str) -> None:
        from erudite_edge.core.redact import redact

        msg = redact(printable(msg))
        if self.console is not None:
            self.console.print(f"warning: {msg}", style="yellow", markup=False, highlight=False)
        else:
            import sys

            print(f"warning: {msg}", file=sys.stderr, flush=True)

    def run(self, sources: Sequence[Source], sinks: Sequence[Sink] = (),
            stream_sinks: Sequence[Sequence[Sink]] | None = None) -> RunSummary:
        """Classify every source until all have ended (or --limit, or a stop signal). `sinks` get every
        result; `stream_sinks[i]` only stream i's. Sinks are committed at the end, aborted if the run fails."""
        if self.ring.released:
            raise RuntimeError("this pipeline is closed (its input ring was released); make another")
        per = list(stream_sinks) if stream_sinks is not None else [[] for _ in sources]
        if len(per) != len(sources):
            raise ValueError("stream_sinks: one list per source")
        every_sink = list(sinks) + [s for group in per for s in group]
        keep = any(getattr(s, "needs_image", False) for s in every_sink)
        # --smooth averages a stream's consecutive frames; a folder's images are not frames of one scene
        streams = [_Stream(i, src, self.answerer.fresh(1 if src.kind == "images" else None), per[i])
                   for i, src in enumerate(sources)]
        timeout_s = self.options.timeout_s([src.fps for src in sources])
        summary = RunSummary(source=f"{len(sources)} streams", backend=getattr(self.model, "backend", "?"),
                             outputs=[s.describe() for s in every_sink], live=any(src.live for src in sources),
                             ignored=sum(int(getattr(src, "ignored", 0)) for src in sources),
                             batch_timeout_ms=timeout_s * 1e3)
        stage = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "output": 0.0}
        roles_before = dict(self.model.role_ms)
        interrupt = StopFlag()
        t_start = time.perf_counter()

        def ended(i: int, error: BaseException | None) -> None:
            st = streams[i]
            st.ended_at = time.perf_counter()
            if error is not None:
                st.stats.end_reason = f"failed: {error}"
                self._warn(f"stream {i} ({st.ref.uri}) failed: {error}; the other streams go on")
            else:  # a live source said why itself (lost, reopen attempts used up)
                st.stats.end_reason = st.source.end_reason or "ended"

        batcher = StreamBatcher([st.reader for st in streams], min(self.batch, len(streams)), timeout_s, interrupt,
                                on_end=ended)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="erudite-edge-prep")
        stop_reason = ""
        try:
            with signals_set(interrupt) if self.handle_signals else contextlib.nullcontext():
                for group in batcher.batches():
                    self._process([(streams[i], item) for i, item in group], sinks, summary, stage, pool, keep)
                    if interrupt.is_set():
                        break
                    stop_reason = stop_requested(every_sink, summary.frames, self.limit)
                    if stop_reason:
                        break
        except KeyboardInterrupt:  # a second Ctrl-C, or a run outside the main thread
            interrupt.set()
        except BaseException:
            self._finish(streams, pool)
            abort_all(every_sink)
            raise
        if interrupt.is_set():
            stop_reason = mark_interrupted(summary, interrupt)
        self._finish(streams, pool)
        commit_all(every_sink)
        t_end = time.perf_counter()
        summary.wall_s = t_end - t_start
        for st in streams:
            stats = st.stats
            stats.wall_s = (st.ended_at or t_end) - t_start
            stats.dropped = int(getattr(st.source, "dropped", 0))
            stats.losses = list(getattr(st.source, "losses", []))
            stats.reconnects = int(getattr(st.source, "reconnects", 0))
            if not stats.end_reason and st.source.end_reason not in ("", "stopped"):
                stats.end_reason = st.source.end_reason
            summary.dropped += stats.dropped
            summary.losses += stats.losses
            summary.reconnects += stats.reconnects
        summary.streams = [st.stats for st in streams]
        summary.partial_batches = batcher.partial
        if len(summary.frame_age_ms) > summary.AGE_WINDOW:
            del summary.frame_age_ms[: len(summary.frame_age_ms) - summary.AGE_WINDOW]
        summary.stage_ms = stage
        summary.role_ms = {r: ms - roles_before.get(r, 0.0) for r, ms in self.model.role_ms.items()}
        summary.end_reason = stop_reason or (f"all {len(streams)} streams ended" if not any(batcher.open) else "")
        return summary

    @staticmethod
    def _finish(streams: list[_Stream], pool: ThreadPoolExecutor) -> None:
        for st in streams:
            st.stop()
        for st in streams:
            st.join()
        pool.shutdown(wait=True, cancel_futures=True)

    def _process(self, group: list[tuple[_Stream, Item]], sinks: Sequence[Sink], summary: RunSummary,
                 stage: dict[str, float], pool: ThreadPoolExecutor, keep: bool) -> None:
        """One batch (at most one item per stream): bad files skipped, the rest resized in parallel into
        consecutive ring slots, one model call, each result to the run's sinks and its stream's."""
        good: list[tuple[_Stream, Item]] = []
        for st, item in group:
            stage["decode"] += item.decode_ms
            summary.add_stage("decode", item.decode_ms)
            if item.ok:
                good.append((st, item))
                continue
            if self.strict:
                cls = type(item.error) if isinstance(item.error, BadImageError) else BadImageError
                raise cls(f"{item.error} (--strict stops at the first bad file)")
            summary.skipped += 1
            st.stats.skipped += 1
            summary.skipped_names.append(item.name)
            for sink in list(sinks) + st.sinks:
                sink.failed(item)
            if not any(s.reports_failures for s in list(sinks) + st.sinks):
                self._warn(f"stream {st.index}: {item.error}; skipped")
        if self.limit is not None:
            good = good[: max(0, self.limit - summary.frames)]
        if not good:
            return
        seqs = list(range(self._seq, self._seq + len(good)))
        self._seq += len(good)
        futures = [pool.submit(prepare, functools.partial(ready, item), self.spec, self.ring.slot(seq), seq, keep)
                   for (st, item), seq in zip(good, seqs)]
        prepared = [f.result() for f in futures]
        for p in prepared:
            stage["preprocess"] += p.preprocess_ms
            summary.add_stage("preprocess", p.preprocess_ms)
        t0 = time.perf_counter()
        probs = self.model.predict(self.ring.batch_of(seqs))
        t1 = time.perf_counter()
        answers = [st.answerer(probs[j:j + 1])[0] for j, (st, _) in enumerate(good)]
        t2 = time.perf_counter()
        share = (t1 - t0) * 1e3 / len(good)
        for (st, _), p, a in zip(good, prepared, answers):
            item = p.item
            age = (time.perf_counter() - item.timestamp) * 1e3 if item.timestamp else 0.0
            timings = {"decode_ms": item.decode_ms, "preprocess_ms": p.preprocess_ms, "inference_ms": share,
                       "batch": float(len(good))}
            result = Result(item.index, item.name, a.predictions, a.label, a.dataset, a.dataset_mass,
                            item.captured_at, age, box=item.box, timings=timings, seq=st.seq, stream=st.ref)
            st.seq += 1
            for sink in list(sinks) + st.sinks:
                sink.write(result, item)
            summary.frames += 1
            st.stats.frames += 1
            summary.frame_age_ms.append(age)
            st.stats.frame_age_ms.append(age)
            if len(st.stats.frame_age_ms) > 2 * summary.AGE_WINDOW:
                del st.stats.frame_age_ms[: len(st.stats.frame_age_ms) - summary.AGE_WINDOW]
        if len(summary.frame_age_ms) > 2 * summary.AGE_WINDOW:
            del summary.frame_age_ms[: len(summary.frame_age_ms) - summary.AGE_WINDOW]
        t3 = time.perf_counter()
        n = len(good)
        stage["inference"] += (t1 - t0) * 1e3
        stage["postprocess"] += (t2 - t1) * 1e3
        stage["output"] += (t3 - t2) * 1e3
        summary.add_stage("inference", (t1 - t0) * 1e3 / n)
        summary.add_stage("postprocess", (t2 - t1) * 1e3 / n)
        summary.add_stage("output", (t3 - t2) * 1e3 / n)
        for name, ms in (getattr(self.model, "last_stage_ms", None) or {}).items():
            summary.add_stage(name, ms / n)


__all__ = ["MultiStreamPipeline"]

"""The Python API: a bundle as a classifier in three lines (no torch).

    from erudite_edge import Classifier

    with Classifier("runs/demo/bundle") as clf:
        for p in clf.predict(["a.jpg", "b.jpg"]):
            print(p.source, p.dataset, p.label, p.confidence)

`Classifier` loads the bundle's model once (the same backend choice, precision rule and loaders as
`erudite-edge run`) and classifies through the same pipeline `run` uses (erudite_edge.inference.pipeline: decode,
the bundle's preprocessing, batching, the model, top-k and per-data-set mass): `run` itself is
`Classifier.run` with its sinks. `predict` and `predict_stream` run that pipeline in a worker thread and
hand its results back as `Prediction` objects, in source order.

An image that does not decode does not cost the call: its Prediction carries `error` (an ErrorInfo: the
message and its kind) and no label (`on_error="raise"`: BadImageError instead). Everything else is one of
erudite_edge.errors' typed exceptions (BundleError, UsageError, BadImageError, BackendUnavailable,
SourceError), each with one line saying what to do.

`close()` is safe beside calls in other threads: it stops their predict_stream loops (they end after the
batch in hand), waits for their predict and run calls to finish, then releases the model; later calls
raise UsageError.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.core.preprocess import decode_image
from erudite_edge.errors import BadImageError, UsageError
from erudite_edge.inference.answers import Answerer, AnswerOptions
from erudite_edge.inference.batcher import StreamOptions
from erudite_edge.inference.models import ZooModel, load_model
from erudite_edge.inference.multistream import MultiStreamPipeline
from erudite_edge.inference.pipeline import Pipeline
from erudite_edge.inference.resources import check_memory, fit_to_model
from erudite_edge.inference.run_options import RunOptions
from erudite_edge.outputs.results import Result, RunSummary, Sink
from erudite_edge.sources.base import Item, Source, Task, read_image_item
from erudite_edge.sources.crops import WHOLE_IMAGE, Box, CropSource, make_box

ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray]
BoxLike = Union[Box, Sequence[float]]

log = logging.getLogger("erudite_edge")


@dataclass(frozen=True)
class TopK:
    """One of the k most probable classes."""

    rank: int  # 1 = the most probable
    class_index: int  # index in the bundle's joint label space (labels.txt order)
    label: str  # the class's name inside its data set
    dataset: str
    confidence: float


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent on one prediction. `inference_ms` is its share of the batch it ran in
    (the batch's model time / `batch`)."""

    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    batch: int = 0


ERROR_KINDS = ("bad_image", "unreadable", "too_large")  # ErrorInfo.kind: every BadImageError subclass's `kind`
ON_ERROR = ("item", "raise")


@dataclass(frozen=True)
class ErrorInfo:
    """Why an image got no answer. `message`: one line naming the image and what is wrong with it. `kind`,
    one of ERROR_KINDS: "bad_image" (its bytes do not decode: corrupt, truncated, empty, not an image),
    "unreadable" (the file cannot be read: missing, a folder, no permission), "too_large" (more pixels than
    RunOptions.max_pixels allows, found from the header before decoding)."""

    message: str
    kind: str


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image, frame or box.

    `label` is the top-1 class (or "unknown" below the Classifier's `min_confidence`), `dataset` its data
    set, `confidence` its probability; `topk` the k most probable classes; `dataset_mass` the summed
    probability of each data set's classes. `box`: the region classified (clipped to the image), None for
    the whole image. `empty`: the box held nothing of the image; nothing was classified (label "",
    class_index -1, confidence 0, no top-k). `error`: the image did not decode (an ErrorInfo); nothing
    was classified either (label "", dataset "", class_index -1, confidence 0, no top-k); None otherwise."""

    source: str  # the file, "array[i]" for an array given to predict, "frame:N" for a video or stream
    index: int  # which image or frame of the input (0, 1, ...)
    dataset: str
    class_index: int
    label: str
    confidence: float
    topk: tuple[TopK, ...] = ()
    dataset_mass: dict[str, float] = field(default_factory=dict)
    timings: Timings = Timings()
    box: Box | None = None
    empty: bool = False
    captured_at: float = 0.0  # time.time() when the image was read or the frame captured
    error: ErrorInfo | None = None
    stream: int = 0  # predict_streams: which of its sources (0, 1, ...); 0 elsewhere

    @classmethod
    def from_result(cls, r: Result) -> "Prediction":
        top = tuple(TopK(p.rank, p.class_id, p.label, p.dataset, p.score) for p in r.predictions)
        t = r.timings
        return cls(r.name, r.index, r.answer_dataset, top[0].class_index, r.answer_label, top[0].confidence, top,
                   dict(r.dataset_mass), Timings(t.get("decode_ms", 0.0), t.get("preprocess_ms", 0.0),
                                                 t.get("inference_ms", 0.0), int(t.get("batch", 0))),
                   r.box, False, r.captured_at, stream=r.stream.index)

    @classmethod
    def empty_box(cls, item: Item) -> "Prediction":
        return cls(item.name, item.index, "", -1, "", 0.0, box=item.box, empty=True, captured_at=item.captured_at)

    @classmethod
    def failed(cls, item: Item) -> "Prediction":
        """The Prediction of an image that did not decode (`item.error`)."""
        err = item.error
        return cls(item.name, item.index, "", -1, "", 0.0, timings=Timings(decode_ms=item.decode_ms), box=item.box,
                   captured_at=item.captured_at, error=ErrorInfo(str(err), getattr(err, "kind", "bad_image")))


# -- inputs ---------------------------------------------------------------------------------------------
COLORS = ("RGB", "BGR")


def as_rgb(image: np.ndarray, color: str | None, where: str) -> np.ndarray:
    """An HxWx3 uint8 RGB view of an HxW, HxWx1, HxWx3 or HxWx4 uint8 array in `color` order."""
    import cv2

    if color is None:
        raise UsageError(f"{where}: an array needs its colour order: predict(..., color='BGR') for OpenCV "
                         "(cv2.imread, VideoCapture), color='RGB' for PIL / imageio")
    if color not in COLORS:
        raise UsageError(f"{where}: color={color!r}; one of RGB, BGR")
    if image.dtype != np.uint8:
        raise UsageError(f"{where}: a {image.dtype} array; give uint8 pixels (0-255)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise UsageError(f"{where}: an array of shape {image.shape}; give HxWx3 (HWC) pixels (encoded image "
                         "bytes such as cv2.imencode's: give them as bytes, array.tobytes())")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if color == "BGR" else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color == "BGR" else np.ascontiguousarray(image)


def _array_item(index: int, rgb: np.ndarray) -> Item:
    return Item(index, f"array[{index}]", rgb, None, 0.0, f"array_{index:06d}")


def _bytes_item(index: int, data: bytes | bytearray | memoryview, max_pixels: int | None = None) -> Item:
    """Decode encoded image bytes (JPEG, PNG, ... as a file holds them); bytes that do not decode become an
    Item carrying its BadImageError."""
    t0, wall = time.perf_counter(), time.time()
    name = f"bytes[{index}]"
    try:
        image: np.ndarray | None = decode_image(np.frombuffer(data, dtype=np.uint8), name=name, max_pixels=max_pixels)
        error = None
    except BadImageError as e:
        image, error = None, e
    return Item(index, name, image, error, (time.perf_counter() - t0) * 1e3, f"bytes_{index:06d}", t0, wall)


ONE_IMAGE = (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)
ACCEPTED = "a file path, encoded image bytes (JPEG, PNG, ...), a numpy HxWx3 uint8 array"


def as_image_list(images: Any) -> tuple[list[ImageLike], bool]:
    """predict's `images` as a list, and whether it was one image; UsageError naming what is accepted."""
    if isinstance(images, ONE_IMAGE):
        return [images], True
    if images is None or isinstance(images, (Mapping, set, frozenset)) or not isinstance(images, Iterable):
        raise UsageError(f"images: {'None' if images is None else 'a ' + type(images).__name__}; give {ACCEPTED}, "
                         "or a list of them")
    return list(images), False


class ImagesSource(Source):
    """Images given to `predict`: files and encoded bytes (decoded in the pipeline's threads, as `run`
    does) and arrays."""

    kind = "images"

    def __init__(self, images: Sequence[ImageLike], color: str | None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        super().__init__("<predict>")
        self._tasks: list[Task] = []
        for i, im in enumerate(images):
            if isinstance(im, np.ndarray):
                self._tasks.append(functools.partial(_array_item, i, as_rgb(im, color, f"image {i}")))
            elif isinstance(im, (str, os.PathLike)):
                path = os.fspath(im)
                self._tasks.append(functools.partial(read_image_item, i, path, os.path.basename(path), max_pixels))
            elif isinstance(im, (bytes, bytearray, memoryview)):
                self._tasks.append(functools.partial(_bytes_item, i, im, max_pixels))
            else:
                what = "None" if im is None else f"a {type(im).__name__}"
                raise UsageError(f"image {i}: {what}; give {ACCEPTED}")

    @property
    def length(self) -> int:
        return len(self._tasks)

    def tasks(self) -> Iterator[Task]:
        for t in self._tasks:
            if self._stop.is_set():
                return
            yield t
        self.end_reason = "all images read"

    def describe(self) -> str:
        return f"{len(self._tasks)} image(s) given to predict"


def _boxes_per_image(boxes: Any, n: int, single: bool) -> list[list[tuple[float, float, float, float]] | None]:
    """predict's `boxes`: for one image a list of boxes; for a list of images one list (or None) per image."""
    if single:
        return [[make_box(b, f"box {j}") for j, b in enumerate(boxes)]]
    if len(boxes) != n:
        raise UsageError(f"boxes: {len(boxes)} entries for {n} images; give one list of boxes (or None) per image")
    out: list[list[tuple[float, float, float, float]] | None] = []
    for i, per in enumerate(boxes):
        out.append(None if per is None else [make_box(b, f"image {i} box {j}") for j, b in enumerate(per)])
    return out


# -- the classifier -------------------------------------------------------------------------------------
class _LogConsole:
    """What the pipeline prints its warnings on, for API calls: the `erudite_edge` logger."""

    is_terminal = False

    def print(self, msg: Any, *args: Any, **kw: Any) -> None:
        from erudite_edge.core.redact import redact

        log.warning("%s", redact(str(msg)))


def _check_on_error(on_error: str) -> bool:
    """Whether `on_error` says raise; UsageError for anything but ON_ERROR's values."""
    if on_error not in ON_ERROR:
        raise UsageError(f"on_error={on_error!r}; one of {', '.join(map(repr, ON_ERROR))} (\"item\": the "
                         "image's Prediction carries the error; \"raise\": BadImageError)")
    return on_error == "raise"


class _QueueSink(Sink):
    """Hands each result to the thread iterating predict_stream (blocking while it is behind)."""

    reports_failures = True

    def __init__(self, q: "queue.Queue[Any]", raise_errors: bool):
        self.q = q
        self.raise_errors = raise_errors
        self.closed = threading.Event()

    def _put(self, obj: Any) -> None:
        while not self.closed.is_set():
            try:
                self.q.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    def write(self, result: Result, item: Item) -> None:
        self._put(Prediction.from_result(result))

    def empty(self, item: Item) -> None:
        self._put(Prediction.empty_box(item))

    def failed(self, item: Item) -> None:  # reports_failures: the error is in the Prediction, not a warning
        if self.raise_errors:
            raise item.error  # type: ignore[misc]
        self._put(Prediction.failed(item))

    def stop(self, reason: str) -> None:
        """End the run after the batch in hand, no longer waiting for the consumer."""
        self.stop_requested = True
        self.stop_reason = reason
        self.closed.set()

    def describe(self) -> str:
        return "Python iterator"


class _ListSink(Sink):
    """Collects predict's results."""

    reports_failures = True

    def __init__(self, raise_errors: bool) -> None:
        self.raise_errors = raise_errors
        self.predictions: list[Prediction] = []

    def write(self, result: Result, item: Item) -> None:
        self.predictions.append(Prediction.from_result(result))

    def empty(self, item: Item) -> None:
        self.predictions.append(Prediction.empty_box(item))

    def failed(self, item: Item) -> None:  # reports_failures: the error is in the Prediction, not a warning
        if self.raise_errors:
            raise item.error  # type: ignore[misc]
        self.predictions.append(Prediction.failed(item))


class _Done:
    def __init__(self, summary: RunSummary | None = None, error: BaseException | None = None):
        self.summary = summary
        self.error = error


class Classifier:
    """An erudite (or zoo) bundle, loaded once, as a classifier.

    bundle: a bundle directory or a loaded erudite_edge.core.bundle.Bundle. backend: auto | tensorrt |
    onnxruntime | torch (as `run --backend`). precision: auto | fp32 | fp16 | int8 | best (auto: the bundle's
    TensorRT engine where TensorRT runs, else the fp32 ONNX model; best: a TensorRT engine only). device: the GPU (0; pick another with
    CUDA_VISIBLE_DEVICES). topk, min_confidence, datasets, smooth: as `run`'s options. batch: images per
    model call; workers: decode/preprocess threads. announce: where to say which backend was picked
    (None: the `erudite_edge` logger at INFO); warn: where to say a batch was lowered to the model's batch
    profile (None: that logger at WARNING).

    runner / answers / options: the same settings as option objects (backends.registry.RunnerOptions,
    inference.answers.AnswerOptions or an Answerer already built for this bundle, inference.run_options.RunOptions),
    as `erudite-edge run` passes them; given, they replace the keywords they cover (backend, precision, threads
    / topk, min_confidence, datasets, smooth / batch, workers); RunOptions also sets the memory budget and the
    pixel limit (max_memory, max_pixels: erudite_edge.inference.resources).
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str] | Bundle,
        backend: str = "auto",
        precision: str = "auto",
        device: int = 0,
        *,
        topk: int = 5,
        min_confidence: float = 0.0,
        datasets: Sequence[str] | str | None = None,
        smooth: int = 1,
        batch: int = 8,
        workers: int | None = None,
        threads: int | None = None,
        announce: Any = None,
        warn: Any = None,
        runner: RunnerOptions | None = None,
        answers: AnswerOptions | Answerer | None = None,
        options: RunOptions | None = None,
    ):
        # the calls running now (predict, run, predict_stream's pipeline thread), each with how to stop it
        # (None: close() waits for it); close() sets _closing, stops them, waits for none to be left
        self._calls = threading.Condition()
        self._running: dict[object, Callable[[], None] | None] = {}
        self._closing = False
        self._close_lock = threading.Lock()
        self.model: Any = None
        # pipelines made here and not closed yet: their input rings live in the model's page-locked memory
        # (TensorRT) and are given back before the model closes
        self._pipelines: weakref.WeakSet[Any] = weakref.WeakSet()
        if not isinstance(device, int) or device < 0:
            raise UsageError(f"device {device!r}: a GPU index (0, 1, ...)")
        if device != 0:
            raise UsageError(f"device {device}: erudite-edge runs on the process's first GPU; select GPU {device} "
                             f"with CUDA_VISIBLE_DEVICES={device} and pass device=0")
        if batch < 1 or topk < 1:
            raise UsageError("batch and topk must be at least 1")
        runner_options = runner or RunnerOptions(backend=backend, precision=precision, threads=threads)
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(Path(bundle))
        self.labels = self.bundle.labels
        self.spec = self.bundle.preprocess
        if isinstance(answers, Answerer):
            self.answerer = answers
        else:
            if answers is None:
                if isinstance(datasets, str):
                    datasets = [d for d in datasets.split(",") if d.strip()]
                answers = AnswerOptions(topk, min_confidence, smooth, None if datasets is None else tuple(datasets))
            self.answerer = Answerer.from_options(self.labels, answers)
        self.topk = self.answerer.topk
        self.options = options or RunOptions(batch=int(batch), workers=workers)
        check_memory(self.options, self.spec)  # a batch over the memory budget: UsageError before loading
        say = announce if announce is not None else (lambda msg: log.info("%s", msg))
        self.model = load_model(self.bundle, runner_options, announce=say)
        if isinstance(self.model, ZooModel):  # --datasets: the router picks among the kept data sets
            self.model.route_among(self.answerer.datasets)
        # a batch above the model's batch profile: lowered to it, with one warning
        self.options = fit_to_model(self.options, self.model, warn or (lambda msg: log.warning("%s", msg)))
        self.batch = self.options.batch
        self.backend = str(self.model.backend)
        self.precision = str(self.model.precision)
        self.last_summary: RunSummary | None = None

    def enable_attention(self) -> None:
        """Have each prediction also read the model's attention masks (`run --save-attention`); UsageError
        saying what to do where this model does not expose them."""
        runner = getattr(self.model, "runner", None)  # the erudite model's one runner; a zoo has none
        if not getattr(runner, "has_attention", False):
            how = ("TensorRT engines keep only the logits: pass --backend onnxruntime" if self.backend == "tensorrt"
                   else "export it with `erudite-edge export onnx --with-attention`, or use --backend torch --checkpoint RUN"
                   if self.backend != "torch" else "this variant has no spatial attention layer")
            raise UsageError(f"--save-attention: the {self.backend} {self.precision} model does not expose "
                             f"the attention masks; {how}")
        self.model.attention = True

    # -- calls and close() -------------------------------------------------------------------------
    def _begin(self, stop: Callable[[], None] | None = None) -> object:
        """Count a call as running (close() waits for it, or stops it with `stop`); UsageError once closed."""
        with self._calls:
            if self._closing or self.model is None:
                raise UsageError("this Classifier is closed; make a new one")
            call = object()
            self._running[call] = stop
            return call

    def _end(self, call: object) -> None:
        with self._calls:
            self._running.pop(call, None)
            self._calls.notify_all()

    # -- the pipeline -----------------------------------------------------------------------------
    def pipeline(self, *, strict: bool | None = None, limit: int | None = None, console: Any = None,
                 progress: bool = True, handle_signals: bool = True, attention: Any = None) -> Any:
        """The pipeline `run` and `predict` classify through, with this classifier's model and answers.
        attention: an attention_maps.AttentionWriter (`run --save-attention`)."""
        if self.model is None:
            raise UsageError("this Classifier is closed; make a new one")
        o = self.options
        pipeline = Pipeline(self.model, self.labels, self.spec, batch=o.batch, topk=self.topk, workers=o.workers,
                            strict=o.strict if strict is None else strict, limit=o.limit if limit is None else limit,
                            console=console, progress=progress, answerer=self.answerer,
                            handle_signals=handle_signals, attention=attention)
        self._pipelines.add(pipeline)
        return pipeline

    def run(self, source: Any, sinks: Sequence[Sink] = (), *, strict: bool | None = None, limit: int | None = None,
            console: Any = None, progress: bool = True, handle_signals: bool = True, attention: Any = None) -> RunSummary:
        """Classify a whole source (erudite_edge.sources) into sinks (erudite_edge.outputs): `erudite-edge run`.
        handle_signals: SIGINT/SIGTERM/SIGHUP stop the run after the batch in hand (the CLI); False leaves the
        process's handlers alone. close() in another thread waits for it to end."""
        call = self._begin()
        try:
            pipeline = self.pipeline(strict=strict, limit=limit, console=console, progress=progress,
                                     handle_signals=handle_signals, attention=attention)
            try:
                summary = pipeline.run(source, sinks)
            finally:
                pipeline.close()  # its input ring's page-locked memory goes back now, not when the runner closes
        finally:
            self._end(call)
        self.last_summary = summary
        return summary

    def multistream_pipeline(self, *, strict: bool | None = None, limit: int | None = None, console: Any = None,
                             handle_signals: bool = True, stream_options: StreamOptions | None = None) -> Any:
        """The pipeline `run SRC SRC ...` and predict_streams classify several sources through
        (erudite_edge.inference.multistream), with this classifier's model, answers and batch."""
        if self.model is None:
            raise UsageError("this Classifier is closed; make a new one")
        o = self.options
        pipeline = MultiStreamPipeline(self.model, self.labels, self.spec, answerer=self.answerer, batch=o.batch,
                                       workers=o.workers, strict=o.strict if strict is None else strict,
                                       limit=o.limit if limit is None else limit, console=console,
                                       handle_signals=handle_signals, options=stream_options)
        self._pipelines.add(pipeline)
        return pipeline

    def run_streams(self, sources: Sequence[Source], sinks: Sequence[Sink] = (),
                    stream_sinks: Sequence[Sequence[Sink]] | None = None, *, console: Any = None,
                    handle_signals: bool = True, stream_options: StreamOptions | None = None) -> RunSummary:
        """Classify several opened sources at once, batched across them (`erudite-edge run SRC SRC ...`):
        `sinks` get every result, `stream_sinks[i]` stream i's only. As run() otherwise."""
        call = self._begin()
        try:
            pipeline = self.multistream_pipeline(console=console, handle_signals=handle_signals,
                                                 stream_options=stream_options)
            try:
                summary = pipeline.run(sources, sinks, stream_sinks)
            finally:
                pipeline.close()
        finally:
            self._end(call)
        self.last_summary = summary
        return summary

    def _stream(self, source: Any, *, raise_errors: bool, limit: int | None,
                stream_options: StreamOptions | None = None) -> Iterator[Prediction]:
        """predict_stream's iterator; `source` a list of sources: predict_streams' (a MultiStreamPipeline)."""
        sources = list(source) if isinstance(source, list) else [source]
        q: queue.Queue[Any] = queue.Queue(maxsize=max(4, 2 * self.batch))
        sink = _QueueSink(q, raise_errors)

        def stop_sources() -> None:
            for src in sources:
                src.stop()

        def stop() -> None:  # close(): end the run after the batch in hand, also while a live source is silent
            sink.stop("the Classifier was closed")
            stop_sources()

        try:
            call = self._begin(stop=stop)
        except UsageError:
            for src in sources:
                src.close()  # opened by predict_stream(s), never to be read
            raise
        try:
            if isinstance(source, list):
                pipeline: Any = self.multistream_pipeline(strict=False, limit=limit, console=_LogConsole(),
                                                          handle_signals=False, stream_options=stream_options)
                run = functools.partial(pipeline.run, sources, [sink])
            else:
                pipeline = self.pipeline(strict=False, limit=limit, console=_LogConsole(), progress=False)
                run = functools.partial(pipeline.run, source, [sink])
        except BaseException:
            self._end(call)
            raise

        def work() -> None:
            try:
                done = _Done(summary=run())
            except BaseException as e:  # handed to the caller's thread
                done = _Done(error=e)
            finally:
                self._end(call)  # the model is no longer used: close() may release it
            sink._put(done)

        thread = threading.Thread(target=work, name="erudite-edge-predict", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    obj = q.get(timeout=0.1)
                except queue.Empty:
                    if not thread.is_alive() and q.empty():
                        return
                    continue
                if isinstance(obj, _Done):
                    if obj.error is not None:
                        raise obj.error
                    self.last_summary = obj.summary
                    return
                yield obj
        finally:
            sink.stop("the caller stopped iterating")  # the pipeline stops after the batch in hand
            stop_sources()
            thread.join(timeout=10.0)
            if not thread.is_alive():  # a pipeline still running keeps its ring (close() releases it later)
                pipeline.close()

    # -- the API ----------------------------------------------------------------------------------
    def predict(self, images: ImageLike | Sequence[ImageLike], boxes: Sequence[Any] | None = None, *,
                color: str | None = None, on_error: str = "item") -> list[Prediction]:
        """Classify images: a file path, encoded image bytes (a JPEG's or PNG's bytes, as read from a file or
        the network), a numpy HxWx3 uint8 array (give `color`, "BGR" or "RGB"), or a list of them.
        `boxes`: regions in pixels [x, y, w, h]: for one image a list of boxes, for a list of images one
        list (or None: the whole image) per image; one Prediction per box, clipped to the image (`empty`
        when nothing of it is inside). Returns the Predictions in input order.
        An image that cannot be read or decoded gives one Prediction with `error` set (ErrorInfo: message,
        kind) and no label; on_error="raise" raises its BadImageError instead. Anything else that is not
        an image (None, a number), an array without `color`, a negative box size: UsageError."""
        raise_errors = _check_on_error(on_error)
        seq, single = as_image_list(images)
        source: Any = ImagesSource(seq, color, self.options.max_pixels)
        if boxes is not None:
            per = _boxes_per_image(boxes, len(seq), single)
            source = CropSource(source, lambda item: WHOLE_IMAGE if per[item.index] is None else per[item.index])
        sink = _ListSink(raise_errors)  # in the caller's thread: no hand-off through predict_stream's queue
        summary = self.run(source, [sink], strict=False, console=_LogConsole(), progress=False, handle_signals=False)
        if summary.interrupted:  # Ctrl-C during the call (after the batch in hand)
            raise KeyboardInterrupt
        out = sink.predictions
        out.sort(key=lambda p: p.index)  # stable: a crop's boxes keep their order
        return out

    def predict_stream(self, source: str | os.PathLike[str] | int | Source, *, boxes: Sequence[Any] | None = None,
                       detections: str | os.PathLike[str] | None = None, limit: int | None = None,
                       on_error: str = "item", strict: bool | None = None, **open_options: Any) -> Iterator[Prediction]:
        """Predictions for a source as they come: a camera index, /dev/videoN, csi://N, rtsp://..., a video,
        an image, a folder or a glob (erudite_edge.sources.open.open_source; `open_options` such as
        reconnect=, width=, recursive= go to it), or an opened Source. Live sources give their newest
        frame each time the model is free. `boxes`: the same regions for every frame; `detections`: a
        detections file (erudite_edge.sources.crops). A file that does not decode gives a Prediction with
        `error` set, as predict does (on_error="raise": BadImageError; `strict=True` is the old spelling of
        that). Stop by leaving the loop; close() from another thread ends the loop too.
        FFmpeg's and OpenCV's own log lines are kept off stderr, as `erudite-edge run` keeps them (they may
        show a stream's password); OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL set by the user win."""
        from erudite_edge.sources.capture import quiet_video_logs
        from erudite_edge.sources.crops import detection_boxes, fixed_boxes, read_detections
        from erudite_edge.sources.open import open_source

        if strict is not None:
            warnings.warn("predict_stream(strict=...) is on_error=: strict=True is on_error='raise'",
                          DeprecationWarning, stacklevel=2)
            on_error = "raise" if strict else on_error
        raise_errors = _check_on_error(on_error)
        if boxes is not None and detections is not None:
            raise UsageError("give boxes or detections, not both")
        crop_fn = None
        if boxes is not None:
            crop_fn = fixed_boxes([make_box(b, f"box {j}") for j, b in enumerate(boxes)])
        elif detections is not None:
            crop_fn = detection_boxes(read_detections(Path(detections)))
        open_options.setdefault("max_pixels", self.options.max_pixels)
        quiet_video_logs()
        if isinstance(source, int):
            src: Any = open_source(None, camera=source, **open_options)
        elif isinstance(source, (str, os.PathLike)):
            src = open_source(os.fspath(source), **open_options)
        else:
            src = source
        if crop_fn is not None:
            src = CropSource(src, crop_fn)
        return self._stream(src, raise_errors=raise_errors, limit=limit)

    def predict_streams(self, sources: Sequence[str | os.PathLike[str] | int | Source], *,
                        batch_timeout_ms: float | None = None, limit: int | None = None, on_error: str = "item",
                        **open_options: Any) -> Iterator[Prediction]:
        """Predictions for several sources at once, as they come, each with its `stream` (the source's
        index in `sources`): cameras, streams, videos, images, folders, globs or opened Sources, as
        predict_stream takes them (`open_options` such as reconnect= go to each). Each live source keeps its
        newest frame in its own reader; one model call classifies at most one frame of each stream, waiting
        at most `batch_timeout_ms` for the others (None: one frame interval of the fastest). A stream that
        ends or fails leaves the others running; the iterator ends when every stream has ended. Stop by
        leaving the loop; close() from another thread ends it too."""
        from erudite_edge.sources.capture import quiet_video_logs
        from erudite_edge.sources.open import open_source

        raise_errors = _check_on_error(on_error)
        options = StreamOptions(batch_timeout_ms)
        if isinstance(sources, (str, os.PathLike, int, Source)) or not sources:
            raise UsageError("predict_streams takes a list of sources (one or more); predict_stream takes one")
        open_options.setdefault("max_pixels", self.options.max_pixels)
        quiet_video_logs()
        opened: list[Any] = []
        try:
            for source in sources:
                if isinstance(source, int):
                    opened.append(open_source(None, camera=source, **open_options))
                elif isinstance(source, (str, os.PathLike)):
                    opened.append(open_source(os.fspath(source), **open_options))
                else:
                    opened.append(source)
        except BaseException:
            for src in opened:
                src.close()
            raise
        return self._stream(opened, raise_errors=raise_errors, limit=limit, stream_options=options)

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the model's sessions, engines and device memory. Safe beside calls in other threads:
        their predict_stream loops end (after the batch in hand), their predict and run calls finish first
        (close waits for them); calls made after raise UsageError. Idempotent."""
        with self._close_lock:
            with self._calls:
                self._closing = True
                for stop in list(self._running.values()):
                    if stop is not None:
                        stop()
                self._calls.wait_for(lambda: not self._running)
            for pipeline in list(self._pipelines):
                pipeline.close()  # input rings first: they are views of the runner's page-locked memory
            if self.model is not None:
                self.model.close()
                self.model = None

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Classifier({str(self.bundle.root)!r}, backend={self.backend!r}, precision={self.precision!r}, "
                f"classes={self.labels.num_classes}, datasets={list(self.labels.datasets)})")


def predict_images(bundle: str | os.PathLike[str] | Bundle, images: Iterable[ImageLike], **kw: Any) -> list[Prediction]:
    """One-shot helper: load, predict, close."""
    with Classifier(bundle, **kw) as clf:
        return clf.predict(list(images))


__all__ = ["ERROR_KINDS", "Box", "Classifier", "ErrorInfo", "ImagesSource", "Prediction", "Timings", "TopK", "as_rgb",
           "predict_images"]

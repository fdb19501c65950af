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

Errors are erudite_edge.errors' typed exceptions (BundleError, UsageError, BadImageError,
BackendUnavailable, SourceError), each with the one line the CLI prints.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np

from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.errors import UsageError
from erudite_edge.inference.answers import Answerer, AnswerOptions
from erudite_edge.inference.models import ZooModel, load_model
from erudite_edge.inference.pipeline import Pipeline, RunOptions
from erudite_edge.inference.resources import check_memory, fit_to_model
from erudite_edge.outputs.results import Result, RunSummary, Sink
from erudite_edge.sources.base import Item, Source, Task, read_image_item
from erudite_edge.sources.crops import WHOLE_IMAGE, Box, CropSource, make_box

ImageLike = Union[str, "os.PathLike[str]", np.ndarray]
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


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image, frame or box.

    `label` is the top-1 class (or "unknown" below the Classifier's `min_confidence`), `dataset` its data
    set, `confidence` its probability; `topk` the k most probable classes; `dataset_mass` the summed
    probability of each data set's classes. `box`: the region classified (clipped to the image), None for
    the whole image. `empty`: the box held nothing of the image; nothing was classified (label "",
    class_index -1, confidence 0, no top-k)."""

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

    @classmethod
    def from_result(cls, r: Result) -> "Prediction":
        top = tuple(TopK(p.rank, p.class_id, p.label, p.dataset, p.score) for p in r.predictions)
        t = r.timings
        return cls(r.name, r.index, r.answer_dataset, top[0].class_index, r.answer_label, top[0].confidence, top,
                   dict(r.dataset_mass), Timings(t.get("decode_ms", 0.0), t.get("preprocess_ms", 0.0),
                                                 t.get("inference_ms", 0.0), int(t.get("batch", 0))),
                   r.box, False, r.captured_at)

    @classmethod
    def empty_box(cls, item: Item) -> "Prediction":
        return cls(item.name, item.index, "", -1, "", 0.0, box=item.box, empty=True, captured_at=item.captured_at)


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
        raise UsageError(f"{where}: an array of shape {image.shape}; give HxWx3 (HWC) pixels")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if color == "BGR" else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color == "BGR" else np.ascontiguousarray(image)


def _array_item(index: int, rgb: np.ndarray) -> Item:
    return Item(index, f"array[{index}]", rgb, None, 0.0, f"array_{index:06d}")


class ImagesSource(Source):
    """Images given to `predict`: files (decoded in the pipeline's threads, as `run` does) and arrays."""

    kind = "images"

    def __init__(self, images: Sequence[ImageLike], color: str | None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        super().__init__("<predict>")
        self._tasks: list[Task] = []
        import functools

        for i, im in enumerate(images):
            if isinstance(im, np.ndarray):
                self._tasks.append(functools.partial(_array_item, i, as_rgb(im, color, f"image {i}")))
            elif isinstance(im, (str, os.PathLike)):
                path = os.fspath(im)
                self._tasks.append(functools.partial(read_image_item, i, path, os.path.basename(path), max_pixels))
            else:
                raise UsageError(f"image {i}: a {type(im).__name__}; give a file path or a numpy HxWx3 uint8 array")

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


class _QueueSink(Sink):
    """Hands each result to the thread iterating predict_stream (blocking while it is behind)."""

    def __init__(self, q: "queue.Queue[Any]"):
        self.q = q
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

    def describe(self) -> str:
        return "Python iterator"


class _ListSink(Sink):
    """Collects predict's results."""

    def __init__(self) -> None:
        self.predictions: list[Prediction] = []

    def write(self, result: Result, item: Item) -> None:
        self.predictions.append(Prediction.from_result(result))

    def empty(self, item: Item) -> None:
        self.predictions.append(Prediction.empty_box(item))


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
    inference.answers.AnswerOptions or an Answerer already built for this bundle, inference.pipeline.RunOptions),
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
        self.model: Any = load_model(self.bundle, runner_options, announce=say)
        if isinstance(self.model, ZooModel):  # --datasets: the router picks among the kept data sets
            self.model.route_among(self.answerer.datasets)
        # a batch above the model's batch profile: lowered to it, with one warning
        self.options = fit_to_model(self.options, self.model, warn or (lambda msg: log.warning("%s", msg)))
        self.batch = self.options.batch
        self.backend = str(self.model.backend)
        self.precision = str(self.model.precision)
        self.last_summary: RunSummary | None = None
        # pipelines made here and not closed yet: their input rings live in the model's page-locked memory
        # (TensorRT) and are given back before the model closes
        self._pipelines: weakref.WeakSet[Any] = weakref.WeakSet()

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
        process's handlers alone."""
        pipeline = self.pipeline(strict=strict, limit=limit, console=console, progress=progress,
                                 handle_signals=handle_signals, attention=attention)
        try:
            summary = pipeline.run(source, sinks)
        finally:
            pipeline.close()  # its input ring's page-locked memory goes back now, not when the runner closes
        self.last_summary = summary
        return summary

    def _stream(self, source: Any, *, strict: bool, limit: int | None) -> Iterator[Prediction]:
        q: queue.Queue[Any] = queue.Queue(maxsize=max(4, 2 * self.batch))
        sink = _QueueSink(q)
        pipeline = self.pipeline(strict=strict, limit=limit, console=_LogConsole(), progress=False)

        def work() -> None:
            try:
                done = _Done(summary=pipeline.run(source, [sink]))
            except BaseException as e:  # handed to the caller's thread
                done = _Done(error=e)
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
            sink.stop_requested = True  # the pipeline stops after the batch in hand
            sink.stop_reason = "the caller stopped iterating"
            sink.closed.set()
            source.stop()
            thread.join(timeout=10.0)
            if not thread.is_alive():  # a pipeline still running keeps its ring (close() releases it later)
                pipeline.close()

    # -- the API ----------------------------------------------------------------------------------
    def predict(self, images: ImageLike | Sequence[ImageLike], boxes: Sequence[Any] | None = None, *,
                color: str | None = None) -> list[Prediction]:
        """Classify images: a file path, a numpy HxWx3 uint8 array (give `color`, "BGR" or "RGB"), or a
        list of them. `boxes`: regions in pixels [x, y, w, h]: for one image a list of boxes, for a
        list of images one list (or None: the whole image) per image; one Prediction per box, clipped to
        the image (`empty` when nothing of it is inside). Returns the Predictions in input order.
        An image that cannot be read raises BadImageError; a negative box size UsageError."""
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        seq: list[ImageLike] = [images] if single else list(images)  # type: ignore[list-item, arg-type]
        source: Any = ImagesSource(seq, color, self.options.max_pixels)
        if boxes is not None:
            per = _boxes_per_image(boxes, len(seq), single)
            source = CropSource(source, lambda item: WHOLE_IMAGE if per[item.index] is None else per[item.index])
        sink = _ListSink()  # in the caller's thread: no hand-off through predict_stream's queue
        summary = self.run(source, [sink], strict=True, console=_LogConsole(), progress=False, handle_signals=False)
        if summary.interrupted:  # Ctrl-C during the call (after the batch in hand)
            raise KeyboardInterrupt
        out = sink.predictions
        out.sort(key=lambda p: p.index)  # stable: a crop's boxes keep their order
        return out

    def predict_stream(self, source: str | os.PathLike[str] | int | Source, *, boxes: Sequence[Any] | None = None,
                       detections: str | os.PathLike[str] | None = None, limit: int | None = None,
                       strict: bool = False, **open_options: Any) -> Iterator[Prediction]:
        """Predictions for a source as they come: a camera index, /dev/videoN, csi://N, rtsp://..., a video,
        an image, a folder or a glob (erudite_edge.sources.open.open_source; `open_options` such as
        reconnect=, width=, recursive= go to it), or an opened Source. Live sources give their newest
        frame each time the model is free. `boxes`: the same regions for every frame; `detections`: a
        detections file (erudite_edge.sources.crops). Files that do not decode are skipped with a warning on the
        `erudite_edge` logger (strict=True: BadImageError). Stop by leaving the loop."""
        from erudite_edge.sources.crops import detection_boxes, fixed_boxes, read_detections
        from erudite_edge.sources.open import open_source

        if boxes is not None and detections is not None:
            raise UsageError("give boxes or detections, not both")
        crop_fn = None
        if boxes is not None:
            crop_fn = fixed_boxes([make_box(b, f"box {j}") for j, b in enumerate(boxes)])
        elif detections is not None:
            crop_fn = detection_boxes(read_detections(Path(detections)))
        open_options.setdefault("max_pixels", self.options.max_pixels)
        if isinstance(source, int):
            src: Any = open_source(None, camera=source, **open_options)
        elif isinstance(source, (str, os.PathLike)):
            src = open_source(os.fspath(source), **open_options)
        else:
            src = source
        if crop_fn is not None:
            src = CropSource(src, crop_fn)
        return self._stream(src, strict=strict, limit=limit)

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the model's sessions, engines and device memory."""
        model = getattr(self, "model", None)
        for pipeline in list(getattr(self, "_pipelines", ())):
            pipeline.close()  # input rings first: they are views of the runner's page-locked memory
        if model is not None:
            model.close()
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


__all__ = ["Box", "Classifier", "ImagesSource", "Prediction", "Timings", "TopK", "as_rgb", "predict_images"]

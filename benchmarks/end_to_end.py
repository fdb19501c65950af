"""End-to-end folder throughput (`--source FOLDER`) against pure inference on the same images.

End to end is what `erudite-edge run FOLDER` does, through its own Pipeline: list the files, decode
and preprocess them in the pipeline's thread pool while the model runs the previous batch, run the
model, take the top-k. Pure inference feeds the same images, already preprocessed in memory, in
batches of the same size to the same classifier. The two alternate over several rounds; each
figure is the median over its rounds, and their ratio carries a paired bootstrap 95 % interval over
the rounds (benchmarks.stats; a verdict needs at least 6 rounds). Their ratio says how much of the model's speed survives the
decoding and preprocessing (on a shared CPU both compete for the same cores).

A small folder is tiled (its files listed again, its tensors fed again) until one pass of each side
lasts at least `min_pass_s` (2 s by default): one pass over 32 photographs at ResNet-50 speed, or over
178 small PNGs at the demo model's, lasts about a second, and such a pass measures the pipeline's
start-up and the load of the moment more than its steady state.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from benchmarks.load import LoadRecord, snapshot
from benchmarks.stats import Interval, throughput_ratio_ci
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, load_image, preprocess
from erudite_edge.errors import BadImageError, SourceError
from erudite_edge.inference.pipeline import Pipeline
from erudite_edge.sources.files import ImageFilesSource
from erudite_edge.sources.open import open_source

DECIMALS = 4  # images/s kept to 4 decimals, as the raw samples file keeps them (benchmarks.raw)


@dataclass
class FolderImages:
    """A folder's images, decoded and preprocessed once (for pure inference and agreement)."""

    folder: str
    paths: list[str]  # the images that decoded, in the order the pipeline reads them
    tensors: np.ndarray  # (n, ...) preprocessed
    skipped: int


def open_folder(folder: str) -> ImageFilesSource:
    src = open_source(folder, recursive=True)
    if not isinstance(src, ImageFilesSource):
        src.close()
        raise SourceError(f"--source {folder}: expected a folder of images, got a {src.kind} source")
    return src


def load_folder(folder: str, spec: PreprocessSpec, limit: int | None = None,
                warn: Callable[[str], None] | None = None) -> FolderImages:
    src = open_folder(folder)
    paths: list[str] = []
    tensors: list[np.ndarray] = []
    skipped = 0
    for p in src.paths:
        if limit is not None and len(paths) >= limit:
            break
        try:
            tensors.append(preprocess(load_image(p), spec))
            paths.append(p)
        except BadImageError as e:
            skipped += 1
            if warn:
                warn(f"{e}; skipped")
    if not tensors:
        raise SourceError(f"--source {folder}: no image in it decodes")
    return FolderImages(folder, paths, np.stack(tensors), skipped)


def pure_inference(predict: Callable[[np.ndarray], Any], tensors: np.ndarray, batch: int, tiles: int = 1) -> float:
    """Images per second of `predict` over preprocessed tensors in batches of `batch`, `tiles` times over."""
    t0 = time.perf_counter()
    for _ in range(tiles):
        for i in range(0, len(tensors), batch):
            predict(tensors[i : i + batch])
    return tiles * len(tensors) / (time.perf_counter() - t0)


def pipeline_run(classifier: Any, folder: str, labels: LabelSpace, spec: PreprocessSpec, batch: int,
                 limit: int | None, workers: int | None, tiles: int = 1) -> tuple[float, dict[str, Any]]:
    """Images per second of `erudite-edge run FOLDER` (no output sinks), and its run summary; with
    `tiles` > 1 the folder's first `limit` files are listed that many times over in one run."""
    src = open_folder(folder)
    if tiles > 1:
        paths = src.paths[:limit] if limit is not None else src.paths
        src = ImageFilesSource(src.uri, paths * tiles, src.root, src.ignored)
        limit = len(src.paths)
    pipe = Pipeline(classifier, labels, spec, batch=batch, topk=1, workers=workers, limit=limit,
                    console=None, progress=False)
    summary = pipe.run(src, ())
    if summary.frames == 0:
        raise SourceError(f"--source {folder}: the pipeline classified no image")
    return summary.frames / summary.wall_s, summary.to_dict()


@dataclass
class EndToEnd:
    batch: int
    images: int
    e2e_ips: float  # median over rounds
    pure_ips: float  # median over rounds
    workers: int | None
    stage_ms_per_image: dict[str, float]
    stage_percentiles: dict[str, dict[str, float]] | None = None  # the last round's p50 / p99 / n per stage
    bytes_per_image: int = 0  # the model input's bytes per image (what a device receives)
    tiles: int = 1  # passes over the folder within one timed pass (see the module docstring)
    e2e_rounds_ips: list[float] = field(default_factory=list)  # every round's figure (the raw samples)
    pure_rounds_ips: list[float] = field(default_factory=list)
    load: dict[str, Any] | None = None  # the machine's load over the rounds (benchmarks.load)
    seed: Any = 0  # of the ratio's bootstrap interval

    @property
    def ratio(self) -> float:
        return self.e2e_ips / self.pure_ips if self.pure_ips > 0 else float("nan")

    @property
    def ratio_ci95(self) -> Interval | None:
        """Paired over rounds (pure and end to end alternate within a round)."""
        return ratio_interval(self.e2e_rounds_ips, self.pure_rounds_ips, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "images": self.images, "e2e_ips": round(self.e2e_ips, 3),
                "pure_ips": round(self.pure_ips, 3), "ratio": round(self.ratio, 4), "workers": self.workers,
                "stage_ms_per_image": {k: round(v, 3) for k, v in self.stage_ms_per_image.items()},
                "stage_ms": self.stage_percentiles or {}, "bytes_per_image": self.bytes_per_image,
                "tiles": self.tiles, "rounds": len(self.e2e_rounds_ips),
                "ratio_ci95": None if (ci := self.ratio_ci95) is None else [round(ci[0], 5), round(ci[1], 5)],
                "load": self.load}


def ratio_interval(e2e_ips: list[float], pure_ips: list[float], seed: Any = 0) -> Interval | None:
    """End to end / pure inference: median over rounds of each, paired bootstrap over the rounds."""
    return throughput_ratio_ci(e2e_ips, pure_ips, paired=True, seed=seed)


def tiles_for(images_per_s: float, n: int, min_pass_s: float) -> int:
    """How many times a folder of n images must be passed over for one pass to last min_pass_s."""
    if n <= 0 or images_per_s <= 0 or min_pass_s <= 0:
        return 1
    return max(1, math.ceil(min_pass_s * images_per_s / n))


def measure(classifier: Any, images: FolderImages, labels: LabelSpace, spec: PreprocessSpec, batch: int,
            rounds: int = 3, workers: int | None = None, on_round: Callable[[], None] | None = None,
            min_pass_s: float = 2.0, seed: Any = 0) -> EndToEnd:
    """Alternate pure inference and the pipeline for `rounds` rounds (order swapped every round);
    one unmeasured pure pass first warms the models up at this batch size and sizes the passes:
    the folder is tiled until a pure pass lasts `min_pass_s`."""
    n = len(images.paths)
    warm = pure_inference(classifier.predict, images.tensors, batch)
    tiles = tiles_for(warm, n, min_pass_s)
    e2e: list[float] = []
    pure: list[float] = []
    last_summary: dict[str, Any] = {}
    before = snapshot()
    for r in range(max(1, rounds)):
        steps = ("pure", "e2e") if r % 2 == 0 else ("e2e", "pure")
        for s in steps:
            if s == "pure":
                pure.append(round(pure_inference(classifier.predict, images.tensors, batch, tiles), DECIMALS))
            else:
                ips, last_summary = pipeline_run(classifier, images.folder, labels, spec, batch, n, workers, tiles)
                e2e.append(round(ips, DECIMALS))
            if on_round:
                on_round()
    stage = {k: float(v) for k, v in (last_summary.get("ms_per_frame") or {}).items()}
    load = LoadRecord.between(before, snapshot()).to_dict()
    return EndToEnd(batch, n, statistics.median(e2e), statistics.median(pure), workers, stage,
                    last_summary.get("stage_ms"), spec.bytes_per_image, tiles, e2e, pure, load, seed)

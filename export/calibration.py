"""INT8 calibration data: which images calibrate each model (balanced across data sets, seeded), the
ONNX Runtime reader that feeds them through the bundle's own decoding and preprocessing, and the
activation ranges collected from them.

Why `collect_ranges` feeds onnxruntime's calibrator one batch per `collect_data` call: its histogram
calibrators (Entropy, Percentile) keep every batch's outputs of a tensor in a list and turn that list
into one array (`np.asarray(list)` in HistogramCollector.collect_value), which fails with "setting an
array element with a sequence ... inhomogeneous shape after 1 dimension" as soon as one batch has
another size than the others: the last, partial batch (e.g. 450 calibration images in batches of 16),
or a batch that lost an unreadable image. One batch per call makes every call homogeneous; the
collector merges the histograms between calls (that is what repeated `collect_data` calls are for),
and only one batch of intermediate outputs is held in memory at a time.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from erudite_edge.core.bundle import INPUT_NAME, Bundle, fine_role
from erudite_edge.core.preprocess import PreprocessSpec, preprocess
from erudite_edge.errors import BadImageError, UsageError
from export.images import ImageRef, Log, dataset_refs, find_images

BATCH = 16
DEFAULT_SEED = 0
T = TypeVar("T")


def sample(items: Sequence[T], count: int | None, rng: np.random.Generator) -> list[T]:
    """At most `count` items drawn at random without replacement (kept in their original order); all
    when count is None or 0 or not smaller than the sequence."""
    items = list(items)
    if not count or count >= len(items):
        return items
    keep = np.sort(rng.choice(len(items), size=count, replace=False))
    return [items[i] for i in keep]


def balanced_sample(groups: Sequence[Sequence[T]], count: int, seed: int) -> list[T]:
    """`count` items shared evenly between groups (a group with too few gives all it has and the rest
    goes to the others), each group's share a seeded random sample of it."""
    rng = np.random.default_rng(seed)
    sizes = [len(g) for g in groups]
    shares = [0] * len(groups)
    left = min(count, sum(sizes))
    open_groups = [i for i, n in enumerate(sizes) if n > 0]
    while left > 0 and open_groups:
        each, extra = divmod(left, len(open_groups))
        for k, i in enumerate(list(open_groups)):
            add = min(each + (1 if k < extra else 0), sizes[i] - shares[i])
            shares[i] += add
            left -= add
        open_groups = [i for i in open_groups if shares[i] < sizes[i]]
    out: list[T] = []
    for group, share in zip(groups, shares):
        out.extend(sample(group, share, rng))
    return out


def _folder_groups(root: Path, paths: Sequence[Path], datasets: Sequence[str]) -> dict[str, list[Path]] | None:
    """Images under root grouped by data set, when root's top-level folders are named after the
    bundle's data sets (the demo's data/<dataset>/... layout); None otherwise."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        top = p.relative_to(root).parts[0]
        if top not in datasets or len(p.relative_to(root).parts) < 2:
            return None
        groups.setdefault(top, []).append(p)
    return groups if len(groups) > 1 else None


@dataclass(frozen=True)
class CalibrationPlan:
    """The calibration images of each role, how they were chosen, and the seed that chose them."""

    sets: dict[str, list[ImageRef]]
    description: str
    seed: int
    per_dataset: dict[str, int]  # images of each data set calibrating "main"/"coarse" (empty: unknown)


def calibration_sets(
    bundle: Bundle,
    *,
    calib_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    count: int = 512,
    seed: int = DEFAULT_SEED,
) -> CalibrationPlan:
    """The calibration images for each role of the bundle.

    Data sets (NAME=PATH, their training split) calibrate "main" and "coarse" with `count` images
    shared evenly between data sets, and each "fine:<dataset>" with `count` images of its own data set
    (a fine model only ever sees images of its data set). A folder (searched recursively) whose
    top-level folders are named after the bundle's data sets is shared the same way; any other folder,
    or a list of files, calibrates every role with `count` images drawn from all of it. Every draw is
    a seeded random sample: the same seed gives the same images."""
    if count < 1:
        raise UsageError(f"--calib-count must be at least 1, not {count}")
    if (calib_dir is None) == (not data):
        raise UsageError("give calibration images with either --calib DIR or --data NAME=PATH (one of them)")
    roles = bundle.roles()
    datasets = list(bundle.labels.datasets)
    if calib_dir is not None:
        if isinstance(calib_dir, (str, os.PathLike)):
            paths, where = find_images(calib_dir), f"under {calib_dir}"
            groups = _folder_groups(Path(calib_dir), paths, datasets)
        else:
            paths, where, groups = [Path(p) for p in calib_dir], "given as files", None
            if not paths:
                raise UsageError("the list of calibration images is empty")
        if groups is None:
            refs = [ImageRef(p) for p in sample(paths, count, np.random.default_rng(seed))]
            return CalibrationPlan({role: refs for role in roles}, f"{len(refs)} images {where} (seed {seed})", seed, {})
        names = sorted(groups)
        chosen = balanced_sample([groups[n] for n in names], count, seed)
        per = {n: sum(1 for p in chosen if p.relative_to(Path(calib_dir)).parts[0] == n) for n in names}
        sets = {role: [ImageRef(p) for p in chosen] for role in roles}
        for role in roles:
            for ds in datasets:
                if role == fine_role(ds) and ds in groups:
                    sets[role] = [ImageRef(p) for p in sample(groups[ds], count, np.random.default_rng(seed))]
        text = ", ".join(f"{n} {k}" for n, k in per.items())
        return CalibrationPlan(sets, f"{len(chosen)} images {where}, balanced across data sets ({text}; seed {seed})",
                               seed, per)
    labelled = dataset_refs(list(data or []), "train", bundle.labels)
    by_ds: dict[int, list[ImageRef]] = {}
    for r in labelled:
        by_ds.setdefault(r.dataset, []).append(r.ref)
    order = sorted(by_ds)
    everything = balanced_sample([by_ds[i] for i in order], count, seed)
    per = {datasets[i]: sum(1 for r in everything if r in set(by_ds[i])) for i in order}
    sets = {}
    for role in roles:
        sets[role] = everything
        for i, ds in enumerate(datasets):
            if role == fine_role(ds) and by_ds.get(i):
                sets[role] = sample(by_ds[i], count, np.random.default_rng(seed))
    text = ", ".join(f"{n} {k}" for n, k in per.items())
    return CalibrationPlan(sets, f"{len(everything)} training images ({text}; seed {seed})", seed, per)


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds calibration images to ONNX Runtime's calibrator, `batch_size` at a time, decoded and
    preprocessed exactly as at inference. Unreadable images are warned about, skipped and counted."""

    def __init__(
        self,
        refs: Sequence[ImageRef],
        spec: PreprocessSpec,
        *,
        input_name: str = INPUT_NAME,
        batch_size: int = BATCH,
        advance: Callable[[int], None] | None = None,
        log: Log | None = None,
    ):
        self.refs = list(refs)
        self.spec = spec
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self.advance = advance
        self.log = log
        self.position = 0
        self.used = 0
        self.skipped = 0

    def __len__(self) -> int:
        return -(-len(self.refs) // self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self.position < len(self.refs):
            chunk = self.refs[self.position : self.position + self.batch_size]
            self.position += len(chunk)
            inputs = []
            for ref in chunk:
                try:
                    inputs.append(preprocess(ref.load(), self.spec))
                except BadImageError as e:
                    self.skipped += 1
                    if self.log:
                        self.log(f"warning: skipping unreadable calibration image: {e}")
            if self.advance:
                self.advance(len(chunk))
            if inputs:
                self.used += len(inputs)
                return {self.input_name: np.stack(inputs, axis=0)}
        if self.refs and not self.used:  # else ONNX Runtime says only "No data is collected."
            raise UsageError(f"none of the {len(self.refs)} calibration images could be read (e.g. {self.refs[0].path} does not decode); "
                             "give --calib a folder of real images")
        return None

    def rewind(self) -> None:
        self.position = self.used = self.skipped = 0


class _OneBatch(CalibrationDataReader):
    def __init__(self, batch: dict[str, np.ndarray]):
        self.batch: dict[str, np.ndarray] | None = batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch, self.batch = self.batch, None
        return batch


def bounded_outputs(model: Any) -> dict[str, tuple[float, float]]:
    """Outputs of Clip nodes with constant bounds (ReLU6: [0, 6]) -> those bounds: a range the
    architecture fixes."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    out: dict[str, tuple[float, float]] = {}
    for n in model.graph.node:
        if n.op_type != "Clip":
            continue
        bounds = [consts.get(i) if i else None for i in list(n.input[1:3]) + [""] * (3 - len(n.input))]
        attrs = {a.name: a.f for a in n.attribute}  # Clip before opset 11: min/max attributes
        lo = float(np.asarray(bounds[0]).reshape(-1)[0]) if bounds[0] is not None else attrs.get("min")
        hi = float(np.asarray(bounds[1]).reshape(-1)[0]) if bounds[1] is not None else attrs.get("max")
        if lo is not None and hi is not None:
            out[n.output[0]] = (lo, hi)
    return out


def keep_bounded_ranges(ranges: Any, model_path: Path) -> int:
    """Histogram calibration (entropy, percentile): a Clip output (EfficientNet-Lite's and MobileNet's
    ReLU6) keeps the range its bounds fix, capped by the largest value seen. KL calibration clips
    these to 0.4-0.6 of the ceiling: a mass of saturated values at 6 folded onto the clip point keeps
    the histogram's shape, so the divergence does not see every saturated activation shrink from 6 to
    ~2.3 (benchmarks/results/int8.md: 75.6 % agreement, 96.0 % with this). Returns how many were kept."""
    import onnx
    from onnxruntime.quantization.calibrate import TensorData

    kept = 0
    for name, (lo, hi) in bounded_outputs(onnx.load(os.fspath(model_path), load_external_data=False)).items():
        old = ranges.data.get(name)
        if old is None:
            continue
        seen = getattr(old, "hist_edges", getattr(old, "bins", None))
        top = min(hi, float(np.max(np.abs(seen)))) if seen is not None and np.size(seen) else hi
        extra = {k: getattr(old, k) for k in ("hist", "bins") if hasattr(old, k)}
        ranges.data[name] = TensorData(lowest=np.float32(max(lo, -top)), highest=np.float32(top), **extra)
        kept += 1
    return kept


def collect_ranges(
    model_path: Path,
    reader: CalibrationDataReader,
    method: Any,
    op_types: Sequence[str],
    work: Path,
    extra_options: dict[str, Any],
) -> Any:
    """Run the calibration batches through the model with onnxruntime's calibrator of `method` (a
    CalibrationMethod) and return its TensorsData (one batch per collect_data call: see the module
    docstring)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(
        model_path, list(op_types), augmented_model_path=os.fspath(work / "augmented.onnx"),
        calibrate_method=method, extra_options=dict(extra_options),
    )
    chatter = io.StringIO()  # the histogram calibrators print their progress
    batches = 0
    with contextlib.redirect_stdout(chatter):
        while (batch := reader.get_next()) is not None:
            calibrator.collect_data(_OneBatch(batch))
            batches += 1
        if batches == 0:
            return None
        ranges = calibrator.compute_data()
    if method != CalibrationMethod.MinMax:
        keep_bounded_ranges(ranges, model_path)
    return ranges

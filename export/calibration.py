"""INT8 calibration data: which images calibrate each model, and the ONNX Runtime reader that feeds
them through the bundle's own decoding and preprocessing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from erudite_edge.bundle import INPUT_NAME, Bundle, fine_role
from erudite_edge.errors import BadImageError, UsageError
from erudite_edge.preprocess import PreprocessSpec, preprocess

from .images import ImageRef, Log, balanced, dataset_refs, find_images, spread

BATCH = 16


def calibration_sets(
    bundle: Bundle,
    *,
    calib_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    count: int = 512,
) -> tuple[dict[str, list[ImageRef]], str]:
    """The calibration images for each role of the bundle, and a description of them.

    A folder (searched recursively) or a list of image files calibrates every role with the same `count` images spread over
    it. Data sets (NAME=PATH, their training split) calibrate "main" and "coarse" with `count` images
    shared evenly between data sets, and each "fine:<dataset>" with `count` images of its own data
    set: a fine model only ever sees images of its data set."""
    if count < 1:
        raise UsageError(f"--calib-count must be at least 1, not {count}")
    if (calib_dir is None) == (not data):
        raise UsageError("give calibration images with either --calib DIR or --data NAME=PATH (one of them)")
    roles = bundle.roles()
    if calib_dir is not None:
        if isinstance(calib_dir, (str, os.PathLike)):
            paths, where = find_images(calib_dir), f"under {calib_dir}"
        else:
            paths, where = [Path(p) for p in calib_dir], "given as files"
            if not paths:
                raise UsageError("the list of calibration images is empty")
        refs = [ImageRef(p) for p in spread(paths, count)]
        return {role: refs for role in roles}, f"{len(refs)} images {where}"
    labelled = dataset_refs(list(data or []), "train", bundle.labels)
    everything = [r.ref for r in balanced(labelled, count)]
    sets: dict[str, list[ImageRef]] = {}
    for role in roles:
        sets[role] = everything
        for i, ds in enumerate(bundle.labels.datasets):
            own = [r.ref for r in labelled if r.dataset == i]
            if role == fine_role(ds) and own:
                sets[role] = spread(own, count)
    names = ", ".join(d.split("=", 1)[0] for d in data or [])
    return sets, f"{len(everything)} training images of {names}"


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds calibration images to ONNX Runtime's calibrator, BATCH at a time, decoded and
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
            raise UsageError(f"none of the {len(self.refs)} calibration images could be decoded (e.g. {self.refs[0].path}); "
                             "give --calib a folder of real images")
        return None

    def rewind(self) -> None:
        self.position = self.used = self.skipped = 0

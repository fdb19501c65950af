"""`erudite-edge export triton --kind classifier`: the bundle as a Triton Python-backend model that takes
image bytes and answers with labels (erudite-edge's own inference path inside Triton).

    REPO/NAME/
      config.pbtxt     backend "python"; inputs IMAGE (TYPE_STRING [1]) or FRAME (TYPE_UINT8 [-1, -1, 3]);
                       outputs LABELS, DATASETS, SCORES, CLASS_IDS ([k]), DATASET_MASS ([D], datasets.txt);
                       dynamic batching; instance_group count --instances; a warm-up request of one PNG;
                       parameters backend / precision / topk (and EXECUTION_ENV_PATH with --execution-env)
      datasets.txt     the data sets in DATASET_MASS order
      labels.txt       the joint label space (CLASS_IDS index it)
      warmup/image     the warm-up IMAGE element: a 4-byte little-endian length and a small PNG
      1/model.py       export/triton_python_model.py
      1/bundle/        a copy of the bundle

The model's code is this project's: the interpreter Triton's stub runs must import erudite_edge (numpy < 2,
OpenCV, ONNX Runtime; TensorRT for engines). --execution-env writes EXECUTION_ENV_PATH (a conda-pack
archive, or an unpacked environment) into the config; without it the stub uses the server's Python.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.fileio import atomic_merge
from erudite_edge.errors import UsageError
from export.triton import MARKER, check_name, replaceable

BACKENDS = ("auto", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "int8", "best")
MODEL_FILE = Path(__file__).with_name("triton_python_model.py")


@dataclass(frozen=True)
class ClassifierModelOptions:
    """The classifier model's settings (CLI flags of `export triton --kind classifier`)."""

    name: str = "erudite_classifier"
    max_batch: int = 8  # max_batch_size: images per model call, across the requests dynamic batching joins
    instances: int = 1  # instance_group count: stub processes, each with its own Classifier
    topk: int = 5
    backend: str = "auto"  # as `run --backend`, chosen when Triton loads the model
    precision: str = "auto"
    queue_delay_us: int = 500  # dynamic batching's max_queue_delay_microseconds
    execution_env: str | None = None  # EXECUTION_ENV_PATH, written as given ($$TRITON_MODEL_DIRECTORY allowed)
    overwrite: bool = False

    def checked(self) -> "ClassifierModelOptions":
        check_name(self.name)
        for flag, value in (("--max-batch", self.max_batch), ("--instances", self.instances), ("--topk", self.topk)):
            if value < 1:
                raise UsageError(f"{flag} {value}: give 1 or more")
        if self.queue_delay_us < 0:
            raise UsageError(f"--queue-delay-us {self.queue_delay_us}: give 0 or more")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend {self.backend}: one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision}: one of {', '.join(PRECISIONS)} for --kind classifier")
        return self


def _warmup_image() -> bytes:
    """One warm-up IMAGE element as Triton reads TYPE_STRING data from a file: length (uint32 LE), bytes."""
    import cv2

    ok, png = cv2.imencode(".png", np.full((32, 32, 3), 128, np.uint8))
    assert ok
    data = png.tobytes()
    return struct.pack("<I", len(data)) + data


def _param(key: str, value: str) -> str:
    return f'parameters {{\n  key: "{key}"\n  value {{ string_value: "{value}" }}\n}}\n'


def classifier_config(o: ClassifierModelOptions, k: int, num_datasets: int, note: str) -> str:
    """config.pbtxt of the classifier model (protobuf text format)."""
    out = [("LABELS", "TYPE_STRING", k, ""), ("DATASETS", "TYPE_STRING", k, ""), ("SCORES", "TYPE_FP32", k, ""),
           ("CLASS_IDS", "TYPE_INT32", k, ""), ("DATASET_MASS", "TYPE_FP32", num_datasets, "datasets.txt")]
    outputs = ",\n".join(
        f'  {{\n    name: "{n}"\n    data_type: {t}\n    dims: [ {d} ]\n'
        + (f'    label_filename: "{lf}"\n' if lf else "") + "  }" for n, t, d, lf in out)
    text = (
        f"{MARKER}\n# {note}\n"
        f'name: "{o.name}"\nbackend: "python"\nmax_batch_size: {o.max_batch}\n'
        "input [\n"
        '  {\n    name: "IMAGE"\n    data_type: TYPE_STRING\n    dims: [ 1 ]\n    optional: true\n  },\n'
        '  {\n    name: "FRAME"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1, 3 ]\n    optional: true\n  }\n'
        "]\n"
        f"output [\n{outputs}\n]\n"
        f"instance_group [\n  {{\n    count: {o.instances}\n    kind: KIND_CPU\n  }}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {o.queue_delay_us}\n}}\n"
        "model_warmup [\n  {\n    name: \"one_png\"\n    batch_size: 1\n    inputs {\n      key: \"IMAGE\"\n"
        "      value {\n        data_type: TYPE_STRING\n        dims: [ 1 ]\n        input_data_file: \"image\"\n"
        "      }\n    }\n  }\n]\n"
        + _param("backend", o.backend) + _param("precision", o.precision) + _param("topk", str(k))
    )
    if o.execution_env:
        text += _param("EXECUTION_ENV_PATH", o.execution_env)
    return text


def export_classifier(bundle: Bundle, out: Path, options: ClassifierModelOptions,
                      log: Callable[[str], None] = lambda m: None) -> Path:
    """Write REPO/NAME for `bundle` (erudite or zoo: the Classifier takes both); returns the model folder."""
    o = options.checked()
    k = min(o.topk, bundle.labels.num_classes)
    o = replace(o, topk=k)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; give the Triton model repository's folder")
    target = out / o.name
    if target.exists() and not (o.overwrite and replaceable(target)):
        hint = " (it was not written by export triton: move it away yourself)" if o.overwrite else "; pass --overwrite"
        raise UsageError(f"{target} already exists{hint}")
    out.mkdir(parents=True, exist_ok=True)
    datasets = list(bundle.labels.datasets)
    note = (f"{bundle.root.name}: erudite-edge's Classifier in the Python backend (backend {o.backend}, precision "
            f"{o.precision}); IMAGE bytes [B, 1] or FRAME RGB [B, H, W, 3] in, top-{k} and per-data-set mass out")
    with atomic_merge(target) as tmp:  # --overwrite: only what is written here is replaced
        (tmp / "1").mkdir()
        shutil.copyfile(MODEL_FILE, tmp / "1" / "model.py")
        shutil.copytree(bundle.root, tmp / "1" / "bundle", ignore=shutil.ignore_patterns("int8_report", "__pycache__", ".sha256-cache.json"))
        (tmp / "warmup").mkdir()
        (tmp / "warmup" / "image").write_bytes(_warmup_image())
        (tmp / "labels.txt").write_text("".join(n + "\n" for n in bundle.labels.joint_names), encoding="utf-8")
        (tmp / "datasets.txt").write_text("".join(d + "\n" for d in datasets), encoding="utf-8")
        (tmp / "config.pbtxt").write_text(classifier_config(o, k, len(datasets), note), encoding="utf-8")
    log(f"triton: {target} (python backend, erudite-edge Classifier, max_batch_size {o.max_batch}, "
        f"{o.instances} instance(s), top-{k})")
    return target


__all__ = ["ClassifierModelOptions", "classifier_config", "export_classifier"]

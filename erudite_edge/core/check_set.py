"""The bundle's check set: fixed inputs and the FP32 model's outputs on them, to prove any backend and
precision computes what the FP32 ONNX model computes, on the device that runs it.

`export onnx` writes it (`write_check_set`): `checkset/inputs.npy` (N preprocessed inputs, stored as
float16 to keep the bundle small; a uint8 model's inputs as uint8, exactly) and `checkset/<role>.fp32.npy` (the FP32 ONNX model's logits on
exactly those stored inputs, by ONNX Runtime), recorded in bundle.json under `check_set` with each
file's sha256. `erudite-edge check` and every engine build run it (`run_check`): top-1 agreement
with the FP32 outputs and max |logit difference|, against a minimum agreement per precision
(FP16 99 %, INT8 97 %) unless the user accepts the drop.

Pure numpy on the device side (no torch): the runner is any backends.Runner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from erudite_edge.core.bundle import Bundle, default_filename
from erudite_edge.core.compare import compare_logits
from erudite_edge.core.fileio import atomic_path, sha256_file
from erudite_edge.errors import BundleError, EruditeError

CHECK_DIR = "checkset"
INPUTS_FILE = f"{CHECK_DIR}/inputs.npy"
DEFAULT_COUNT = 64
# Minimum top-1 agreement with the FP32 model, per precision asked of the backend.
MIN_AGREEMENT = {"fp32": 0.99, "fp16": 0.99, "int8": 0.97, "best": 0.97}
REEXPORT_HINT = "re-export the bundle with `erudite-edge export onnx` (it stores a check set) to check it"


class CheckSetMissing(BundleError):
    """An older bundle without a check set (exit code 2: nothing to check against)."""


class AccuracyDrop(EruditeError):
    """A backend/precision whose answers differ from FP32 more than the threshold allows (exit code 1)."""


def outputs_file(role: str) -> str:
    return f"{CHECK_DIR}/{default_filename(role, 'fp32', 'npy')}"


def _save_npy(path: Path, array: np.ndarray) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return sha256_file(path)


def write_check_set(
    bundle: Bundle,
    inputs: np.ndarray,
    source: str,
    real: bool,
    infer: Callable[[str, np.ndarray], np.ndarray],
) -> dict[str, Any]:
    """Store `inputs` and, per role, `infer(role, inputs)` (the FP32 model's logits) in the bundle; record
    them in bundle.meta["check_set"] (the caller saves bundle.json). The logits are computed from the
    stored (float16-rounded) inputs, so the check compares like with like."""
    if inputs.dtype == np.uint8:  # a uint8 model's inputs: stored as they are, exactly
        stored, as_run = np.ascontiguousarray(inputs), np.ascontiguousarray(inputs)
    else:
        stored = np.ascontiguousarray(inputs, dtype=np.float16)
        as_run = stored.astype(np.float32)
    record: dict[str, Any] = {
        "count": int(len(stored)),
        "source": source,
        "real_images": bool(real),
        "inputs": {"file": INPUTS_FILE, "sha256": _save_npy(bundle.root / INPUTS_FILE, stored),
                   "dtype": str(stored.dtype)},
        "outputs": {},
        "min_agreement": dict(MIN_AGREEMENT),
    }
    for role in bundle.roles():
        logits = np.asarray(infer(role, as_run), dtype=np.float32)
        name = outputs_file(role)
        record["outputs"][role] = {"file": name, "sha256": _save_npy(bundle.root / name, logits)}
    bundle.meta["check_set"] = record
    return record


@dataclass
class CheckSet:
    inputs: np.ndarray  # float32 or uint8, as the bundle's models take it
    outputs: dict[str, np.ndarray]  # role -> FP32 logits
    source: str
    real_images: bool


def _load_npy(bundle: Bundle, item: dict[str, Any]) -> np.ndarray:
    path = bundle.root / str(item.get("file", ""))
    if not path.is_file():
        raise CheckSetMissing(f"{path}: listed in bundle.json's check_set but missing; {REEXPORT_HINT}")
    if sha256_file(path) != item.get("sha256"):
        raise BundleError(f"{path}: contents do not match the sha256 in bundle.json (changed since export); {REEXPORT_HINT}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not a readable .npy file ({e}); {REEXPORT_HINT}") from e


def has_check_set(bundle: Bundle) -> bool:
    return isinstance(bundle.meta.get("check_set"), dict)


def load_check_set(bundle: Bundle) -> CheckSet:
    """The bundle's check set, verified against bundle.json; CheckSetMissing for a bundle without one."""
    record = bundle.meta.get("check_set")
    if not isinstance(record, dict):
        raise CheckSetMissing(f"{bundle.root}: this bundle has no check set (made before erudite-edge stored one); {REEXPORT_HINT}")
    stored = _load_npy(bundle, record["inputs"])
    inputs = stored if stored.dtype == np.uint8 else stored.astype(np.float32)
    outputs = {role: _load_npy(bundle, item) for role, item in record.get("outputs", {}).items()}
    for role in bundle.roles():
        if role not in outputs:
            raise CheckSetMissing(f"{bundle.root}: the check set has no FP32 outputs for role {role!r}; {REEXPORT_HINT}")
        if len(outputs[role]) != len(inputs):
            raise BundleError(f"{bundle.root}: check set outputs for {role!r} do not match its inputs; {REEXPORT_HINT}")
    return CheckSet(inputs, outputs, str(record.get("source", "?")), bool(record.get("real_images", False)))


@dataclass
class CheckResult:
    role: str
    backend: str
    precision: str
    count: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    min_agreement: float
    passed: bool
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict} {self.role} {self.backend} {self.precision}: top-1 agreement with FP32 "
            f"{100 * self.top1_agreement:.1f}% (minimum {100 * self.min_agreement:.0f}%), max |logit diff| "
            f"{self.max_abs_diff:.4g}, mean {self.mean_abs_diff:.3g}, on {self.count} inputs ({self.source})"
        )


def run_check(
    runner: Any,
    check: CheckSet,
    role: str,
    precision: str,
    backend: str | None = None,
    min_agreement: float | None = None,
) -> CheckResult:
    """Run the check set's inputs through `runner` (a backends.Runner) and compare with the FP32 outputs."""
    got = np.asarray(runner.infer_chunked(check.inputs), dtype=np.float32)
    reference = check.outputs[role]
    if got.shape != reference.shape:
        raise BundleError(f"the model gives logits of shape {list(got.shape)}, the check set expects {list(reference.shape)}")
    name = backend or str(getattr(runner, "backend", "?"))
    agreement = compare_logits(reference, got, reference_name="fp32 check set", candidate_name=f"{name} {precision}",
                               source=check.source)
    agree, max_diff, mean_diff = agreement.top1_agreement, agreement.max_abs_diff, agreement.mean_abs_diff
    threshold = MIN_AGREEMENT.get(precision, 0.97) if min_agreement is None else min_agreement
    return CheckResult(
        role=role,
        backend=backend or str(getattr(runner, "backend", "?")),
        precision=precision,
        count=len(check.inputs),
        top1_agreement=agree,
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        min_agreement=threshold,
        passed=agree >= threshold,
        source=check.source,
    )


def enforce(results: list[CheckResult], accept_drop: bool, warn: Callable[[str], None]) -> None:
    """AccuracyDrop (one line) when a result is below its threshold, unless the user accepted the drop."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return
    worst = min(failed, key=lambda r: r.top1_agreement)
    line = (
        f"{worst.backend} {worst.precision} ({worst.role}) agrees with FP32 on {100 * worst.top1_agreement:.1f}% of the "
        f"check set, below the {100 * worst.min_agreement:.0f}% minimum"
    )
    if accept_drop:
        warn(f"warning: {line} (accepted with --accept-accuracy-drop)")
        return
    raise AccuracyDrop(f"{line}; pass --accept-accuracy-drop to use it anyway, or use a higher precision")



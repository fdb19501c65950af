"""The engine sidecar: `<engine>.json` beside each TensorRT engine, saying what built it and for what.

A serialized TensorRT engine runs only under the TensorRT version and on the GPU kind that built it;
anywhere else deserialisation fails with a message that names neither, or crashes. The builder
writes this sidecar; the runner reads it first and, on any mismatch, says what to do instead
(rebuild the engine on this device). Pure Python: testable without TensorRT or a GPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from erudite_edge._version import __version__
from erudite_edge.core.fileio import write_json_atomic
from erudite_edge.errors import BundleError

SIDECAR_FORMAT = "erudite-edge-engine"
SIDECAR_FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class DeviceInfo:
    """The facts about a GPU that decide whether an engine built on it runs on another.

    Name and compute capability alone do not tell the Orin modules apart (every one is "Orin", 8.7): an
    engine tuned on an AGX Orin (16 SMs, 2 DLA cores) is not the one for an Orin Nano (4 to 8 SMs, no DLA).
    So the SM count, the total memory (MiB) and the DLA core count are facts too; None where unknown (a
    sidecar written before they were recorded), and an unknown fact is never a mismatch."""

    name: str
    compute_capability: tuple[int, int]
    sm_count: int | None = None
    total_memory_mib: int | None = None
    dla_cores: int | None = None

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm_{major}{minor}"

    @property
    def capability_text(self) -> str:
        major, minor = self.compute_capability
        return f"{major}.{minor}"

    def describe(self) -> str:
        facts = [self.sm]
        if self.sm_count is not None:
            facts.append(f"{self.sm_count} SMs")
        if self.total_memory_mib is not None:
            facts.append(f"{self.total_memory_mib} MiB")
        if self.dla_cores is not None:
            facts.append(f"{self.dla_cores} DLA core{'' if self.dla_cores == 1 else 's'}")
        return f"{self.name} ({', '.join(facts)})"

    def differences(self, other: "DeviceInfo") -> list[str]:
        """The facts (SM count, memory, DLA cores) known on both sides that differ."""
        out = []
        for label, a, b in (("SM count", self.sm_count, other.sm_count),
                            ("GPU memory", self.total_memory_mib, other.total_memory_mib),
                            ("DLA cores", self.dla_cores, other.dla_cores)):
            if a is not None and b is not None and a != b:
                out.append(label)
        return out


def parse_capability(text: str) -> tuple[int, int]:
    """"8.7" -> (8, 7); BundleError for anything else (a hand-edited or foreign sidecar)."""
    try:
        major, minor = str(text).split(".")
        return int(major), int(minor)
    except ValueError as e:
        raise BundleError(f"compute capability {text!r} is not MAJOR.MINOR") from e


@dataclass
class EngineSidecar:
    """What an engine was built from, with what, and on what."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    precision: str  # as asked of the builder: fp32, fp16, int8 or best
    role: str
    inputs: list[str]
    outputs: list[str]
    # input name -> {"min": [...], "opt": [...], "max": [...]}
    profile: dict[str, dict[str, list[int]]]
    source_onnx: str  # relative to the bundle directory
    source_sha256: str
    erudite_edge_version: str
    strongly_typed: bool = False
    builder_flags: list[str] = field(default_factory=list)
    built_at: str = ""
    # The check set run on this engine right after the build (erudite_edge/core/check_set.py CheckResult), or None.
    check: dict[str, Any] | None = None
    # Engines built on first use: the fields of their cache key (erudite_edge/backends/tensorrt/cache.py).
    cache_key: dict[str, Any] | None = None
    dla_core: int | None = None
    # A DLA build: where its layers ended up, from the engine inspector (build.DlaPlacement.to_dict), or None.
    dla_placement: dict[str, Any] | None = None
    # The GPU beyond name and capability (DeviceInfo) and the Polygraphy that built it; None: not recorded
    # (a sidecar from before they were), never a mismatch.
    sm_count: int | None = None
    total_memory_mib: int | None = None
    dla_cores: int | None = None
    polygraphy_version: str | None = None
    format: str = SIDECAR_FORMAT
    format_version: int = SIDECAR_FORMAT_VERSION

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(self.gpu_name, parse_capability(self.compute_capability), self.sm_count,
                          self.total_memory_mib, self.dla_cores)

    @property
    def batch_range(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of the first input's optimisation profile."""
        shapes = self.profile[self.inputs[0]]
        return int(shapes["min"][0]), int(shapes["opt"][0]), int(shapes["max"][0])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "sidecar") -> "EngineSidecar":
        if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
            raise BundleError(f"{where}: not an erudite-edge engine sidecar (format field missing or foreign)")
        if int(d.get("format_version", 0)) > SIDECAR_FORMAT_VERSION:
            raise BundleError(f"{where}: sidecar format {d.get('format_version')} is newer than this erudite-edge reads")
        known = set(cls.__dataclass_fields__)
        try:
            sc = cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:  # a required field is missing
            raise BundleError(f"{where}: malformed engine sidecar ({e})") from e
        if not sc.inputs or sc.inputs[0] not in sc.profile:
            raise BundleError(f"{where}: engine sidecar names no input with an optimisation profile")
        parse_capability(sc.compute_capability)
        return sc


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """`model.fp16.engine` -> `model.fp16.engine.json`."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(engine_path: str | os.PathLike[str], sidecar: EngineSidecar) -> Path:
    target = sidecar_path(engine_path)
    write_json_atomic(target, sidecar.to_dict())
    return target


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineSidecar:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise BundleError(
            f"{path} not found: an engine needs the sidecar written beside it by `erudite-edge export engine`; "
            "rebuild the engine on this device"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from e
    return EngineSidecar.from_dict(data, where=str(path))


def rebuild_command(bundle_dir: str | os.PathLike[str], sidecar: EngineSidecar) -> str:
    """The command that rebuilds the engine a sidecar describes, on whatever device runs it."""
    lo, opt, hi = sidecar.batch_range
    role = "" if sidecar.role == "main" else f" --role {sidecar.role}"
    dla = "" if sidecar.dla_core is None else f" --dla-core {sidecar.dla_core}"
    return (
        f"erudite-edge export engine --bundle {bundle_dir} --precision {sidecar.precision} "
        f"--batch {lo}:{opt}:{hi}{role}{dla}"
    )


def compatibility_problems(sidecar: EngineSidecar, tensorrt_version: str, device: DeviceInfo, *,
                           erudite_edge_version: str | None = None, polygraphy_version: str | None = None) -> list[str]:
    """What differs between where the engine was built and here (empty: it can be used).

    TensorRT checks the full version (a plan from 10.3.0.30 does not load in 10.3.0.26) and the
    GPU's compute capability; the device name tells apart GPUs of one capability whose tuned
    kernels differ (NVIDIA does not support moving plans between them), and the SM count, memory and
    DLA core count tell apart modules of one name (AGX Orin, Orin NX, Orin Nano are all "Orin", 8.7).
    The erudite-edge and Polygraphy versions that built it are compared where given (None: not checked;
    a version the sidecar does not record is never a mismatch): another build recipe, another engine.
    """
    problems = []
    if sidecar.tensorrt_version.strip() != tensorrt_version.strip():
        problems.append("TensorRT version")
    built = sidecar.device
    if built.compute_capability != device.compute_capability:
        problems.append("compute capability")
    if built.name.strip().lower() != device.name.strip().lower():
        problems.append("GPU")
    problems += built.differences(device)
    if erudite_edge_version is not None and sidecar.erudite_edge_version.strip() != erudite_edge_version.strip():
        problems.append("erudite-edge version")
    if (polygraphy_version is not None and sidecar.polygraphy_version is not None
            and sidecar.polygraphy_version.strip() != polygraphy_version.strip()):
        problems.append("Polygraphy version")
    return problems


def check_compatible(
    sidecar: EngineSidecar,
    tensorrt_version: str,
    device: DeviceInfo,
    engine_path: str | os.PathLike[str],
    rebuild: str,
    *,
    erudite_edge_version: str | None = __version__,
    polygraphy_version: str | None = None,
) -> None:
    """Raise one clear BundleError when the engine cannot run here (or was built by another erudite-edge or
    Polygraphy), instead of a deserialisation crash or an engine tuned for another module."""
    problems = compatibility_problems(sidecar, tensorrt_version, device, erudite_edge_version=erudite_edge_version,
                                      polygraphy_version=polygraphy_version)
    if not problems:
        return
    built_by = here_by = ""
    if "erudite-edge version" in problems:
        built_by += f" by erudite-edge {sidecar.erudite_edge_version}"
        here_by += f" with erudite-edge {erudite_edge_version}"
    if "Polygraphy version" in problems:
        built_by += f" with Polygraphy {sidecar.polygraphy_version}"
        here_by += f" with Polygraphy {polygraphy_version}"
    raise BundleError(
        f"{engine_path}: engine was built with TensorRT {sidecar.tensorrt_version} on {sidecar.device.describe()}"
        f"{built_by}; this is TensorRT {tensorrt_version} on {device.describe()}{here_by}: rebuild it with `{rebuild}`"
    )

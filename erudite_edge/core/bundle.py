"""The bundle: one directory holding a deployed model and everything it needs.

    BUNDLE/
      bundle.json            labels, data sets, preprocessing, variant, backbone, opset, version,
                             and for each model file its role, precision, tensor names and sha256
      model.onnx             role "main" (erudite) -- or coarse.onnx, fine.<dataset>.onnx (zoo)
      model.fp16.onnx, model.int8.onnx, model.<precision>.engine (+ .engine.json sidecar)

An engine entry is keyed by its build kind: precision as built (fp32, fp16, int8, or best: the Q/DQ model
with FP16 allowed too) and DLA core (none: the GPU), so `best` and DLA builds sit beside the int8 and GPU
fp16 engines instead of replacing them.

Roles: an erudite bundle has one role, "main". A zoo bundle (the paper's Single) has "coarse"
(logits over data sets) and "fine:<dataset>" (logits over that data set's own classes).
Every backend reads preprocessing and labels from here; nothing is re-derived elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erudite_edge._version import __version__
from erudite_edge.core.fileio import sha256_file, write_json_atomic, write_text_atomic
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BundleError

BUNDLE_FORMAT = "erudite-edge-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
PRECISIONS = ("fp32", "fp16", "int8")
# Precisions only a TensorRT engine has: `best` (INT8 + FP16 builder flags on the Q/DQ model).
ENGINE_ONLY_PRECISIONS = ("best",)
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
# `export onnx --with-attention`: the spatial attention's group masks (B, groups, h, w) as a second output;
# runners read OUTPUT_NAME only unless asked for this one (`run --save-attention`)
ATTENTION_OUTPUT = "attention"


# -- sha256 of the files a load reads, cached by size and mtime ----------------------------------

HASH_CACHE_FILE = ".sha256-cache.json"
_verify_by_default = True
_memory_cache: dict[str, tuple[int, int, str]] = {}  # absolute path -> (size, mtime_ns, sha256)


def set_verify_default(enabled: bool) -> None:
    """`--no-verify`: bundles loaded from now on in this process do not check their files' sha256."""
    global _verify_by_default
    _verify_by_default = bool(enabled)


def _xdg_cache_file(root: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "erudite-edge" / "sha256" / f"{key}.json"


def _read_cache(root: Path) -> dict[str, Any]:
    for f in (root / HASH_CACHE_FILE, _xdg_cache_file(root)):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict):
            return d
    return {}


def _write_cache(root: Path, entries: dict[str, Any]) -> None:
    """Into the bundle; where the bundle folder is read-only, under $XDG_CACHE_HOME; where neither can be
    written, nowhere (the next start hashes again)."""
    text = json.dumps(entries, indent=1) + "\n"
    for f in (root / HASH_CACHE_FILE, _xdg_cache_file(root)):
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(f, text)
            return
        except OSError:
            continue


def file_sha256(root: Path, rel: str) -> str:
    """sha256 of ROOT/rel, hashed only when its size or mtime differ from the cached ones (a Jetson starting
    `run` does not rehash a 100 MB engine each time). An edit that keeps size and mtime is not noticed,
    as with make or rsync."""
    p = root / rel
    st = p.stat()
    key = str(p.resolve())
    hit = _memory_cache.get(key)
    if hit is not None and hit[:2] == (st.st_size, st.st_mtime_ns):
        return hit[2]
    cache = _read_cache(root)
    c = cache.get(rel)
    if isinstance(c, dict) and c.get("size") == st.st_size and c.get("mtime_ns") == st.st_mtime_ns and isinstance(c.get("sha256"), str):
        digest = str(c["sha256"])
    else:
        digest = sha256_file(p)
        cache[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        _write_cache(root, cache)
    _memory_cache[key] = (st.st_size, st.st_mtime_ns, digest)
    return digest


def fine_role(dataset: str) -> str:
    return f"fine:{dataset}"


def default_filename(role: str, precision: str, kind: str = "onnx") -> str:
    stem = "model" if role == "main" else role.replace(":", ".")
    mid = "" if (precision == "fp32" and kind == "onnx") else f".{precision}"
    return f"{stem}{mid}.{kind}"


@dataclass
class ModelEntry:
    role: str
    precision: str
    file: str  # relative to the bundle directory
    sha256: str
    format: str = "onnx"  # "onnx" or "engine"
    input: str = INPUT_NAME
    output: str = OUTPUT_NAME
    num_outputs: int = 0
    info: dict[str, Any] | None = None
    dla_core: int | None = None  # an engine built for this DLA core (None: for the GPU)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelEntry":
        """An entry of bundle.json. Engine entries written before engine kinds were keyed recorded a `best`
        engine as int8 and a DLA engine without its core; their sidecar copy (`info`) says what they are."""
        entry = cls(**d)
        info = entry.info or {}
        if entry.format == "engine":
            if entry.precision == "int8" and info.get("precision") == "best":
                entry.precision = "best"
            if "dla_core" not in d and isinstance(info.get("dla_core"), int):
                entry.dla_core = int(info["dla_core"])
        return entry

    @property
    def kind(self) -> tuple[str, str, str, int | None]:
        """What makes an entry unique in a bundle: role, precision, format and DLA core."""
        return self.role, self.precision, self.format, self.dla_core

    def describe(self) -> str:
        """"fp16 engine", "fp16 engine for DLA core 0", "fp32 onnx"."""
        return f"{self.precision} {self.format}" + (f" for DLA core {self.dla_core}" if self.dla_core is not None else "")


class Bundle:
    """A bundle directory and its bundle.json. Load with Bundle.load; build with Bundle.create."""

    def __init__(self, root: Path, meta: dict[str, Any], verify_reads: bool = False):
        self.root = Path(root)
        self.meta = meta
        self.verify_reads = verify_reads  # path(entry) checks the file's sha256 before handing it out
        self.labels = LabelSpace.from_dict(meta["labels"])
        self.preprocess = PreprocessSpec.from_dict(meta["preprocess"])

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        *,
        labels: LabelSpace,
        preprocess: PreprocessSpec,
        kind: str,
        variant: str,
        backbone: str,
        opset: int,
        extra: dict[str, Any] | None = None,
    ) -> "Bundle":
        if kind not in ("erudite", "zoo"):
            raise ValueError(f"bundle kind must be erudite or zoo, not {kind!r}")
        meta: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "erudite_edge_version": __version__,
            "kind": kind,
            "variant": variant,
            "backbone": backbone,
            "opset": int(opset),
            "labels": labels.to_dict(),
            "preprocess": preprocess.to_dict(),
            "models": [],
        }
        if extra:
            meta.update(extra)
        return cls(Path(root), meta)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | os.PathLike[str], verify: bool | None = None) -> "Bundle":
        """verify: None (default) checks each model file's sha256 when it is read (`path(entry)`), unless
        `--no-verify` turned that off; True checks every listed file now; False never checks."""
        root = Path(root)
        path = root / BUNDLE_FILE if root.is_dir() else root
        if root.is_file() and root.suffix == ".onnx":
            raise BundleError(f"{root} is an ONNX file; pass its bundle directory (the one holding {BUNDLE_FILE})")
        if root.exists() and not root.is_dir() and root.name != BUNDLE_FILE:
            raise BundleError(f"{root} is not a bundle: a bundle is a directory made by `erudite-edge export` (holding {BUNDLE_FILE})")
        if not path.is_file():
            if not root.exists():
                olds = sorted(root.parent.glob(f".{root.name}.old-*")) if root.name else []
                if olds:
                    raise BundleError(f"{root} not found, but {olds[-1]} holds the previous bundle (an export was "
                                      f"stopped while swapping them): rename it to {root}")
            raise BundleError(f"{path} not found: a bundle is a directory made by `erudite-edge export`")
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:  # ValueError: also not UTF-8, an int of 4300+ digits
            raise BundleError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path}: not an erudite-edge bundle (format field is missing or foreign)")
        version = meta.get("format_version", 0)
        if isinstance(version, int) and version > BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{path}: bundle format {version} is newer than this erudite-edge ({__version__}) reads; upgrade erudite-edge"
            )
        from erudite_edge.core.schema import BundleSchema, check

        check(BundleSchema, meta, str(path), BundleError)
        bundle = cls(path.parent, meta, verify_reads=_verify_by_default if verify is None else verify)
        if verify:
            bundle.verify()
        return bundle

    # -- replacing ---------------------------------------------------------------------------------
    @staticmethod
    def check_replaceable(out: str | os.PathLike[str]) -> None:
        """`--overwrite` may replace only a bundle (a folder with a valid bundle.json) or an empty folder:
        anything else is the user's and is refused (UsageError, one line)."""
        from erudite_edge.errors import UsageError

        out = Path(out)
        if not out.exists() and not out.is_symlink():
            return
        if out.is_symlink() or not out.is_dir():
            raise UsageError(f"--out {out} is not a folder; --overwrite replaces only a bundle folder: choose another --out")
        try:
            empty = not any(out.iterdir())
        except OSError as e:
            raise UsageError(f"--out {out}: cannot list it ({e.strerror}); choose another --out") from e
        if empty:
            return
        try:
            Bundle.load(out, verify=False)
        except BundleError as e:
            raise UsageError(f"--out {out} is not a bundle ({e}); --overwrite replaces only a bundle or an empty folder: "
                             "choose another --out or move it away yourself") from None

    # -- facts ----------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant", ""))

    @property
    def backbone(self) -> str:
        return str(self.meta.get("backbone", ""))

    @property
    def models(self) -> list[ModelEntry]:
        return [ModelEntry.from_dict(m) for m in self.meta["models"]]

    def roles(self) -> list[str]:
        if self.kind == "zoo":
            return ["coarse"] + [fine_role(d) for d in self.labels.datasets]
        return ["main"]

    def expected_outputs(self, role: str) -> int:
        if role == "main":
            return self.labels.num_classes
        if role == "coarse":
            return self.labels.num_datasets
        if role.startswith("fine:"):
            ds = role.split(":", 1)[1]
            if ds not in self.labels.datasets:
                raise BundleError(f"role {role}: data set {ds!r} is not in the label table")
            return self.labels.sizes[self.labels.datasets.index(ds)]
        raise BundleError(f"unknown model role {role!r}")

    def find(self, role: str = "main", precision: str = "fp32", fmt: str = "onnx",
             dla_core: int | None = None) -> ModelEntry | None:
        """The entry of exactly this kind (an engine for a DLA core only when `dla_core` names that core)."""
        for m in self.models:
            if m.kind == (role, precision, fmt, dla_core):
                return m
        return None

    def entry(self, role: str = "main", precision: str = "fp32", fmt: str = "onnx",
              dla_core: int | None = None) -> ModelEntry:
        m = self.find(role, precision, fmt, dla_core)
        if m is None:
            asked = ModelEntry(role, precision, "", "", fmt, dla_core=dla_core).describe()
            if fmt == "engine":  # one line listing the engines there are, and the command that builds this one
                have = [x.describe() for x in self.models if x.role == role and x.format == "engine"]
                dla = f" --dla-core {dla_core}" if dla_core is not None else ""
                raise BundleError(
                    f"{self.root}: no {asked} for role {role!r} (engines: {', '.join(have) or 'none'}); build it on the "
                    f"device with `erudite-edge export engine --bundle DIR --precision {precision}{dla}`"
                )
            have = sorted({x.describe() for x in self.models if x.role == role})
            hint = {
                ("fp16", "onnx"): "run `erudite-edge export fp16 --bundle DIR`",
                ("int8", "onnx"): "run `erudite-edge export int8 --bundle DIR --calib IMAGES`",
            }.get((precision, fmt), "run `erudite-edge export engine --bundle DIR --precision ...` on the device")
            raise BundleError(
                f"{self.root}: no {precision} {fmt} model for role {role!r} (has: {', '.join(have) or 'none'}); {hint}"
            )
        return m

    def path(self, entry: ModelEntry) -> Path:
        """The file of a model entry, checked against its sha256 first when the bundle verifies reads."""
        if self.verify_reads:
            self.verify_entry(entry)
        return self.root / entry.file

    def verify_entry(self, entry: ModelEntry) -> None:
        """The one check every reader of a model file (ONNX Runtime, TensorRT, the engine builder) can call:
        BundleError naming the file when it is missing or its sha256 differs from bundle.json's."""
        p = self.root / entry.file
        if not p.is_file():
            raise BundleError(f"{p}: listed in {BUNDLE_FILE} but missing")
        if file_sha256(self.root, entry.file) != entry.sha256:
            raise BundleError(f"{p}: contents do not match the sha256 in {BUNDLE_FILE} (file changed or truncated); "
                              "re-export it, or pass --no-verify to use it anyway")

    def precisions(self, fmt: str = "onnx", role: str | None = None) -> list[str]:
        role = role or self.roles()[0]
        return [p for p in PRECISIONS if self.find(role, p, fmt) is not None]

    # -- mutation -------------------------------------------------------------------------------
    def add_model(
        self,
        role: str,
        precision: str,
        file: str | os.PathLike[str],
        fmt: str = "onnx",
        info: dict[str, Any] | None = None,
        dla_core: int | None = None,
    ) -> ModelEntry:
        """Record a model file that already lies in the bundle directory (replacing any entry of the same
        kind: role, precision, format and, for an engine, DLA core). Engines may also be `best`."""
        allowed = PRECISIONS + (ENGINE_ONLY_PRECISIONS if fmt == "engine" else ())
        if precision not in allowed:
            raise ValueError(f"precision of a {fmt} model must be one of {allowed}")
        if dla_core is not None and fmt != "engine":
            raise ValueError("only a TensorRT engine is built for a DLA core")
        p = Path(file)
        full = p if p.is_absolute() else self.root / p
        if not full.is_file():
            raise BundleError(f"{full}: model file not found")
        rel = os.path.relpath(full, self.root)
        entry = ModelEntry(
            role=role,
            precision=precision,
            file=rel,
            sha256=file_sha256(self.root, rel),
            format=fmt,
            num_outputs=self.expected_outputs(role),
            info=info,
            dla_core=dla_core,
        )
        self.meta["models"] = [m for m in self.meta["models"] if ModelEntry.from_dict(m).kind != entry.kind] + [entry.to_dict()]
        return entry

    def save(self, root: str | os.PathLike[str] | None = None) -> Path:
        target = Path(root) if root is not None else self.root
        write_json_atomic(target / BUNDLE_FILE, self.meta)
        return target / BUNDLE_FILE

    def verify(self) -> None:
        """Every model file exists and matches its recorded sha256."""
        for m in self.models:
            self.verify_entry(m)

    def metadata_props(self) -> dict[str, str]:
        """The facts written into each ONNX file's metadata_props, so an ONNX file alone describes itself."""
        return {
            "erudite_edge.format": BUNDLE_FORMAT,
            "erudite_edge.version": __version__,
            "erudite_edge.kind": self.kind,
            "erudite_edge.variant": self.variant,
            "erudite_edge.backbone": self.backbone,
            "erudite_edge.core.labels": json.dumps(self.labels.to_dict()),
            "erudite_edge.core.preprocess": json.dumps(self.preprocess.to_dict()),
        }

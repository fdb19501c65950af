"""The shapes of bundle.json and of a training config, checked on load with pydantic: a field of the
wrong type is one line naming the key, the type expected and the value found, never a traceback deep
in the code that reads it. One helper (`check`) serves both; the schemas here describe bundle.json,
the training config's is its own dataclass (train/config.py: TrainConfig)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

T = TypeVar("T")


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _expected(err: Any) -> str:
    msg = str(err.get("msg", ""))
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    ctx = err.get("ctx") or {}
    if err.get("type") in ("too_short", "too_long"):
        lo, hi = ctx.get("min_length"), ctx.get("max_length")
        return f"{lo} items" if lo == hi or hi is None else f"{lo} to {hi} items"
    if err.get("type") == "missing":
        return "present (it is missing)"
    if err.get("type") == "extra_forbidden":
        return "absent (unknown key)"
    return msg


def explain(e: ValidationError) -> str:
    """The first problem of a ValidationError as `key: expected ..., got ...` (and how many more)."""
    errors = e.errors()
    first = errors[0]
    got = "" if first.get("type") == "missing" else f", got {first.get('input')!r}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{_where(tuple(first['loc']))}: expected {_expected(first)}{got}{more}"


def check(schema: type[T], data: Any, where: str, error: type[Exception]) -> T:
    """`data` validated against `schema` (a pydantic model or a dataclass), or `error` with one line."""
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as e:
        raise error(f"{where}: {explain(e)}") from None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LabelsSchema(_Open):
    datasets: list[str]
    classes: list[str]
    dataset_of_class: list[int]


class PreprocessSchema(_Open):
    input_size: Annotated[list[int], Field(min_length=2, max_length=2)]
    resize: str = "stretch"
    crop_ratio: float = 0.875
    interpolation: str = "bilinear"
    mean: Annotated[list[float], Field(min_length=3, max_length=3)] = [0.485, 0.456, 0.406]
    std: Annotated[list[float], Field(min_length=3, max_length=3)] = [0.229, 0.224, 0.225]
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: float = 1.0 / 255.0
    dtype: Literal["float32", "uint8"] = "float32"


class ModelEntrySchema(_Open):
    role: str
    precision: Literal["fp32", "fp16", "int8", "best"]  # best: TensorRT engines only
    file: str
    sha256: str
    format: Literal["onnx", "engine"] = "onnx"
    input: str = "images"
    output: str = "logits"
    num_outputs: int = 0
    info: Optional[dict[str, Any]] = None
    dla_core: Optional[int] = None  # engines built for a DLA core


class BundleSchema(_Open):
    format: str
    format_version: int = 1
    kind: Literal["erudite", "zoo"]
    variant: str = ""
    backbone: str = ""
    opset: Optional[int] = None
    labels: LabelsSchema
    preprocess: PreprocessSchema
    models: list[ModelEntrySchema]

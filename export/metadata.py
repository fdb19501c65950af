"""The bundle's facts inside each ONNX file (metadata_props), so an ONNX file alone still says what
its outputs mean and how its input is made; and the check that a model's output size fits the
bundle's label table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import onnx

from erudite_edge.core.bundle import ATTENTION_OUTPUT, Bundle
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BundleError

ROLE_KEY = "erudite_edge.role"
PRECISION_KEY = "erudite_edge.precision"
NUM_OUTPUTS_KEY = "erudite_edge.num_outputs"


def model_props(bundle: Bundle, role: str, precision: str) -> dict[str, str]:
    """Bundle.metadata_props plus what is particular to one model file: its role, precision, output size."""
    return {
        **bundle.metadata_props(),
        ROLE_KEY: role,
        PRECISION_KEY: precision,
        NUM_OUTPUTS_KEY: str(bundle.expected_outputs(role)),
    }


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Write `props` into model.metadata_props, replacing entries of the same keys and keeping others."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in keep + [(k, str(v)) for k, v in props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model: onnx.ModelProto | str | os.PathLike[str]) -> dict[str, str]:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def facts_from_metadata(props: Mapping[str, str]) -> tuple[LabelSpace, PreprocessSpec]:
    """The label table and preprocessing an ONNX file carries (BundleError when they are absent)."""
    try:
        labels = LabelSpace.from_dict(json.loads(props["erudite_edge.core.labels"]))
        spec = PreprocessSpec.from_dict(json.loads(props["erudite_edge.core.preprocess"]))
    except KeyError as e:
        raise BundleError(f"ONNX metadata lacks {e}: not exported by erudite-edge") from e
    except json.JSONDecodeError as e:
        raise BundleError(f"ONNX metadata is not valid JSON ({e})") from e
    return labels, spec


def output_size(model: onnx.ModelProto) -> int | None:
    """The size of the logits output's last axis (None when it is symbolic). Besides the logits a model may
    have only the attention masks (`export onnx --with-attention`)."""
    outputs = [o for o in model.graph.output if o.name != ATTENTION_OUTPUT]
    if len(outputs) != 1:
        raise BundleError(f"the model has {len(outputs)} outputs besides {ATTENTION_OUTPUT!r}; an erudite-edge model has exactly one (logits)")
    dims = outputs[0].type.tensor_type.shape.dim
    if len(dims) != 2:
        raise BundleError(f"the model's output has rank {len(dims)}; expected [batch, classes]")
    return int(dims[1].dim_value) if dims[1].HasField("dim_value") else None


def check_output_size(bundle: Bundle, role: str, model: onnx.ModelProto, where: str | Path) -> None:
    """A model whose output size differs from the label table for its role would label every image
    wrongly: refuse it with the two numbers."""
    expected = bundle.expected_outputs(role)
    got = output_size(model)
    if got is not None and got != expected:
        raise BundleError(
            f"{where}: the model outputs {got} logits but the bundle's label table gives role {role!r} "
            f"{expected} classes; bundle.json does not belong to this model (re-export the bundle)"
        )

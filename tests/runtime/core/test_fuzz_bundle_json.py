"""Fuzzing bundle.json (issue 25 item 9): a valid bundle.json with keys dropped, retyped or replaced, and bytes
that are not JSON, UTF-8 or sane (deep nesting, huge integers): Bundle.load either loads it or raises
BundleError with one line; never another exception."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from erudite_edge.core.bundle import BUNDLE_FILE, Bundle
from erudite_edge.errors import BundleError
from onnx_fixtures import make_erudite_bundle

VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                      max_leaves=6)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("valid")
    make_erudite_bundle(root)
    return json.loads((root / BUNDLE_FILE).read_text())


def _paths(obj, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _load(root: Path, data: bytes) -> None:
    (root / BUNDLE_FILE).write_bytes(data)
    try:
        b = Bundle.load(root, verify=False)
        _ = (b.kind, b.labels.joint_names, [m.describe() for m in b.models])
    except BundleError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)


@pytest.mark.slow  # hypothesis examples, over 1 s
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bundle_json(valid: dict, tmp_path: Path, data) -> None:
    meta = copy.deepcopy(valid)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(meta) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(VALUES)
    _load(tmp_path, json.dumps(meta).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40))
@example(b"\xff\xfe{}")
@example(b"[" * 100_000)
@example(b'{"format": "erudite-edge-bundle", "format_version": ' + b"9" * 5000 + b"}")
@example(b'{"format": "erudite-edge-bundle", "format_version": 1e999}')
def test_bundle_json_bytes(tmp_path: Path, data: bytes) -> None:
    _load(tmp_path, data)

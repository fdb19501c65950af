"""Fixtures of the runtime's tests: small real bundles (nearest-colour ONNX models, no torch), one per test
module that asks for them."""

from __future__ import annotations

import pytest

from erudite_edge.core.bundle import Bundle
from onnx_fixtures import make_erudite_bundle, make_zoo_bundle


@pytest.fixture(scope="module")
def erudite(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_erudite_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_zoo_bundle(tmp_path_factory.mktemp("zoo"))

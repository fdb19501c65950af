"""Fixtures of the runtime's tests: small real bundles (nearest-colour ONNX models, no torch) and a small
folder of their images, one per test module that asks for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from erudite_edge.core.bundle import Bundle
from onnx_fixtures import COLORS, make_erudite_bundle, make_zoo_bundle, solid_image, write_image


@pytest.fixture(scope="module")
def erudite(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_erudite_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def bundle_dir(erudite: Bundle) -> Path:
    """The erudite bundle's folder, for tests that pass a path (the API, the CLI)."""
    return erudite.root


@pytest.fixture(scope="module")
def clf(bundle_dir: Path):
    """A Classifier on that bundle (top-3, batch 2), open for the whole module."""
    from erudite_edge import Classifier

    with Classifier(bundle_dir, topk=3, batch=2) as c:
        yield c


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_zoo_bundle(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four noisy PNGs, one per colour of the bundles' label space, named `{i}_{colour}.png` so that sorted
    order is creation order: red, cyan, yellow, blue."""
    f = tmp_path_factory.mktemp("imgs")
    for i, name in enumerate(["red", "cyan", "yellow", "blue"]):
        write_image(f / f"{i}_{name}.png", solid_image(COLORS[name], noise=10, seed=i))
    return f

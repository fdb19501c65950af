"""The engine cache: its key, where it lives, the lock between real processes, and the first-use logic
(a stale or foreign engine is rebuilt, never loaded). TensorRT itself cannot exist here: the first-use
tests replace the build step and TensorRT with FAKES (tests/fakes_tensorrt.py), named as such; they
prove the cache's own decisions, not that an engine builds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.backends.tensorrt.cache import CacheKey, cache_dir, engine_lock, user_cache_dir
from erudite_edge.backends.tensorrt.sidecar import DeviceInfo, read_sidecar
from erudite_edge.errors import BackendUnavailable
from paths import REPO

ROOT = REPO
ORIN = DeviceInfo("Orin", (8, 7))


def key(**kw) -> CacheKey:
    base = dict(onnx_sha256="a" * 64, tensorrt_version="10.3.0.30", device=ORIN, precision="fp16",
                batch_profile="1:8:32", dla_core=None)
    base.update(kw)
    return CacheKey.make(**base)


def test_every_key_field_changes_the_file():
    k = key()
    variants = [key(onnx_sha256="b" * 64), key(tensorrt_version="10.3.0.26"), key(device=DeviceInfo("Thor", (8, 7))),
                key(device=DeviceInfo("Orin", (8, 6))), key(precision="int8"), key(batch_profile="1:1:1"), key(dla_core=0)]
    names = {k.filename("model")} | {v.filename("model") for v in variants}
    assert len(names) == len(variants) + 1
    assert k.filename("model") == key().filename("model")  # deterministic
    assert k.filename("model").startswith("model.fp16.") and k.filename("model").endswith(".engine")
    assert ".dla0." in key(dla_core=0).filename("fine.birds")


def test_cache_beside_a_writable_bundle(tmp_path):
    assert cache_dir(tmp_path / "bundle", env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "bundle" / "engines"


def test_cache_in_xdg_when_the_bundle_cannot_be_written(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "engines").write_text("a file where the cache directory would go")  # mkdir there fails, even for root
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert cache_dir(bundle, env=env) == tmp_path / "xdg" / "erudite-edge" / "engines"
    assert user_cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/erudite-edge/engines")
    (tmp_path / "blocked").write_text("")
    with pytest.raises(BackendUnavailable, match="no writable place"):
        cache_dir(bundle, env={"XDG_CACHE_HOME": str(tmp_path / "blocked")})


LOCKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from erudite_edge.backends.tensorrt.cache import engine_lock
    name, engine, log, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    def note(msg):
        with open(log, "a") as f:
            f.write(f"{{name}} {{msg}}\\n")
    with engine_lock(engine, on_wait=lambda m: note("waits")):
        note("holds")
        time.sleep(hold)
        note("releases")
""")


def start_locker(tmp_path: Path, name: str, hold: float) -> subprocess.Popen:
    script = tmp_path / "locker.py"
    script.write_text(LOCKER.format(root=str(ROOT)))
    return subprocess.Popen([sys.executable, str(script), name, str(tmp_path / "model.engine"), str(tmp_path / "log"), str(hold)])


def wait_for(path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.slow  # child processes
def test_lock_one_process_builds_the_other_waits(tmp_path):
    a = start_locker(tmp_path, "A", 1.0)
    wait_for(tmp_path / "log", "A holds")
    b = start_locker(tmp_path, "B", 0.0)
    assert a.wait(30) == 0 and b.wait(30) == 0
    lines = (tmp_path / "log").read_text().split("\n")
    assert lines.index("B waits") < lines.index("A releases") < lines.index("B holds"), lines


@pytest.mark.slow  # child processes
def test_a_killed_builder_does_not_leave_the_cache_locked(tmp_path):
    a = start_locker(tmp_path, "A", 60.0)
    wait_for(tmp_path / "log", "A holds")
    with pytest.raises(TimeoutError):
        with engine_lock(tmp_path / "model.engine", timeout_s=0.3):
            pass
    os.kill(a.pid, signal.SIGKILL)
    a.wait(30)
    with engine_lock(tmp_path / "model.engine", timeout_s=10):
        pass  # the kernel released the dead process's lock


# -- first use, over FAKES ---------------------------------------------------------------------------
@pytest.fixture
def first_use(tmp_path, monkeypatch):
    """A real bundle (tiny ONNX model), with TensorRT, the GPU and the build step replaced by FAKES."""
    import erudite_edge.backends.tensorrt.build as engine_mod
    from fakes_tensorrt import FAKE_GPU, FAKE_TRT_VERSION, EngineSpec, FakeDevice, install_fake_tensorrt
    from tensorrt_bundles import TRT10, make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    spec = EngineSpec(weights=np.ones((3, bundle.expected_outputs("main")), np.float32), size=32)
    trt = install_fake_tensorrt(monkeypatch, spec, FakeDevice())
    trt.BuilderFlag = type("BuilderFlag", (), {"__members__": {n: n for n in TRT10.builder_flags}})
    trt.NetworkDefinitionCreationFlag = type("Net", (), {"__members__": {n: n for n in TRT10.network_flags}})
    monkeypatch.setattr(engine_mod, "current_device", lambda: FAKE_GPU)
    builds: list[Path] = []

    def fake_build_checked(bundle, role, entry, plan, batch, workspace, engine_path, *, version, device, cache_key, say,
                           **kw):
        builds.append(engine_path)
        sidecar = engine_mod.make_sidecar(
            tensorrt_version=version, device=device, plan=plan, role=role, inputs=["images"], outputs=["logits"],
            profile={"images": {"min": [batch.min, 3, 32, 32], "opt": [batch.opt, 3, 32, 32], "max": [batch.max, 3, 32, 32]}},
            source_onnx=entry.file, source_sha256=entry.sha256, polygraphy_version=cache_key["polygraphy_version"])
        sidecar.cache_key = cache_key
        engine_path.write_bytes(b"fake engine")
        engine_mod.write_sidecar(engine_path, sidecar)
        return sidecar

    monkeypatch.setattr(engine_mod, "build_checked", fake_build_checked)
    return bundle, builds, engine_mod, FAKE_TRT_VERSION


def test_first_use_builds_once_then_reuses(first_use, tmp_path):
    bundle, builds, engine_mod, _ = first_use
    said: list[str] = []
    path = engine_mod.engine_on_first_use(bundle, "main", "fp16", log=said.append, env={"XDG_CACHE_HOME": str(tmp_path / "x")})
    assert path.parent == bundle.root / "engines" and len(builds) == 1
    assert read_sidecar(path).cache_key["onnx_sha256"] == bundle.entry("main", "fp32").sha256
    again = engine_mod.engine_on_first_use(bundle, "main", "fp16", log=said.append)
    assert again == path and len(builds) == 1  # found, not rebuilt
    assert engine_mod.engine_on_first_use(bundle, "main", "fp16", batch="1:1:1") != path and len(builds) == 2


@pytest.mark.parametrize("spoil", ["foreign_trt", "corrupt_sidecar", "other_model"])
def test_stale_or_foreign_engine_is_rebuilt_not_loaded(first_use, spoil):
    bundle, builds, engine_mod, _ = first_use
    path = engine_mod.engine_on_first_use(bundle, "main", "fp16")
    sidecar_file = Path(str(path) + ".json")
    if spoil == "foreign_trt":
        sidecar_file.write_text(sidecar_file.read_text().replace('"tensorrt_version": "10.3.0.30"', '"tensorrt_version": "8.6.2.3"'))
    elif spoil == "corrupt_sidecar":
        sidecar_file.write_text("{not json")
    else:
        sidecar_file.write_text(sidecar_file.read_text().replace(bundle.entry("main", "fp32").sha256, "0" * 64))
    said: list[str] = []
    assert engine_mod.engine_on_first_use(bundle, "main", "fp16", log=said.append) == path
    assert len(builds) == 2 and any("rebuilding" in s for s in said), said


# -- the GPU beyond its name, and what built the engine (issue 24 item 6) -------------------------------
AGX_ORIN = DeviceInfo("Orin", (8, 7), sm_count=16, total_memory_mib=30536, dla_cores=2)
ORIN_NANO = DeviceInfo("Orin", (8, 7), sm_count=8, total_memory_mib=7620, dla_cores=0)


def test_device_facts_and_versions_are_in_the_key():
    """Every Orin module is "Orin" / 8.7: SM count, memory and DLA cores tell them apart; the erudite-edge and
    Polygraphy that built an engine are part of what it is."""
    from dataclasses import replace

    k = key(device=AGX_ORIN, polygraphy_version="0.53.6")
    variants = [key(device=ORIN_NANO, polygraphy_version="0.53.6"),
                key(device=replace(AGX_ORIN, sm_count=8), polygraphy_version="0.53.6"),
                key(device=replace(AGX_ORIN, total_memory_mib=15656), polygraphy_version="0.53.6"),
                key(device=replace(AGX_ORIN, dla_cores=1), polygraphy_version="0.53.6"),
                key(device=AGX_ORIN, polygraphy_version="0.49.9"),
                key(device=AGX_ORIN, polygraphy_version="0.53.6", erudite_edge_version="0.0.9")]
    names = {k.filename("model")} | {v.filename("model") for v in variants}
    assert len(names) == len(variants) + 1
    d = k.to_dict()
    assert (d["sm_count"], d["total_memory_mib"], d["dla_cores"], d["polygraphy_version"]) == (16, 30536, 2, "0.53.6")
    assert d["erudite_edge_version"]


def test_an_engine_cached_on_another_module_or_by_another_build_is_rebuilt(first_use, monkeypatch):
    from dataclasses import replace

    import erudite_edge.backends.tensorrt.build as engine_mod
    from fakes_tensorrt import FAKE_GPU

    bundle, builds, _, _ = first_use
    path = engine_mod.engine_on_first_use(bundle, "main", "fp16")
    sc = read_sidecar(path)
    assert (sc.sm_count, sc.total_memory_mib, sc.dla_cores) == (FAKE_GPU.sm_count, FAKE_GPU.total_memory_mib, 0)
    assert sc.polygraphy_version == sc.cache_key["polygraphy_version"] and sc.erudite_edge_version
    # the same name and capability with more SMs and memory (an AGX Orin beside an Orin Nano): another engine
    monkeypatch.setattr(engine_mod, "current_device", lambda: replace(FAKE_GPU, sm_count=16, total_memory_mib=30536))
    other = engine_mod.engine_on_first_use(bundle, "main", "fp16")
    assert other != path and len(builds) == 2 and read_sidecar(other).sm_count == 16
    # the DLA core count TensorRT sees, and the Polygraphy that builds, are in the key too
    import sys

    sys.modules["tensorrt"].__dict__["num_dla_cores"] = 2
    assert engine_mod.engine_on_first_use(bundle, "main", "fp16") not in (path, other) and len(builds) == 3
    monkeypatch.setattr(engine_mod, "polygraphy_version", lambda: "0.49.9")
    assert read_sidecar(engine_mod.engine_on_first_use(bundle, "main", "fp16")).polygraphy_version == "0.49.9"
    assert len(builds) == 4
    # a sidecar that says another module under this key's file name is stale: rebuilt, never loaded
    last = builds[-1]
    sidecar_file = Path(str(last) + ".json")
    sidecar_file.write_text(sidecar_file.read_text().replace('"sm_count": 16', '"sm_count": 4'))
    said: list[str] = []
    assert engine_mod.engine_on_first_use(bundle, "main", "fp16", log=said.append) == last and len(builds) == 5
    assert any("SM count" in s and "rebuilding" in s for s in said), said

"""ONNX Runtime sessions that share a process do not slow each other down through thread spinning.

The zoo's coarse and fine sessions take turns, and the bench interleaves the erudite model with the
zoo. With ONNX Runtime's default (intra-op workers spin after each call), an idle session's workers
keep a core busy while the next session runs: on 2 cores the zoo paid about twice its real cost. These
tests time a real convolutional ONNX model alone and beside other sessions, and check that every
session the runtime makes (ZooModel's members, the erudite runner, hence the bench's contenders) is
configured so.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import numpy as np

from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.core.bundle import Bundle
from erudite_edge.inference.models import load_model
from onnx_fixtures import make_erudite_bundle, make_zoo_bundle

CHANNELS = 32
SIZE = 56


def conv_model(path: Path, seed: int) -> Path:
    """Six 3x3 convolutions (a few ms per call on a CPU core): big enough for ONNX Runtime to use its
    intra-op thread pool, which is where spinning happens."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(6):
        w = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CHANNELS, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CHANNELS])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _timed(runner: OnnxRuntimeRunner, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    runner.infer(x)
    return (time.perf_counter() - t0) * 1e3


def alone_and_beside(paths: list[Path], x: np.ndarray, rounds: int = 16, calls: int = 3, **kw) -> tuple[float, float]:
    """p50 (ms) of model A alone (the only session in the process) and interleaved with the other
    sessions (A, B, C, A, B, C, ...). Alone and beside-others blocks alternate over `rounds`, so a
    change in machine load hits both alike."""
    a = OnnxRuntimeRunner(paths[0], **kw)
    for _ in range(3):
        a.infer(x)
    alone: list[float] = []
    beside: list[float] = []
    for _ in range(rounds):
        alone += [_timed(a, x) for _ in range(calls)]
        others = [OnnxRuntimeRunner(p, **kw) for p in paths[1:]]
        for o in others:
            o.infer(x)
        for _ in range(calls):
            beside.append(_timed(a, x))
            for o in others:
                o.infer(x)
        for o in others:
            o.close()
        del others
        gc.collect()
    a.close()
    return statistics.median(alone), statistics.median(beside)


# Not marked slow although it takes seconds: a timing comparison, it runs in the first stage, where no xdist
# worker of the suite runs beside it.
def test_a_session_beside_others_takes_as_long_as_alone(tmp_path):
    """p50 beside two other sessions is at most 15 % above p50 alone (idle neighbours must cost nothing;
    spinning ones cost 2-3x). Faster beside than alone is not what this guards: CI's quiet 2-core machine
    showed it in all three attempts (2.75 vs 1.98 ms), so only the slow side is judged. threads=2 gives every session a
    worker that could spin, whatever the core count. Thread contention is systematic (every attempt
    shows it); a burst of load from elsewhere on a shared machine is not: so the test passes when one
    of three attempts agrees, and fails only when all three disagree."""
    paths = [conv_model(tmp_path / f"m{i}.onnx", seed=i) for i in range(3)]
    x = np.random.default_rng(0).standard_normal((1, CHANNELS, SIZE, SIZE), dtype=np.float32)
    seen = []
    for _ in range(3):
        alone, beside = alone_and_beside(paths, x, threads=2)
        seen.append(f"alone {alone:.2f} ms, beside {beside:.2f} ms (n=48 each)")
        if beside / alone <= 1.15:
            return
    raise AssertionError("p50 of a session beside others is more than 15 % above alone: " + "; ".join(seen))


def _spinning(runner) -> tuple[str, str]:
    opts = runner.session.get_session_options()
    return (opts.get_session_config_entry("session.intra_op.allow_spinning"),
            opts.get_session_config_entry("session.inter_op.allow_spinning"))


def test_zoo_members_and_the_erudite_runner_do_not_spin(tmp_path):
    """What `run --zoo`, `run` and `bench` load: every ONNX Runtime session has spinning off."""
    zoo = load_model(Bundle.load(make_zoo_bundle(tmp_path / "zoo").root), RunnerOptions("onnxruntime", "fp32"), announce=None)
    erudite = load_model(Bundle.load(make_erudite_bundle(tmp_path / "erudite").root), RunnerOptions("onnxruntime", "fp32"), announce=None)
    try:
        assert len(zoo.runners) == 3
        for role, r in zoo.runners.items():
            assert _spinning(r) == ("0", "0"), role
            assert r.describe()["spinning"] is False
        assert _spinning(erudite.runner) == ("0", "0")
    finally:
        zoo.close()
        erudite.close()


def test_spinning_can_be_asked_for(tmp_path):
    r = OnnxRuntimeRunner(conv_model(tmp_path / "m.onnx", seed=0), spinning=True)
    assert _spinning(r) == ("1", "1")
    assert r.describe()["spinning"] is True


def test_an_idle_session_burns_no_cpu(tmp_path):
    """The mechanism itself: after a call, a session that does not spin uses (almost) no CPU while idle.
    With spinning its worker keeps a core busy for tens of ms after every call (measured here: 33 ms
    of CPU in a 50 ms idle window)."""
    r = OnnxRuntimeRunner(conv_model(tmp_path / "m.onnx", seed=0), threads=2)
    x = np.zeros((1, CHANNELS, SIZE, SIZE), np.float32)
    burnt = []
    for _ in range(5):
        r.infer(x)
        c0, w0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - w0 < 0.05:
            time.sleep(0.005)
        burnt.append((time.process_time() - c0) * 1e3)
    assert statistics.median(burnt) < 10.0, burnt

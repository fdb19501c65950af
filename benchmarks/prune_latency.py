"""The latency probe of `prune --target-latency-ms`: the deployed networks exported to ONNX (the exporter
of `export onnx`) and timed by the bench's own timer (benchmarks.latency.interleaved) on the bench's ONNX
Runtime path (erudite_edge's OnnxRuntimeRunner: TensorRT EP, CUDA, then CPU, whichever this machine has),
float32, one synthetic batch. One call of an erudite run is its one network; one call of a Single run is
its coarse model then one fine model, the fine models taking turns (a frame's work). Returns the p50 ms.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.latency import Contender, interleaved, summarize


@dataclass(frozen=True)
class OnnxLatency:
    batch: int = 1
    threads: int | None = None  # ONNX Runtime intra-op threads (None: its default)
    warmup: int = 3
    iters: int = 20
    rounds: int = 2

    def __call__(self, graphs: list[Any], spec: Any) -> float:
        """p50 ms of one call of `graphs` fed what `spec` (the run's PreprocessSpec) says."""
        from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
        from export.onnx_export import to_onnx, write_model

        with tempfile.TemporaryDirectory(prefix="erudite-prune-latency-") as tmp:
            runners = []
            for i, graph in enumerate(graphs):
                path = Path(tmp) / f"net{i}.onnx"
                write_model(to_onnx(graph, spec), path, {})
                runners.append(OnnxRuntimeRunner(path, threads=self.threads))
            shape = (self.batch, 3, *spec.input_size) if spec.dtype == "float32" else (self.batch, *spec.input_size, 3)
            x = np.random.default_rng(0).random(shape).astype(np.float32)
            if spec.dtype == "uint8":
                x = (x * 255).astype(np.uint8)
            samples = interleaved([Contender("pruned", self.batch, frame_step(runners, x))],
                                  warmup=self.warmup, iters=self.iters, rounds=self.rounds)
            return summarize(samples["pruned"], self.batch).p50_ms


def frame_step(runners: list[Any], x: np.ndarray) -> Callable[[], None]:
    """One frame's work: the first runner (an erudite network, or a zoo's coarse model), then for a zoo one
    of the others (its fine models), in turn."""
    turn = [0]

    def step() -> None:
        runners[0].infer(x)
        if len(runners) > 1:  # a Single run: the coarse model, then the fine models in turn
            runners[1 + turn[0] % (len(runners) - 1)].infer(x)
            turn[0] += 1

    return step

"""The two-stage zoo (the paper's "Single" baseline: one model per data set plus a router).

A coarse model picks the data set of each image; the images are grouped by that choice and each
group goes to its data set's fine model; the results are scattered back into input order, in the
joint label space, so the same top-k and output code serves the erudite model and the zoo.

Scores (our choice, documented): for an image routed to data set d,

    score(d/c) = P_coarse(d | x) * P_fine_d(c | x)      for the classes c of d
    score(e/c) = 0                                      for every other data set e

i.e. the joint probability under hard routing. The rank order inside d is the fine model's; the
scores of one image add up to P_coarse(d | x), so a low value says the router itself was unsure,
which a bare fine softmax would hide.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping

import numpy as np

from erudite_edge.backends.registry import announce_stderr, choose_backend, load_runner
from erudite_edge.backends.base import Runner
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.bundle import fine_role
from erudite_edge.errors import BundleError
from erudite_edge.outputs.sinks import softmax


class ZooRunner:
    """Holds runners for role "coarse" and each "fine:<dataset>"; `predict` maps a preprocessed batch
    to (B, num_classes) joint probabilities. `role_ms` sums inference time per role;
    `last_groups` / `last_coarse` tell how the last batch was routed."""

    def __init__(
        self,
        bundle: Bundle,
        backend: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        announce: Callable[[str], None] | None = announce_stderr,
        spinning: bool = False,
        options: Mapping[str, Any] | None = None,
    ):
        if bundle.kind != "zoo":
            raise BundleError(f"{bundle.root}: an {bundle.kind} bundle, not a zoo; run it with --bundle")
        self.bundle = bundle
        self.labels = bundle.labels
        self.precision = precision
        choice = choose_backend(bundle, "coarse", backend, precision)
        self.backend = choice.backend
        self.runners: dict[str, Runner] = {}
        try:
            for role in bundle.roles():
                # the same backend for every member, so timings compare and one library is loaded
                self.runners[role] = load_runner(bundle, role, choice.backend, precision, threads, announce=None,
                                                  spinning=spinning, options=options)
        except BaseException:
            self.close()
            raise
        if announce is not None:
            announce(f"backend: {choice.backend} {precision} for the zoo's {len(self.runners)} models ({choice.reason})")
        self.role_ms: dict[str, float] = {role: 0.0 for role in self.runners}
        self.last_groups: dict[str, list[int]] = {}
        self.last_coarse: np.ndarray | None = None
        self.last_stage_ms: dict[str, float] | None = None  # device stages of the last predict, summed over its calls
        self._stages: dict[str, float] | None = None

    def _run(self, role: str, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        runner = self.runners[role]
        logits = runner.infer_chunked(batch)
        self.role_ms[role] += (time.perf_counter() - t0) * 1e3
        if runner.last_stage_ms is None:
            self._stages = None
        elif self._stages is not None:
            for k, v in runner.last_stage_ms.items():
                self._stages[k] = self._stages.get(k, 0.0) + v
        expected = self.bundle.expected_outputs(role)
        if logits.ndim != 2 or logits.shape != (len(batch), expected):
            raise BundleError(f"zoo model {role!r} returned shape {tuple(logits.shape)}, expected ({len(batch)}, {expected})")
        return softmax(logits)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Coarse model on the whole batch, then each fine model on the images routed to it."""
        self._stages = {}
        coarse = self._run("coarse", batch)
        chosen = coarse.argmax(axis=1)
        out = np.zeros((len(batch), self.labels.num_classes), dtype=np.float32)
        offsets, sizes = self.labels.offsets, self.labels.sizes
        groups: dict[str, list[int]] = {}
        for d in range(self.labels.num_datasets):
            idx = np.flatnonzero(chosen == d)
            if idx.size == 0:
                continue
            dataset = self.labels.datasets[d]
            fine = self._run(fine_role(dataset), batch[idx])
            out[idx, offsets[d] : offsets[d] + sizes[d]] = fine * coarse[idx, d : d + 1]
            groups[dataset] = idx.tolist()
        self.last_groups = groups
        self.last_coarse = coarse
        self.last_stage_ms = self._stages
        return out

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "precision": self.precision, "models": len(self.runners)}

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def __enter__(self) -> "ZooRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The models the pipeline runs, both in the joint label space: preprocessed batch -> (B, K) log-probabilities
(log-softmax: restricting to some data sets, `run --datasets`, stays exact where probabilities underflow).

`EruditeModel`: the erudite model, one runner (role "main") whose logits cover the joint label space.
`ZooModel`: the two-stage zoo (the paper's "Single" baseline: one model per data set plus a router).
`load_model(bundle, options)` gives the one a bundle holds. `Model` is the interface the pipeline needs.

The zoo: A coarse model picks the data set of each image; the images are grouped by that choice and each
group goes to its data set's fine model; the results are scattered back into input order, in the
joint label space, so the same top-k and output code serves the erudite model and the zoo.

Scores (our choice, documented): for an image routed to data set d,

    score(d/c) = P_coarse(d | x) * P_fine_d(c | x)      for the classes c of d
    score(e/c) = 0                                      for every other data set e

(returned as their logarithms: log P_coarse(d | x) + log P_fine_d(c | x), and -inf).
i.e. the joint probability under hard routing. The rank order inside d is the fine model's; the
scores of one image add up to P_coarse(d | x), so a low value says the router itself was unsure,
which a bare fine softmax would hide. `route_among(data sets)` (`run --datasets`): the router picks among
those data sets only (its softmax restricted to them), so a restricted answer is never a row of zeros.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

import numpy as np

from erudite_edge.backends.base import Runner
from erudite_edge.backends.registry import RunnerOptions, announce_stderr, choose_backend, load_runner
from erudite_edge.core.bundle import Bundle, fine_role
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.scores import log_softmax
from erudite_edge.errors import BundleError

Announce = Callable[[str], None]


class Model(Protocol):
    """A model in the joint label space: preprocessed batch -> (B, num_classes) log-probabilities (float32;
    np.exp gives the probabilities, argmax the top-1 class)."""

    backend: str
    role_ms: dict[str, float]

    def predict(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class EruditeModel:
    """The erudite model: one runner (role "main") whose logits cover the joint label space."""

    def __init__(self, runner: Runner, labels: LabelSpace, backend: str | None = None, attention: bool = False):
        self.runner = runner
        self.labels = labels
        self.backend = backend or runner.backend
        self.role_ms: dict[str, float] = {"main": 0.0}
        # attention: each predict also reads the attention masks (runner.infer_attention) into last_attention
        self.attention = attention
        self.last_attention: np.ndarray | None = None

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def last_stage_ms(self) -> dict[str, float] | None:
        """The last call's device stages (h2d, compute, d2h) where the backend measures them."""
        return self.runner.last_stage_ms

    def host_allocator(self) -> Callable[[int], np.ndarray] | None:
        """Where to put input batches (the runner's page-locked memory on TensorRT; None on a CPU backend)."""
        return self.runner.host_allocator()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        if self.attention:
            logits, self.last_attention = self.runner.infer_attention(batch)  # type: ignore[attr-defined]
        else:
            logits = self.runner.infer_chunked(batch)
        self.role_ms["main"] += (time.perf_counter() - t0) * 1e3
        if logits.ndim != 2 or logits.shape != (len(batch), self.labels.num_classes):
            raise BundleError(f"model returned shape {tuple(logits.shape)}, expected ({len(batch)}, {self.labels.num_classes})")
        return log_softmax(logits)

    def close(self) -> None:
        self.runner.close()


def load_model(bundle: Bundle, options: RunnerOptions | None = None, announce: Announce | None = None) -> Model:
    """The erudite model of an erudite bundle, or the two-stage ZooModel of a zoo bundle, loaded with
    `options` (backends.registry.RunnerOptions; a backend-specific option another backend does not take is
    warned about and ignored). `announce`: where to say which backend was picked (None: stderr)."""
    say = announce if announce is not None else announce_stderr
    if bundle.kind == "zoo":
        return ZooModel(bundle, options, announce=say)
    return EruditeModel(load_runner(bundle, "main", options, announce=say), bundle.labels)


class ZooModel:
    """Holds runners for role "coarse" and each "fine:<dataset>"; `predict` maps a preprocessed batch
    to (B, num_classes) joint log-probabilities. `role_ms` sums inference time per role;
    `last_groups` / `last_coarse` tell how the last batch was routed."""

    def __init__(self, bundle: Bundle, options: RunnerOptions | None = None, announce: Announce | None = announce_stderr):
        if bundle.kind != "zoo":
            raise BundleError(f"{bundle.root}: an {bundle.kind} bundle, not a zoo; run it with --bundle")
        self.bundle = bundle
        self.labels = bundle.labels
        opts = options or RunnerOptions()
        choice = choose_backend(bundle, "coarse", opts)
        self.backend = choice.backend
        self.precision = choice.precision
        self.runners: dict[str, Runner] = {}
        try:
            for role in bundle.roles():
                # the same backend for every member, so timings compare and one library is loaded
                member = choice if role == "coarse" else choose_backend(bundle, role, opts, like=choice)
                self.runners[role] = load_runner(bundle, role, opts, choice=member, announce=None)
        except BaseException:
            self.close()
            raise
        if announce is not None:
            announce(f"backend: {choice.backend} {choice.precision} for the zoo's {len(self.runners)} models ({choice.reason})")
        self.role_ms: dict[str, float] = {role: 0.0 for role in self.runners}
        self.last_groups: dict[str, list[int]] = {}
        self.last_coarse: np.ndarray | None = None  # the router's log-probabilities of the last batch
        self._among: list[int] | None = None  # data set indices the router may pick (None: all)
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
        return log_softmax(logits)

    def route_among(self, datasets: list[str] | None) -> None:
        """Let the router pick among these data sets only (None: all of them)."""
        self._among = None if datasets is None else [self.labels.datasets.index(d) for d in datasets]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Coarse model on the whole batch, then each fine model on the images routed to it."""
        self._stages = {}
        coarse = self._run("coarse", batch)
        if self._among is not None:  # the router's softmax over the allowed data sets only
            allowed = np.full(coarse.shape[1], -np.inf, dtype=np.float32)
            allowed[self._among] = 0.0
            coarse = log_softmax(coarse + allowed)
        chosen = coarse.argmax(axis=1)
        out = np.full((len(batch), self.labels.num_classes), -np.inf, dtype=np.float32)
        offsets, sizes = self.labels.offsets, self.labels.sizes
        groups: dict[str, list[int]] = {}
        for d in range(self.labels.num_datasets):
            idx = np.flatnonzero(chosen == d)
            if idx.size == 0:
                continue
            dataset = self.labels.datasets[d]
            fine = self._run(fine_role(dataset), batch[idx])
            out[idx, offsets[d] : offsets[d] + sizes[d]] = fine + coarse[idx, d : d + 1]
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

    def __enter__(self) -> "ZooModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

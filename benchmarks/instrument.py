"""Instruments for the classifiers the bench times: what each model saw, and the zoo's forced routing.

The bench times the real classes that `erudite-edge run` uses (erudite_edge.inference.models.EruditeModel and
ZooModel), end to end through `predict`: softmax, grouping, gathering each
group, scattering back into the joint label space. It only wraps their runners:

* `RecordingRunner` passes every call through and records the batch size each model was given and its
  device compute time (Runner.last_compute_ms, where the backend has one), so the report can show that
  in a mixed batch of B images the coarse model saw B and each fine model its group.
* `RoutingRunner` (the zoo's coarse model) runs the real coarse model on the whole batch, then, while
  routing is forced, replaces its logits by a one-hot choice so the batch splits evenly across the data
  sets: image i of a call goes to data set (i + k) mod N, k counting calls. At batch B every fine model
  gets B/N images (rounded), at batch 1 the single image goes to each fine model in turn. A random-init
  (or any) coarse model would otherwise route synthetic input wherever its biases point, and the zoo
  would look cheaper than it is on a real mixed stream. With forcing off it is a plain recorder, for
  accuracy runs, where the coarse model's own choice is what is being measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from erudite_edge.backends.base import Runner

ROUTED_LOGIT = 30.0  # one-hot logits: softmax gives the chosen data set ~1.0, so the zoo's scores stay sane


class RecordingRunner(Runner):
    """A runner that delegates to `inner` and records, per call, how many images it was given."""

    def __init__(self, inner: Runner):
        super().__init__(inner.precision)
        self.inner = inner
        self.backend = inner.backend
        self.calls: list[int] = []  # batch size of each call since the last reset
        self.compute_ms: list[float] = []  # inner.last_compute_ms of each call where it had one

    @property
    def max_batch(self) -> int | None:
        return self.inner.max_batch

    def _record(self, n: int) -> None:
        self.calls.append(n)
        self.last_compute_ms = self.inner.last_compute_ms
        if self.last_compute_ms is not None:
            self.compute_ms.append(float(self.last_compute_ms))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.infer(batch)
        self._record(len(batch))
        return out

    def infer_chunked(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.infer_chunked(batch)
        self._record(len(batch))
        return out

    def reset(self) -> None:
        self.calls.clear()
        self.compute_ms.clear()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


def even_routes(batch: int, num_datasets: int, start: int = 0) -> np.ndarray:
    """The data set of each image of a forced mixed batch: (i + start) mod N."""
    return (np.arange(batch) + start) % num_datasets


class RoutingRunner(RecordingRunner):
    """The zoo's coarse model with optional forced even routing (see the module docstring)."""

    def __init__(self, inner: Runner, num_datasets: int, forced: bool = True):
        super().__init__(inner)
        self.num_datasets = num_datasets
        self.forced = forced
        self._turn = 0

    def _route(self, logits: np.ndarray) -> np.ndarray:
        if not self.forced:
            return logits
        routes = even_routes(len(logits), self.num_datasets, self._turn)
        self._turn = (self._turn + len(logits)) % self.num_datasets
        out = np.full_like(logits, -ROUTED_LOGIT)
        out[np.arange(len(logits)), routes] = ROUTED_LOGIT
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._route(super().infer(batch))

    def infer_chunked(self, batch: np.ndarray) -> np.ndarray:
        return self._route(super().infer_chunked(batch))


class Instrumented:
    """A classifier (EruditeModel or ZooModel) whose runners record their calls.

    `predict` is the classifier's own; `images_seen()` says, for the calls since `reset()`, how many
    images each model role was given in total; `compute_ms()` the device compute time of the last
    predict summed over the models it ran (None where a model's backend cannot separate it)."""

    def __init__(self, classifier: Any, *, forced_routing: bool = True):
        self.classifier = classifier
        self.recorders: dict[str, RecordingRunner] = {}
        runners = getattr(classifier, "runners", None)
        if isinstance(runners, dict):  # the zoo
            n = classifier.labels.num_datasets
            for role, r in list(runners.items()):
                rec = RoutingRunner(r, n, forced_routing) if role == "coarse" else RecordingRunner(r)
                runners[role] = rec
                self.recorders[role] = rec
        else:  # the erudite model: one runner, role "main"
            rec = RecordingRunner(classifier.runner)
            classifier.runner = rec
            self.recorders["main"] = rec
        self.kind = "zoo" if "coarse" in self.recorders else "erudite"

    @property
    def backend(self) -> str:
        return str(getattr(self.classifier, "backend", "?"))

    def set_forced_routing(self, forced: bool) -> None:
        coarse = self.recorders.get("coarse")
        if isinstance(coarse, RoutingRunner):
            coarse.forced = forced

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.classifier.predict(batch)

    def timed_step(self, batch: np.ndarray) -> "Any":
        """A latency.Step: one predict on `batch`, returning its device compute ms (or None)."""

        def step() -> float | None:
            before = {role: len(r.compute_ms) for role, r in self.recorders.items()}
            calls_before = {role: len(r.calls) for role, r in self.recorders.items()}
            self.classifier.predict(batch)
            total, known = 0.0, True
            for role, r in self.recorders.items():
                if len(r.calls) == calls_before[role]:
                    continue  # this model did not run (no image routed to it)
                new = r.compute_ms[before[role]:]
                if len(new) != len(r.calls) - calls_before[role]:
                    known = False
                total += sum(new)
            return total if known else None

        return step

    def reset(self) -> None:
        for r in self.recorders.values():
            r.reset()

    def images_seen(self) -> dict[str, int]:
        return {role: sum(r.calls) for role, r in self.recorders.items()}

    def calls_seen(self) -> dict[str, list[int]]:
        return {role: list(r.calls) for role, r in self.recorders.items()}

    def close(self) -> None:
        self.classifier.close()

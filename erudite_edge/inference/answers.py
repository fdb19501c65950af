"""From the model's log-probabilities to the answer a user acts on.

- `--datasets a,b`: the joint label space restricted to some data sets: the softmax over those classes,
  computed in log space (the log-probabilities of the kept classes minus their log-sum-exp), so a class whose
  joint probability underflows float32 still gets its right share.
- per-data-set probability mass ("which data set is this?") beside the class.
- `--smooth N` (live sources): the mean of the last N frames' probabilities.
- `--min-confidence P`: below it the answer is `unknown`; the top-k is still reported.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.scores import ClassScore, log_softmax, top_k
from erudite_edge.errors import UsageError

UNKNOWN = "unknown"


@dataclass(frozen=True)
class AnswerOptions:
    """The answer rules of `run` and the API: `topk` classes per image, `min_confidence` (below it the answer
    is "unknown"), `smooth` (mean of the last N frames' probabilities), `datasets` (restrict the joint label
    space to these data sets; None: all)."""

    topk: int = 5
    min_confidence: float = 0.0
    smooth: int = 1
    datasets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise UsageError(f"--topk {self.topk}: give 1 or more")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError(f"--min-confidence {self.min_confidence}: give a probability between 0 and 1")
        if self.smooth < 1:
            raise UsageError(f"--smooth {self.smooth}: give 1 or more frames")

    def replace(self, **changes: object) -> "AnswerOptions":
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Answer:
    predictions: list[ClassScore]  # top-k over the (restricted) joint label space
    label: str  # the top-1 class, or "unknown" below --min-confidence
    dataset: str  # the top-1 class's data set ("" when unknown)
    score: float  # the top-1 probability
    dataset_mass: dict[str, float]  # data set -> summed probability of its classes


def parse_datasets(spec: str | None, labels: LabelSpace) -> list[str] | None:
    """`--datasets a,b` -> those data sets in the bundle's order; None (not given): all. UsageError for a name
    the bundle lacks and for a value naming none ('' or only commas)."""
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UsageError(f"--datasets {spec!r}: names no data set; give some of {', '.join(labels.datasets)} "
                         "(a,b), or leave --datasets out for all")
    unknown = [n for n in names if n not in labels.datasets]
    if unknown:
        raise UsageError(f"--datasets {spec}: {', '.join(unknown)} not in this bundle; "
                         f"its data sets are {', '.join(labels.datasets)}")
    return [d for d in labels.datasets if d in names]


class Answerer:
    """Turns (B, K) log-probabilities (a Model's predict) into Answers, frame after frame (smoothing keeps
    state)."""

    @classmethod
    def from_options(cls, labels: LabelSpace, options: AnswerOptions) -> "Answerer":
        """`options.datasets` checked against the bundle's data sets (UsageError naming them)."""
        chosen = parse_datasets(",".join(options.datasets), labels) if options.datasets is not None else None
        return cls(labels, options.topk, min_confidence=options.min_confidence, smooth=options.smooth, datasets=chosen)

    def __init__(self, labels: LabelSpace, topk: int, *, min_confidence: float = 0.0, smooth: int = 1,
                 datasets: list[str] | None = None):
        if not 0.0 <= min_confidence <= 1.0:
            raise UsageError(f"--min-confidence {min_confidence}: give a probability between 0 and 1")
        if smooth < 1:
            raise UsageError(f"--smooth {smooth}: give 1 or more frames")
        self.labels = labels
        self.min_confidence = float(min_confidence)
        self.smooth = int(smooth)
        self._window: deque[np.ndarray] = deque(maxlen=self.smooth)
        keep = list(range(labels.num_datasets)) if datasets is None else [labels.datasets.index(d) for d in datasets]
        self.restricted = datasets is not None and len(keep) < labels.num_datasets
        self._keep = keep
        self.sub = LabelSpace.build([labels.datasets[d] for d in keep], [labels.classes[d] for d in keep])
        self._columns = np.concatenate([np.arange(labels.offsets[d], labels.offsets[d] + labels.sizes[d]) for d in keep])
        self.topk = max(1, min(int(topk), self.sub.num_classes))
        bounds = np.cumsum([0] + self.sub.sizes)
        self._bounds = bounds

    def fresh(self, smooth: int | None = None) -> "Answerer":
        """The same settings with no smoothing history (one per stream of a multi-stream run); `smooth`, where
        given, replaces the number of frames averaged (1: a stream of separate images)."""
        new = copy.copy(self)
        new.smooth = self.smooth if smooth is None else int(smooth)
        new._window = deque(maxlen=new.smooth)
        return new

    @property
    def datasets(self) -> list[str] | None:
        """The data sets kept (None: all): a zoo's router picks among these (ZooModel.route_among)."""
        return list(self.sub.datasets) if self.restricted else None

    def _restrict(self, log_probs: np.ndarray) -> np.ndarray:
        """Probabilities over the kept classes: the softmax over them, renormalised in log space."""
        lp = np.asarray(log_probs, dtype=np.float32)[:, self._columns]
        if self.restricted:
            lp = log_softmax(lp)
        return np.exp(lp).astype(np.float32, copy=False)

    def __call__(self, log_probs: np.ndarray) -> list[Answer]:
        sub_probs = self._restrict(log_probs)
        if self.smooth > 1:
            rows = []
            for row in sub_probs:
                self._window.append(row)
                rows.append(np.mean(self._window, axis=0))
            sub_probs = np.stack(rows).astype(np.float32)
        out = []
        for row, preds in zip(sub_probs, top_k(sub_probs, self.sub, self.topk)):
            preds = [ClassScore(p.rank, int(self._columns[p.class_id]), p.label, p.dataset, p.score) for p in preds]
            mass = {d: float(row[self._bounds[i]:self._bounds[i + 1]].sum()) for i, d in enumerate(self.sub.datasets)}
            top = preds[0]
            sure = top.score >= self.min_confidence
            out.append(Answer(preds, top.label if sure else UNKNOWN, top.dataset if sure else "", top.score, mass))
        return out

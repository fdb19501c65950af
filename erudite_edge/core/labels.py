"""The joint label space: data sets in order, class names namespaced `<dataset>/<class>`,
and which data set each joint class belongs to. Saved with every checkpoint and bundle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from erudite_edge.errors import BundleError


@dataclass(frozen=True)
class LabelSpace:
    datasets: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]  # per data set, its own (local) class names

    def __post_init__(self) -> None:
        if len(self.datasets) != len(self.classes):
            raise ValueError("one class list per data set is needed")
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"data set names must be unique, got {list(self.datasets)}")
        for name, cls in zip(self.datasets, self.classes):
            if "/" in name or not name:
                raise ValueError(f"data set name {name!r} must be non-empty and hold no '/'")
            if not cls:
                raise ValueError(f"data set {name!r} has no classes")

    @classmethod
    def build(cls, datasets: Sequence[str], classes: Sequence[Sequence[str]]) -> "LabelSpace":
        return cls(tuple(datasets), tuple(tuple(c) for c in classes))

    @property
    def num_datasets(self) -> int:
        return len(self.datasets)

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.classes]

    @property
    def offsets(self) -> list[int]:
        out, acc = [], 0
        for n in self.sizes:
            out.append(acc)
            acc += n
        return out

    @property
    def num_classes(self) -> int:
        return sum(self.sizes)

    @property
    def joint_names(self) -> list[str]:
        return [f"{d}/{c}" for d, cls in zip(self.datasets, self.classes) for c in cls]

    @property
    def dataset_of_class(self) -> list[int]:
        return [i for i, n in enumerate(self.sizes) for _ in range(n)]

    def to_joint(self, dataset: int, local: int) -> int:
        return self.offsets[dataset] + local

    def to_local(self, joint: int) -> tuple[int, int]:
        d = self.dataset_of_class[joint]
        return d, joint - self.offsets[d]

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasets": list(self.datasets),
            "classes": self.joint_names,
            "dataset_of_class": self.dataset_of_class,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSpace":
        try:
            datasets = list(d["datasets"])
            names = list(d["classes"])
            owner = list(d["dataset_of_class"])
        except (KeyError, TypeError) as e:
            raise BundleError(f"label table lacks {e}; expected datasets, classes, dataset_of_class") from e
        if len(names) != len(owner):
            raise BundleError(f"label table: {len(names)} class names but {len(owner)} owners")
        per: list[list[str]] = [[] for _ in datasets]
        for name, o in zip(names, owner):
            if not 0 <= o < len(datasets):
                raise BundleError(f"label table: class {name!r} belongs to data set #{o}, which does not exist")
            prefix = datasets[o] + "/"
            per[o].append(name[len(prefix):] if name.startswith(prefix) else name)
        if owner != sorted(owner):
            raise BundleError("label table: classes must be grouped by data set, in data set order")
        return cls.build(datasets, per)

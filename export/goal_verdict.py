"""The INT8 goal judged with its uncertainty: met, failed, or the test set too small to tell.

The goal (`export int8 --data`, by default): top-1 agreement with FP32 >= 98 % and, on every data set,
INT8's accuracy >= 0.99 of FP32's, both measured on held-out test images. A few hundred images move
either figure by a point or more, so each is judged by a 95 % interval, not its point value:

- agreement: k of n images agree, a binomial proportion; Wilson's score interval (good coverage at
  proportions near 1 and small n, where the Wald interval collapses to a point when every image agrees).
- accuracy ratio: INT8 and FP32 are scored on the same images, so the two accuracies are paired; the
  interval is Newcombe's for a difference of paired proportions (Newcombe 1998, Stat Med 17:2635,
  method 10: Wilson intervals of both accuracies combined with the continuity-corrected phi correlation of the
  2 x 2 table),
  divided by FP32's accuracy: ratio - 1 = (acc_int8 - acc_fp32) / acc_fp32. The goal is relative to the
  FP32 model as measured, so its accuracy is taken as given; its own sampling error moves the ratio only
  to second order near 1. A paired bootstrap was the other candidate: it collapses to [1, 1] whenever no
  image flips (then any 20 images would "prove" the goal), which Newcombe's interval does not.

Verdict: met where the whole interval is at or above the goal, failed where it is wholly below, and
otherwise undecided: the tool writes the model with a warning saying how many test images a verdict
would take at the rate measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 %


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of k successes in n trials."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(both: int, ref_only: int, new_only: int, neither: int, z: float = Z95) -> tuple[float, float, float]:
    """Newcombe's method 10: (difference, lower, upper) of acc_new - acc_ref from the paired 2 x 2 table
    (both right, only the reference right, only the new model right, neither)."""
    n = both + ref_only + new_only + neither
    p_ref, p_new = (both + ref_only) / n, (both + new_only) / n
    l_ref, u_ref = wilson(both + ref_only, n, z)
    l_new, u_new = wilson(both + new_only, n, z)
    margins = (both + ref_only) * (new_only + neither) * (both + new_only) * (ref_only + neither)
    # phi with Newcombe's continuity correction where positive (ad - bc - n/2, floored at 0): uncorrected, a table
    # with no flips and both accuracies at 0.5 gives phi = 1 and a zero-width interval from any number of images
    cross = both * neither - ref_only * new_only
    phi = 0.0 if margins == 0 else (max(cross - n / 2, 0) if cross > 0 else cross) / math.sqrt(margins)
    d = p_new - p_ref
    lower = d - math.sqrt(max(0.0, (p_new - l_new) ** 2 - 2 * phi * (p_new - l_new) * (u_ref - p_ref) + (u_ref - p_ref) ** 2))
    upper = d + math.sqrt(max(0.0, (u_new - p_new) ** 2 - 2 * phi * (u_new - p_new) * (p_ref - l_ref) + (p_ref - l_ref) ** 2))
    return d, max(-1.0, lower), min(1.0, upper)


def verdict_of(lower: float, upper: float, goal: float) -> str:
    return "met" if lower >= goal - 1e-12 else ("failed" if upper < goal - 1e-12 else "undecided")


def images_to_judge(rate: float, goal: float, have: int, interval: Any) -> int | None:
    """The fewest images at which the interval around `rate` (assumed to hold) clears `goal` on its side;
    None where the rate is on the goal (no test set decides)."""
    if abs(rate - goal) < 1e-9:
        return None
    n = max(have, 1)
    while n < 10_000_000:
        lo, hi = interval(n)
        if (rate > goal and lo >= goal) or (rate < goal and hi < goal):
            return n
        n = int(n * 1.1) + 1
    return None


@dataclass
class Check:
    """One quantity judged: its value, 95 % interval, the goal, the verdict, the images it rests on."""

    what: str
    value: float
    lower: float
    upper: float
    goal: float
    images: int
    verdict: str
    images_needed: int | None = None

    def line(self) -> str:
        text = (f"{self.what} {self.value:.4f} on {self.images} test images (95 % interval {self.lower:.4f} to "
                f"{self.upper:.4f}), goal >= {self.goal:.3f}")
        if self.verdict == "undecided":
            need = (f"about {self.images_needed} images at this rate would decide it" if self.images_needed
                    else "the rate sits on the goal: no test set size decides it")
            text += f": too few test images to judge ({need})"
        return text


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        states = {c.verdict for c in self.checks}
        return "failed" if "failed" in states else ("undecided" if "undecided" in states else "met")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "interval": "95 %: Wilson (agreement), Newcombe paired difference / fp32 (ratio)",
                "checks": [asdict(c) for c in self.checks]}


def agreement_check(role: str, agree: int, n: int, goal: float) -> Check:
    lo, hi = wilson(agree, n)
    rate = agree / n if n else 0.0
    c = Check(f"{role}: top-1 agreement with fp32", rate, lo, hi, goal, n, verdict_of(lo, hi, goal))
    if c.verdict == "undecided":
        c.images_needed = images_to_judge(rate, goal, n, lambda m: wilson(round(rate * m), m))
    return c


def ratio_check(name: str, ref_right: np.ndarray, new_right: np.ndarray, goal: float) -> Check:
    """INT8 accuracy / FP32 accuracy on one data set's images (paired: the same images, right or wrong each)."""
    ref_right, new_right = np.asarray(ref_right, bool), np.asarray(new_right, bool)
    table = (int((ref_right & new_right).sum()), int((ref_right & ~new_right).sum()),
             int((~ref_right & new_right).sum()), int((~ref_right & ~new_right).sum()))
    n = len(ref_right)
    p_ref = (table[0] + table[1]) / n
    if p_ref == 0:  # FP32 gets none right: no ratio to judge, INT8 cannot lose accuracy
        return Check(f"{name}: int8/fp32 accuracy", 1.0, 1.0, 1.0, goal, n, "met")
    d, lo, hi = paired_difference(*table)

    def ratio(x: float) -> float:
        return 1 + x / p_ref

    c = Check(f"{name}: int8/fp32 accuracy", ratio(d), ratio(lo), ratio(hi), goal, n, verdict_of(ratio(lo), ratio(hi), goal))
    if c.verdict == "undecided":
        def scaled(m: int) -> tuple[float, float]:
            _, a, b = paired_difference(*(round(x * m / n) for x in table))  # the same table, m images
            return ratio(a), ratio(b)

        c.images_needed = images_to_judge(ratio(d), goal, n, scaled)
    return c


def judge(agreements: Mapping[str, tuple[int, int]], right: Mapping[str, tuple[np.ndarray, np.ndarray]],
          min_agreement: float | None, min_ratio: float | None) -> Verdict:
    """`agreements`: per role (agreeing images, images); `right`: per data set (fp32 right, int8 right) per image."""
    v = Verdict()
    if min_agreement is not None:
        v.checks += [agreement_check(role, k, n, min_agreement) for role, (k, n) in agreements.items()]
    if min_ratio is not None:
        v.checks += [ratio_check(name, ref, new, min_ratio) for name, (ref, new) in right.items()]
    return v

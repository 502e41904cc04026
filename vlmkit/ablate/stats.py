"""Seed statistics and the verdict rule of the ablation reports.

Arms are matched per seed (same data, steps, seed and learning-rate rules; only the ablated choice differs), so an
arm is judged against its reference by the **paired differences** ``d_k = arm_k - reference_k`` over the seeds ``k``
where both runs finished with a finite metric. With ``n`` such seeds, mean ``m``, sample standard deviation ``s``
and standard error ``se = s / sqrt(n)``:

- the toy difference is **clear** when ``n >= 2``, ``|m| > 2 se`` and every ``d_k`` has the sign of ``m``
  (a heuristic, not a significance test: with 3 seeds it rejects most noise, not all);
- expected **better** (or **worse**): *agrees* when the difference is clear and in the paper's direction,
  *disagrees* when it is clear and opposite, else *inconclusive* (within the seed spread);
- expected **similar** (the paper finds no meaningful difference) with a tolerance ``t`` in metric units:
  *agrees* when ``|m| + 2 se <= t`` (the whole ``m ± 2 se`` band lies within ``±t``), *disagrees* when the
  difference is clear and ``|m| - 2 se > t``, else *inconclusive*.

"Better" follows the metric's ``higher_is_better``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["agrees", "disagrees", "inconclusive"]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (``nan`` for one value) and count of finite values."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        """``"0.512 ± 0.020 (3)"``, ``"0.512 (1)"`` or ``"–"``."""
        if self.n == 0:
            return "–"
        if self.n == 1 or math.isnan(self.std):
            return f"{self.mean:.{digits}f} (1)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


def summarize(values: Sequence[float]) -> Summary:
    """Summary of the finite ``values`` (NaN and infinities are left out)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0)
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else float("nan")
    return Summary(mean, std, n)


@dataclass(frozen=True)
class Paired:
    """Paired differences ``arm - reference`` per seed, and their summary.

    Attributes:
        differences: ``{seed: d}`` over the seeds where both are finite.
        summary: Mean, std and count of the differences.
    """

    differences: dict[int, float]
    summary: Summary

    @property
    def standard_error(self) -> float:
        """``std / sqrt(n)`` (``nan`` below two seeds)."""
        n = self.summary.n
        return self.summary.std / math.sqrt(n) if n > 1 else float("nan")

    @property
    def clear(self) -> bool:
        """``n >= 2``, ``|mean| > 2 se`` and every difference has the sign of the mean."""
        n, mean = self.summary.n, self.summary.mean
        if n < 2 or mean == 0:
            return False
        same_sign = all(d * mean > 0 for d in self.differences.values())
        return same_sign and abs(mean) > 2 * self.standard_error


def paired(arm: Mapping[int, float], reference: Mapping[int, float]) -> Paired:
    """Per-seed differences ``arm[k] - reference[k]`` over the seeds where both values are finite."""
    differences = {
        seed: arm[seed] - reference[seed]
        for seed in sorted(set(arm) & set(reference))
        if _finite(arm[seed]) and _finite(reference[seed])
    }
    return Paired(differences, summarize(list(differences.values())))


def verdict(
    difference: Paired, expect: Literal["better", "worse", "similar"], higher_is_better: bool, tolerance: float = 0.0
) -> Verdict:
    """Judge a paired difference against the paper's direction (the rule of the module docstring).

    Args:
        difference: ``arm - reference`` per seed.
        expect: The paper's direction for ``arm`` against ``reference``.
        higher_is_better: Whether a higher metric is better.
        tolerance: For ``similar``: the largest difference (metric units) that counts as no difference.

    Returns:
        ``agrees``, ``disagrees`` or ``inconclusive``.
    """
    summary = difference.summary
    if summary.n < 2:
        return "inconclusive"
    if expect == "similar":
        band = 2 * difference.standard_error
        if abs(summary.mean) + band <= tolerance:
            return "agrees"
        if difference.clear and abs(summary.mean) - band > tolerance:
            return "disagrees"
        return "inconclusive"
    if not difference.clear:
        return "inconclusive"
    better = (summary.mean > 0) == higher_is_better
    return "agrees" if better == (expect == "better") else "disagrees"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)

"""Intervals and verdicts: Student-t over seeds, binomial for a single seed, paired effects."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["Interval", "mean_interval", "binomial_interval", "paired_effect", "verdict",
           "published_verdict", "effect_se", "margin_in_se"]

LEVEL = 0.95


@dataclass
class Interval:
    mean: float
    std: float
    n: int
    low: float
    high: float
    method: str  # "t over seeds", "binomial (one seed)", or "none"

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean, sample standard deviation and a Student-t interval over seeds (n >= 2)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan, "none")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan, math.nan, "none")
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half, "t over seeds")


def binomial_interval(acc: float, n_images: int, level: float = LEVEL) -> Interval:
    """Wilson interval of an accuracy measured on ``n_images`` images (one run)."""
    k = int(round(acc * n_images))
    ci = stats.binomtest(k, n_images).proportion_ci(confidence_level=level, method="wilson")
    se = math.sqrt(acc * (1 - acc) / n_images)
    return Interval(acc, se, 1, float(ci.low), float(ci.high), "binomial (one seed)")


def accuracy_interval(values: Sequence[float], n_images: int, level: float = LEVEL) -> Interval:
    """t over seeds when there are several, else the binomial interval of the one run."""
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if len(clean) == 1 and n_images:
        return binomial_interval(clean[0], n_images, level)
    return mean_interval(clean, level)


def paired_effect(a: Sequence[float], b: Sequence[float], n_images: int,
                  level: float = LEVEL) -> Interval:
    """Effect a - b, paired by seed: t interval of the per-seed differences (n >= 2).

    With one seed only the test-set sampling error is left: the normal interval of a
    difference of two binomial proportions (it ignores the correlation of two models on
    the same images, so it is conservative).
    """
    pairs = [(x, y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if len(pairs) >= 2:
        return mean_interval([x - y for x, y in pairs], level)
    if len(pairs) == 1 and n_images:
        x, y = pairs[0]
        se = math.sqrt((x * (1 - x) + y * (1 - y)) / n_images)
        z = float(stats.norm.ppf(0.5 + level / 2))
        d = x - y
        return Interval(d, se, 1, d - z * se, d + z * se, "binomial (one seed)")
    return Interval(math.nan, math.nan, 0, math.nan, math.nan, "none")


def verdict(effect: Interval) -> str:
    """'better' / 'worse' when the interval excludes zero, else no detectable difference."""
    if effect.n == 0 or not math.isfinite(effect.low):
        return "not measured"
    if effect.low > 0:
        return "better"
    if effect.high < 0:
        return "worse"
    return f"no detectable difference at n={effect.n}"


def published_verdict(published: float, interval: Interval) -> str:
    """'reproduced' when the published value lies in the interval, else higher / lower."""
    if not math.isfinite(interval.low):
        return "not measured"
    if interval.low <= published <= interval.high:
        return "reproduced"
    return "higher" if interval.low > published else "lower"


def effect_se(sd: float, n: int, method: str) -> float:
    """Standard error of an effect of effects.csv from its ``sd``, ``n_seeds`` and
    ``interval`` columns.

    A t interval over seeds stores the sd of the per-seed differences, so its standard
    error is sd / sqrt(n); a one-seed binomial interval stores the standard error itself
    (``paired_effect``). Anything else has none (nan).
    """
    if method == "t over seeds" and n >= 2:
        return sd / math.sqrt(n)
    if method.startswith("binomial"):
        return sd
    return math.nan


def margin_in_se(difference: float, low: float, high: float, se: float) -> float:
    """How far the interval's end nearer to zero lies from zero, in standard errors.

    Positive: the interval excludes zero by that many standard errors; negative: zero lies
    inside it, that many standard errors from the end. It equals |difference| / se minus
    the interval's critical value (|t| - t_crit for a t interval), so it says how close a
    verdict came to flipping, in the unit the interval is built from. nan without a
    standard error; +/-inf when all seeds agree exactly (se = 0).
    """
    try:
        difference, low, high, se = (float(x) for x in (difference, low, high, se))
    except (TypeError, ValueError):
        return math.nan
    if not all(math.isfinite(x) for x in (difference, low, high, se)) or se < 0:
        return math.nan
    # The end on zero's side: the lower end of a positive effect, the upper of a negative.
    near = low if difference > 0 else -high
    if se == 0:
        return math.copysign(math.inf, near) if near != 0 else math.nan
    return near / se

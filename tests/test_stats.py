"""Interval arithmetic against scipy.stats and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats

from cifarlab.stats import (
    Interval,
    accuracy_interval,
    binomial_interval,
    mean_interval,
    paired_effect,
    published_verdict,
    verdict,
)


def test_t_interval_matches_scipy():
    x = [0.61, 0.58, 0.64, 0.60]
    iv = mean_interval(x)
    lo, hi = stats.t.interval(0.95, df=3, loc=np.mean(x), scale=stats.sem(x))
    assert iv.low == pytest.approx(lo) and iv.high == pytest.approx(hi)
    assert iv.std == pytest.approx(np.std(x, ddof=1)) and iv.n == 4


def test_t_interval_hand_computed():
    # mean 2, sd 1, n 3: half-width = t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.high - iv.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_binomial_interval_is_wilson():
    iv = binomial_interval(0.56, 10000)
    ci = stats.binomtest(5600, 10000).proportion_ci(method="wilson")
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high))
    assert iv.std == pytest.approx(math.sqrt(0.56 * 0.44 / 10000))
    assert accuracy_interval([0.56], 10000).method == "binomial (one seed)"
    assert accuracy_interval([0.5, 0.6], 10000).method == "t over seeds"


def test_paired_effect_uses_per_seed_differences():
    a, b = [0.60, 0.62, 0.59], [0.57, 0.60, 0.58]
    iv = paired_effect(a, b, 10000)
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert iv.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high))


def test_single_seed_effect_is_binomial_difference():
    iv = paired_effect([0.60], [0.55], 10000)
    se = math.sqrt((0.6 * 0.4 + 0.55 * 0.45) / 10000)
    assert iv.std == pytest.approx(se)
    assert iv.low == pytest.approx(0.05 - 1.959964 * se, rel=1e-5)


def test_verdicts():
    assert verdict(Interval(0.02, 0, 3, 0.01, 0.03, "t")) == "better"
    assert verdict(Interval(-0.02, 0, 3, -0.03, -0.01, "t")) == "worse"
    assert verdict(Interval(0.01, 0, 3, -0.01, 0.03, "t")) == "no detectable difference at n=3"
    assert published_verdict(0.56, Interval(0.55, 0, 1, 0.54, 0.57, "b")) == "reproduced"
    assert published_verdict(0.56, Interval(0.60, 0, 1, 0.59, 0.61, "b")) == "higher"
    assert published_verdict(0.56, Interval(0.50, 0, 1, 0.49, 0.51, "b")) == "lower"
    assert mean_interval([0.5]).method == "none"

"""Bootstrap intervals and paired differences (vidquant.eval.stats) on known distributions."""

import numpy as np
import pytest

from vidquant.eval.stats import Interval, marker, mean_ci, paired_difference


def test_interval_covers_true_mean_at_nominal_rate():
    """Over many samples of 64 normal values the 95 % interval holds the true mean ~95 % of the time, and its
    width is about 2·1.96·σ/√n."""
    rng = np.random.default_rng(1)
    hits, widths = 0, []
    for _ in range(200):
        iv = mean_ci(rng.normal(3.0, 2.0, 64), n_resamples=500)
        hits += iv.low <= 3.0 <= iv.high
        widths.append(iv.high - iv.low)
    assert 0.88 <= hits / 200 <= 0.99
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / 8, rel=0.12)


def test_deterministic_and_mean_inside():
    x = np.random.default_rng(2).exponential(1.0, 40)
    a, b = mean_ci(x), mean_ci(x)
    assert a == b
    assert a.low < a.mean < a.high and a.n == 40
    assert a.mean == pytest.approx(x.mean())


def test_nonfinite_left_out_and_degenerate_cases():
    assert mean_ci([1.0, np.inf, 3.0, np.nan]).n == 2
    assert mean_ci([2.0, 2.0, 2.0]) == Interval(2.0, 2.0, 2.0, 3)
    assert mean_ci([5.0]) == Interval(5.0, 5.0, 5.0, 1)
    assert mean_ci([np.inf]).n == 0 and np.isnan(mean_ci([]).mean)


def test_pairing_removes_shared_spread():
    """Two methods that differ by 0.1 on every clip, on clips whose own spread is 10: the unpaired intervals
    overlap widely, the paired difference is 0.1 with a tight interval that excludes 0."""
    base = np.random.default_rng(3).normal(0, 10, 64)
    a, b = base + 0.1 + np.random.default_rng(4).normal(0, 0.01, 64), base
    ia, ib = mean_ci(a), mean_ci(b)
    assert ia.low < ib.high and ib.low < ia.high
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.1, abs=0.01) and d.excludes_zero()
    assert marker(d) == "*" and marker(d, floor=0.5) == "~"
    with pytest.raises(ValueError, match="length"):
        paired_difference(a, b[:3])


def test_no_difference_is_not_significant():
    rng = np.random.default_rng(5)
    d = paired_difference(rng.normal(0, 1, 64), rng.normal(0, 1, 64))
    assert d.low < 0 < d.high and marker(d) == ""

"""Error bars for per-clip metrics: a mean with its 95 % bootstrap interval, and paired differences.

A video metric is measured once per (prompt, seed) clip. Generation is chaotic (a one-ulp change moves the
whole clip), so one clip's number is a draw, and a table cell is the mean over the eval clips with the
interval that the draw implies:

- :func:`mean_ci`: the mean and its percentile-bootstrap interval (``scipy.stats.bootstrap``, BCa), resampling
  clips with a fixed seed, so the same rows always give the same bytes;
- :func:`paired_difference`: ``mean(a - b)`` over the clips both methods share (same prompt, same seed) with its
  interval; pairing removes the prompt-to-prompt spread that both methods see alike;
- :func:`marker`: ``"*"`` when a difference's interval excludes 0, ``"~"`` when it does too but the difference
  is smaller than the noise floor (the spread a harmless perturbation of the float model causes), ``""`` when
  the interval covers 0.

Non-finite values (PSNR of a bit-identical clip is ``inf``; a clip without a detectable object has no
trajectory) are left out; ``n`` says how many values an interval rests on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Interval", "mean_ci", "paired_difference", "marker", "CONFIDENCE", "N_RESAMPLES", "SEED"]

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its bootstrap interval ``[low, high]`` (NaN when ``n`` is 0)."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def _finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def mean_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """Mean of the finite ``values`` with its bootstrap interval (BCa; deterministic for a given ``seed``).

    One value gives a zero-width interval at that value; identical values too (there is nothing to resample).
    """
    x = _finite(values)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return Interval(mean, mean, mean, int(x.size))
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="BCa",
                          rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa degenerates on near-constant data: use percentiles
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                              method="percentile", rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(mean, min(low, mean), max(high, mean), int(x.size))


def paired_difference(a, b, **kwargs) -> Interval:
    """``mean(a - b)`` with its bootstrap interval; ``a[i]`` and ``b[i]`` are the same clip (prompt, seed) under
    two methods. Pairs where either value is not finite are left out."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} vs {b.size}")
    return mean_ci(a - b, **kwargs)


def marker(diff: Interval, floor: float | None = None) -> str:
    """``"*"``: the interval excludes 0 and ``|mean|`` reaches the noise ``floor`` (a real difference);
    ``"~"``: the interval excludes 0 but ``|mean|`` is under the floor; ``""``: the interval covers 0."""
    if not diff.excludes_zero():
        return ""
    if floor is not None and np.isfinite(floor) and abs(diff.mean) < floor:
        return "~"
    return "*"

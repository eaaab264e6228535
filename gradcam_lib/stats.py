"""Intervals and paired tests shared by the chapters.

Headline numbers carry an interval over *independent units*: images, or -- where images share a
source (the composite benchmark pastes a handful of object crops) -- the clusters they share, by
resampling whole clusters (:func:`cluster_bootstrap_ci`). Comparisons on the same units are paired:
McNemar's exact test for hit / miss outcomes (:func:`mcnemar`), a paired bootstrap for differences
of means (:func:`paired_difference`). Every resampling is seeded with its own generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "MIN_UNITS",
    "McNemar",
    "PairedDifference",
    "bootstrap_ci",
    "cluster_bootstrap_ci",
    "effective_units",
    "mcnemar",
    "mean_ci",
    "mean_interval",
    "paired_difference",
    "share_interval",
    "wilson_bounds",
    "wilson_ci",
]


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64)
    return data[~np.isnan(data)]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean (scipy's BCa), NaN values left out, seeded.
    Fewer than two values: ``(nan, nan)``; all values equal: that value twice."""
    data = _finite(values)
    if len(data) < 2:
        return float("nan"), float("nan")
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                             method="BCa", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over non-NaN values and its :func:`bootstrap_ci`."""
    data = _finite(values)
    mean = float(data.mean()) if len(data) else float("nan")
    return (mean, *bootstrap_ci(data, confidence, seed=seed))


def cluster_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the mean of ``values`` when the units are not independent but come
    in ``clusters`` (e.g. composite images that share a source crop): whole clusters are resampled
    with replacement (Davison & Hinkley 1997, Sec. 3.8), and the percentile interval is returned.
    NaN values are left out. One cluster only: the interval is ``(nan, nan)``."""
    data = np.asarray(values, dtype=np.float64)
    groups = np.asarray(clusters, dtype=object)
    if data.shape != groups.shape:
        raise ValueError(f"values and clusters must have the same length, got {data.shape} and {groups.shape}")
    keep = ~np.isnan(data)
    data, groups = data[keep], groups[keep]
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    _, codes = np.unique(groups.astype(str), return_inverse=True)
    sums = np.bincount(codes, weights=data)
    counts = np.bincount(codes).astype(np.float64)
    mean = float(data.mean())
    if len(sums) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_resamples, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def wilson_bounds(share: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval (Wilson 1927) of a share observed on ``n`` units; ``n`` may be an
    effective (non-integer) sample size, e.g. Kish's for clustered units. ``n <= 0``: NaNs."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def wilson_ci(outcomes: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(share, low, high)`` of a hit rate over independent units (NaN left out): Wilson's score
    interval (better coverage than the normal interval at small n or shares near 0 / 1). Outcomes
    are hits (bool) or per-unit shares in [0, 1] (e.g. an image's score averaged over its classes,
    whose variance is at most p (1 - p): the interval is then conservative)."""
    data = _finite(outcomes)
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    share = float(data.mean())
    return (share, *wilson_bounds(share, len(data), confidence))


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two paired hit / miss outcomes: ``only_a`` units where only A hit,
    ``only_b`` where only B hit; ``difference`` = share(A) - share(B); ``p_value`` two-sided."""

    only_a: int
    only_b: int
    n: int
    difference: float
    p_value: float

    def __str__(self) -> str:
        return (f"{100 * self.difference:+.1f} points, {self.only_a} vs {self.only_b} discordant of {self.n}, "
                f"McNemar exact p = {self.p_value:.3g}")


def mcnemar(hits_a: Sequence[bool] | np.ndarray, hits_b: Sequence[bool] | np.ndarray) -> McNemar:
    """McNemar's exact (binomial) test (McNemar 1947): under H0 each discordant pair is A-only with
    probability 1/2. The outcomes must belong to the same units, in the same order."""
    a = np.asarray(hits_a, dtype=bool)
    b = np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same length, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    difference = float(a.mean() - b.mean()) if len(a) else float("nan")
    return McNemar(only_a, only_b, len(a), difference, p_value)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of paired differences ``a - b`` with its bootstrap interval and the units behind it."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely on one side of 0 (a difference is shown)."""
        return bool(self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        return f"{self.mean:+.3g} [{self.low:+.3g}, {self.high:+.3g}] (n = {self.n})"


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired bootstrap of ``mean(a - b)`` over the units (pairs with a NaN are left out); with
    ``clusters``, whole clusters are resampled (:func:`cluster_bootstrap_ci`)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values must have the same length, got {x.shape} and {y.shape}")
    diff = x - y
    if clusters is None:
        mean, low, high = mean_ci(diff, confidence, seed)
    else:
        mean, low, high = cluster_bootstrap_ci(diff, clusters, confidence, seed=seed)
    return PairedDifference(mean, low, high, int((~np.isnan(diff)).sum()))


MIN_UNITS = 5
"""Fewer independent units than this: :func:`mean_interval` gives no bootstrap interval (a handful of
resamples)."""


def effective_units(clusters: Sequence[object] | np.ndarray) -> float:
    """Kish's effective sample size ``(sum m_c)^2 / sum m_c^2`` of units in clusters of sizes
    ``m_c`` when the units of a cluster are perfectly correlated (Kish 1965, *Survey Sampling*,
    Sec. 11.7): the number of clusters when they are equally large, the number of units when each
    is its own cluster."""
    _, sizes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_counts=True)
    return float(sizes.sum() ** 2 / (sizes**2).sum()) if len(sizes) else 0.0


def share_interval(
    hits: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray | None = None, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(share, low, high)`` of a hit rate over images (NaN entries left out): Wilson's score
    interval on the images (``clusters`` None) or on Kish's effective sample size
    (:func:`effective_units`). The latter is conservative, and never collapses to a point the way
    a bootstrap over a handful of clusters does when every image has the same outcome."""
    data = np.asarray(hits, dtype=np.float64)
    keep = ~np.isnan(data)
    data = data[keep]
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    share = float(data.mean())
    n = len(data) if clusters is None else effective_units(np.asarray(clusters, dtype=object)[keep])
    return (share, *wilson_bounds(share, n, confidence))


def mean_interval(
    values: Sequence[float] | np.ndarray, clusters: Sequence[object] | None = None, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)``, NaN left out: BCa bootstrap over the images
    (:func:`mean_ci`) or, with clusters, the percentile bootstrap over whole
    clusters (:func:`cluster_bootstrap_ci`). Fewer than :data:`MIN_UNITS` units
    (images or clusters): the mean and no interval."""
    data = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(data)
    units = keep.sum() if clusters is None else len(set(np.asarray(clusters, dtype=object)[keep].astype(str)))
    if units < MIN_UNITS:
        return (float(data[keep].mean()) if keep.any() else float("nan")), float("nan"), float("nan")
    if clusters is None:
        return mean_ci(data, confidence)
    return cluster_bootstrap_ci(data, clusters, confidence)

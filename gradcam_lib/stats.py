"""Confidence intervals shared by the chapters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_ci", "mean_ci"]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean (scipy's BCa), NaN values left out, seeded.
    Fewer than two values: ``(nan, nan)``; all values equal: that value twice."""
    data = np.asarray(values, dtype=np.float64)
    data = data[~np.isnan(data)]
    if len(data) < 2:
        return float("nan"), float("nan")
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                             method="BCa", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over non-NaN values and its :func:`bootstrap_ci`."""
    data = np.asarray(values, dtype=np.float64)
    data = data[~np.isnan(data)]
    mean = float(data.mean()) if len(data) else float("nan")
    return (mean, *bootstrap_ci(data, confidence, seed=seed))

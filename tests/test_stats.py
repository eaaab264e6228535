"""Bootstrap intervals against the t interval and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gradcam_lib.stats import bootstrap_ci, mean_ci


def test_bootstrap_interval_is_close_to_the_t_interval():
    values = np.random.default_rng(2).normal(0.3, 0.1, size=400)
    low, high = bootstrap_ci(values, seed=0)
    t_low, t_high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert low < values.mean() < high
    assert low == pytest.approx(t_low, abs=0.002) and high == pytest.approx(t_high, abs=0.002)
    assert bootstrap_ci(values, seed=0) == (low, high)  # seeded
    assert np.isnan(bootstrap_ci([1.0, np.nan])[0])


def test_mean_ci():
    mean, low, high = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and 1.0 <= low < mean < high <= 4.0
    assert mean_ci(np.array([2.0, 2.0])) == (2.0, 2.0, 2.0)
    assert all(np.isnan(v) for v in mean_ci(np.array([np.nan])))

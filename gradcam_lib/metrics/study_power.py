"""Raters as the units of a user study (chapter 4): intervals of published aggregates without rater
ids, and power.

Model (the same for the intervals of published aggregates and for the power analysis): ``raters``
independent raters, each giving ``m`` answers per method (one per image). Per answer, method j has
sd ``s_j``. Two correlations are unknown without rater ids:

* ``icc``: between two answers of one rater to different images under one method (Kish's
  intra-cluster correlation, taken equal for both methods);
* ``rho``: across raters, between a rater's mean scores under the two methods.

A rater's mean under method j then has variance ``s_j^2 deff / m`` with ``deff = 1 + (m - 1) icc``,
and the difference of the two methods' means over all raters has variance
``(s_1^2 + s_2^2 - 2 rho s_1 s_2) / n_eff`` with ``n_eff = raters * m / deff`` (answers per method).
icc = 0: the answers are as good as independent (n_eff = raters * m); icc = 1: every rater counts
once (n_eff = raters), the most a rater's m answers can be worth less than m independent ones.

References: Kish (1965) for the design effect; the noncentral t for the paired t-test's power; a
Gaussian copula for the simulated Wilcoxon power (:func:`simulate_wilcoxon_power`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from gradcam_lib.metrics.agreement import SCALE
from gradcam_lib.stats import wilson_ci

__all__ = ["design_effect", "difference_sensitivity", "effective_units", "largest_icc_excluding_zero",
           "paired_difference_sd", "paired_t_power", "pooled_variance_factor", "power_curve", "rater_interval",
           "raters_needed", "simulate_wilcoxon_power", "tilt_answer_distribution"]


def design_effect(answers_per_rater: int, icc: float) -> float:
    """Kish's (1965) design effect ``1 + (m - 1) icc``: the factor by which ``m`` answers per rater,
    correlated ``icc`` within a rater, inflate the variance of a mean over independent answers."""
    if answers_per_rater < 1 or not 0 <= icc <= 1:
        raise ValueError("need at least one answer per rater and 0 <= icc <= 1")
    return 1.0 + (answers_per_rater - 1) * icc


def effective_units(n_answers: int, answers_per_rater: int, icc: float) -> float:
    """The number of independent answers that ``n_answers`` clustered answers are worth:
    ``n_answers / design_effect(answers_per_rater, icc)``."""
    return n_answers / design_effect(answers_per_rater, icc)


def paired_difference_sd(sd_first: float, sd_second: float, rho: float, icc: float = 1.0, images: int = 1) -> float:
    """sd of one rater's difference between their mean scores under the two methods.

    ``sqrt((s1^2 + s2^2 - 2 rho s1 s2) deff / images)`` with ``deff = 1 + (images - 1) icc``
    (see the model above: ``rho`` correlates a rater's two mean scores, ``icc`` a rater's answers
    to different images under one method). With ``icc = 1`` or one image a rater's mean score is as
    spread as one answer; ``rho = 0`` is also the case of two independent groups of raters.
    """
    if not -1 <= rho <= 1:
        raise ValueError("need -1 <= rho <= 1")
    variance = (sd_first**2 + sd_second**2 - 2 * rho * sd_first * sd_second) * design_effect(images, icc) / images
    return float(np.sqrt(max(variance, 0.0)))


def pooled_variance_factor(raters: int, answers_per_rater: int, icc: float) -> float:
    """``(N - 1) / (N - deff)``, ``N = raters m``: the sample variance (ddof=1) of ``N`` answers
    pooled over clustered raters has expectation ``sigma^2 (N - deff) / (N - 1)`` (the pooled mean
    absorbs part of the rater effects), so ``s^2`` times this factor is unbiased for ``sigma^2``."""
    n = raters * answers_per_rater
    return (n - 1) / (n - design_effect(answers_per_rater, icc))


def rater_interval(
    estimate: float, sd_first: float, raters: int, answers_per_rater: int, icc: float,
    sd_second: float = 0.0, rho: float = 0.0, level: float = 0.95, pooled_sds: bool = False,
) -> dict[str, float]:
    """Interval of a mean score (``sd_second = 0``) or of a difference of two methods' mean scores
    over ``raters`` independent raters, from per-answer sds and assumed ``icc`` and ``rho``:

    ``se^2 = (s1^2 + s2^2 - 2 rho s1 s2) / n_eff`` with ``n_eff = raters m / deff`` (the model above;
    ``se = paired_difference_sd(...) / sqrt(raters)``), and ``estimate +- t se`` with Student's t
    on ``raters - 1`` degrees of freedom: the paired t-interval across raters.

    Args:
        pooled_sds: the sds are the sample sds of all answers pooled over raters (as computed from
            published counts); ``se^2`` is then multiplied by :func:`pooled_variance_factor`.

    Returns:
        ``estimate, se, low, high, deff, n_eff`` and ``excludes_zero`` (1.0 or 0.0).
    """
    if raters < 2:
        raise ValueError("need at least 2 raters")
    deff = design_effect(answers_per_rater, icc)
    n_eff = raters * answers_per_rater / deff
    se = paired_difference_sd(sd_first, sd_second, rho, icc, answers_per_rater) / np.sqrt(raters)
    if pooled_sds:
        se *= np.sqrt(pooled_variance_factor(raters, answers_per_rater, icc))
    half = stats.t.ppf((1 + level) / 2, raters - 1) * se
    low, high = estimate - half, estimate + half
    return {"estimate": float(estimate), "se": float(se), "low": float(low), "high": float(high), "deff": deff,
            "n_eff": float(n_eff), "excludes_zero": float(low > 0 or high < 0)}


def difference_sensitivity(
    mean_first: float, mean_second: float, sd_first: float, sd_second: float, raters: int, answers_per_rater: int,
    rhos: Sequence[float], iccs: Sequence[float], level: float = 0.95, pooled_sds: bool = False,
) -> pd.DataFrame:
    """:func:`rater_interval` of ``mean_first - mean_second`` over a grid of the two unknown
    correlations (long table: ``rho, icc`` and the interval's columns)."""
    rows = [
        {
            "rho": rho,
            "icc": icc,
            **rater_interval(
                mean_first - mean_second, sd_first, raters, answers_per_rater, icc, sd_second, rho, level, pooled_sds
            ),
        }
        for rho in rhos
        for icc in iccs
    ]
    return pd.DataFrame(rows).astype({"excludes_zero": bool})


def largest_icc_excluding_zero(
    estimate: float, sd_first: float, raters: int, answers_per_rater: int,
    sd_second: float = 0.0, rho: float = 0.0, level: float = 0.95, pooled_sds: bool = False,
) -> float:
    """The ICC below which :func:`rater_interval` excludes 0, in closed form (its t quantile does
    not depend on the ICC). With ``v = s1^2 + s2^2 - 2 rho s1 s2`` and ``N = raters m``, the interval
    excludes 0 while ``deff < N estimate^2 / (t^2 v)`` (or, with ``pooled_sds``, while
    ``deff < c N / (1 + c)``, ``c = N estimate^2 / (t^2 v (N - 1))``); ``icc* = (deff* - 1) / (m - 1)``.
    A value below 0: no ICC >= 0 shows a difference from 0; 1 or more: every ICC does."""
    if answers_per_rater < 2:
        raise ValueError("the ICC matters only with at least 2 answers per rater")
    variance = sd_first**2 + sd_second**2 - 2 * rho * sd_first * sd_second
    if variance <= 0:
        return float("inf") if estimate != 0 else float("-inf")
    t = stats.t.ppf((1 + level) / 2, raters - 1)
    n = raters * answers_per_rater
    deff = n * estimate**2 / (t**2 * variance)
    if pooled_sds:
        c = deff / (n - 1)
        deff = c * n / (1 + c)
    return float((deff - 1) / (answers_per_rater - 1))


def paired_t_power(raters: int | np.ndarray, delta: float, sd_diff: float, alpha: float = 0.05) -> np.ndarray:
    """Power of the two-sided paired t-test with ``raters`` pairs to detect a mean difference
    ``delta`` when the differences have sd ``sd_diff`` (noncentral t)."""
    n = np.asarray(raters, dtype=float)
    if np.any(n < 2) or sd_diff <= 0:
        raise ValueError("need at least 2 raters and a positive sd")
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = delta * np.sqrt(n) / sd_diff
    power = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    # scipy's noncentral t returns NaN far in the tail (large n and effect): the normal limit there
    normal = stats.norm.sf(critical - noncentrality) + stats.norm.cdf(-critical - noncentrality)
    return np.where(np.isnan(power), normal, power)


def raters_needed(delta: float, sd_diff: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Smallest number of raters whose paired t-test reaches ``power`` (start from the normal
    approximation n = ((z_{1-alpha/2} + z_{power}) sd / delta)^2, then step up)."""
    if delta == 0:
        raise ValueError("no number of raters detects a zero difference")
    guess = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd_diff / abs(delta)) ** 2
    n = max(2, int(np.floor(guess)) - 2)
    while paired_t_power(n, delta, sd_diff, alpha) < power:
        n += 1
    return n


def power_curve(
    raters: Sequence[int], delta: float, sd_first: float, sd_second: float, rhos: Sequence[float],
    iccs: Sequence[float] = (1.0,), images: int = 1, alpha: float = 0.05,
) -> pd.DataFrame:
    """:func:`paired_t_power` over a grid of rater counts, correlations and ICCs (long table)."""
    rows = []
    for icc in iccs:
        for rho in rhos:
            sd = paired_difference_sd(sd_first, sd_second, rho, icc, images)
            power = paired_t_power(np.asarray(raters), delta, sd, alpha)
            rows += [
                {"icc": icc, "rho": rho, "sd_diff": sd, "raters": n, "power": float(p)}
                for n, p in zip(raters, power, strict=True)
            ]
    return pd.DataFrame(rows)


def tilt_answer_distribution(base: Sequence[float], mean: float, sd: float) -> np.ndarray:
    """The distribution over -2..2 closest to ``base`` (least Kullback-Leibler divergence) with the
    given mean and sd: ``p_k ∝ base_k exp(a k + b k^2)``. Used to give KTH's answer shape the
    paper's means for the simulated raters of the power analysis."""
    shape = np.asarray(base, dtype=float)
    shape = shape / shape.sum()
    k = np.asarray(SCALE, dtype=float)

    def tilted(params: np.ndarray) -> np.ndarray:
        logits = np.log(shape) + params[0] * k + params[1] * k**2
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def moments(params: np.ndarray) -> np.ndarray:
        p = tilted(params)
        return np.array([p @ k - mean, p @ k**2 - (sd**2 + mean**2)])

    solution = optimize.root(moments, x0=np.zeros(2), method="hybr")
    if np.abs(moments(solution.x)).max() > 1e-8:
        raise ValueError(f"no distribution on -2..2 near the base has mean {mean} and sd {sd}")
    return tilted(solution.x)


def simulate_wilcoxon_power(
    probs_first: Sequence[float], probs_second: Sequence[float], raters: int, rho: float,
    n_sims: int = 2000, alpha: float = 0.05, seed: int = 0,
) -> dict[str, float]:
    """SIMULATED raters: the share of simulated studies in which the paired Wilcoxon test
    (:func:`paired_test`'s) finds the two methods different at ``alpha``.

    Each simulated rater gives one 5-point answer per method, drawn from ``probs_first`` /
    ``probs_second`` (over -2..2) and linked by a Gaussian copula with latent correlation ``rho``.
    A study whose differences are all zero counts as not significant.

    Returns:
        ``power`` with ``power_low, power_high`` (Wilson 95 % interval over the ``n_sims``
        independent simulated studies) and ``answer_correlation``: the Pearson correlation of the
        simulated answers of the two methods (pooled over all studies), smaller than ``rho``
        because the answers are coarse, to compare with :func:`paired_t_power` on the same scale.
    """
    rng = np.random.default_rng(seed)
    latent_first = rng.standard_normal((n_sims, raters))
    latent_second = rho * latent_first + np.sqrt(1 - rho**2) * rng.standard_normal((n_sims, raters))
    scale = np.asarray(SCALE)

    def answers(latent: np.ndarray, probs: Sequence[float]) -> np.ndarray:
        cdf = np.cumsum(probs) / np.sum(probs)
        return scale[np.minimum(np.searchsorted(cdf, stats.norm.cdf(latent)), scale.size - 1)]

    first, second = answers(latent_first, probs_first), answers(latent_second, probs_second)
    differences = first - second
    testable = np.count_nonzero(differences, axis=1) > 0
    p_values = np.ones(n_sims)
    if testable.any():
        p_values[testable] = stats.wilcoxon(differences[testable], zero_method="wilcox", axis=1).pvalue
    power, low, high = wilson_ci(np.nan_to_num(p_values, nan=1.0) < alpha)
    return {"power": power, "power_low": low, "power_high": high,
            "answer_correlation": float(np.corrcoef(first.ravel(), second.ravel())[0, 1])}

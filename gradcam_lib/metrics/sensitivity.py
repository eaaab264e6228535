"""The sensitivity axiom read on one-pixel attacks (Sundararajan et al. 2017; KTH's experiment,
chapter 6): where the pixel that flips the prediction falls in a map, against a random pixel.

:func:`map_value_at` reads a map at the attacked pixel, raw and as a percentile rank within the map
(100 x the share of its pixels with a strictly smaller value). Its null is the rank of a uniformly
random pixel of the same map (:func:`null_percentile`: ``50 (1 - sum_v (n_v / N)^2)``, not 50 when
a rectified map ties at zero), and :func:`random_pixel_test` tests the attacked pixels against it
(a randomisation test, exact under the null, with a paired bootstrap interval).
:func:`pixel_sensitivity` gives the per-attack measures that the chapter stores. Pure functions of
maps and pixel positions; the draws come from a numpy generator seeded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradcam_lib.stats import paired_difference

__all__ = [
    "RandomPixelTest",
    "map_value_at",
    "null_percentile",
    "pixel_percentiles",
    "pixel_sensitivity",
    "random_pixel_test",
]


def map_value_at(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The value of each map ``(B, H, W)`` at its pixel ``(x[b], y[b])``, raw and as a percentile
    rank within its own map: 100 x the share of the map's pixels with a strictly smaller value
    (0 = no pixel is less important; a zero value on a map with zeros has rank 0)."""
    b = torch.arange(len(maps))
    values = maps[b, y, x]
    below = (maps.flatten(1) < values[:, None]).float().mean(1)
    return values, 100.0 * below


def pixel_percentiles(maps: torch.Tensor) -> torch.Tensor:
    """The percentile rank (:func:`map_value_at`'s definition) of *every* pixel of each map
    ``(B, H, W)`` within its own map, ``(B, H, W)``: 100 x (pixels strictly below) / (H W).
    Ties share the lowest rank (a map's zeros all have rank 0)."""
    flat = maps.flatten(1).contiguous()
    ordered = flat.sort(1).values
    below = torch.searchsorted(ordered, flat, side="left")
    return (100.0 * below.double() / flat.shape[1]).view(maps.shape)


def null_percentile(maps: torch.Tensor) -> torch.Tensor:
    """The expected percentile rank of a uniformly random pixel of each map ``(B, H, W)``: the
    null of :func:`map_value_at`'s rank when the attacked pixel knows nothing of the map.

    With N pixels and ``n_v`` pixels of value v, a random pixel has on average
    (N^2 - sum_v n_v^2) / (2 N) pixels strictly below it, so the null is
    ``50 (1 - sum_v (n_v / N)^2)``: 50 (N - 1) / N without ties, and for a share z of zeros and
    distinct other values ``50 (1 - z^2 - (1 - z) / N)`` -- about 37.5 at z = 1/2, not 50. Computed
    as the mean of :func:`pixel_percentiles`."""
    return pixel_percentiles(maps).flatten(1).mean(1)


@dataclass(frozen=True)
class RandomPixelTest:
    """The attacked pixel against a uniformly random pixel of the same map, over ``n`` attacked
    images: ``observed`` the mean score at the attacked pixels, ``null`` its expectation for random
    pixels, ``difference`` = observed - null with its paired bootstrap interval ``[low, high]``
    over images, and the two-sided randomisation ``p_value``."""

    observed: float
    null: float
    difference: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the interval of the difference lies on one side of 0."""
        return bool(self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        return (f"observed {self.observed:.1f} vs random pixel {self.null:.1f}: {self.difference:+.1f} "
                f"[{self.low:+.1f}, {self.high:+.1f}], randomisation p = {self.p_value:.2g} (n = {self.n})")


def random_pixel_test(scores: torch.Tensor, x: torch.Tensor, y: torch.Tensor, draws: int = 10_000,
                      seed: int = 0, confidence: float = 0.95) -> RandomPixelTest:
    """Is the attacked pixel ``(x[b], y[b])`` placed differently in its score map ``(B, H, W)``
    than a random pixel? (scores: :func:`pixel_percentiles` of the Grad-CAM maps, or an indicator
    such as ``map == 0``.)

    H0: each attacked pixel is a uniform draw from its own map's pixels, independently across the
    ``B`` images. Statistic: T = mean_b (s_b - mu_b), with s_b the score at the attacked pixel and
    mu_b the mean score of map b (the exact null expectation, :func:`null_percentile` for ranks).
    Its null distribution is simulated exactly by drawing one uniform pixel per map ``draws`` times
    (numpy generator seeded with ``seed``); two-sided p = min(1, 2 min(P(T* <= t), P(T* >= t))),
    each with the (1 + count) / (1 + draws) correction. The interval of T is
    :func:`gradcam_lib.stats.paired_difference` of (s_b, mu_b) over images.
    """
    if len(scores) == 0:
        nan = float("nan")
        return RandomPixelTest(nan, nan, nan, nan, nan, nan, 0)
    flat = scores.flatten(1).double().cpu().numpy()
    batch, size = flat.shape
    index = (y.long() * scores.shape[-1] + x.long()).cpu().numpy()
    observed = flat[np.arange(batch), index]
    centre = flat.mean(1)
    statistic = float((observed - centre).mean())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, size, size=(draws, batch))
    simulated = (flat[np.arange(batch)[None, :], picks] - centre[None, :]).mean(1)
    tol = 1e-9 * max(1.0, float(np.abs(flat).max()))
    lower = (1 + int((simulated <= statistic + tol).sum())) / (1 + draws)
    upper = (1 + int((simulated >= statistic - tol).sum())) / (1 + draws)
    interval = paired_difference(observed, centre, confidence=confidence, seed=seed)
    return RandomPixelTest(float(observed.mean()), float(centre.mean()), statistic, interval.low, interval.high,
                           min(1.0, 2.0 * min(lower, upper)), batch)


def pixel_sensitivity(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per map ``(B, H, W)`` and its pixel ``(x[b], y[b])``: ``value`` and ``percentile``
    (:func:`map_value_at`), ``relative`` (the value over the map's maximum; 0 for an all-zero map),
    ``null_percentile`` (:func:`null_percentile`) and ``zero_share`` (the map's share of zero
    pixels: a random pixel's chance of a zero value)."""
    value, rank = map_value_at(maps, x, y)
    peak = maps.flatten(1).amax(1)
    return {
        "value": value,
        "percentile": rank,
        "relative": torch.where(peak > 0, value / peak.clamp(min=1e-30), torch.zeros_like(value)),
        "null_percentile": null_percentile(maps),
        "zero_share": (maps.flatten(1) == 0).double().mean(1),
    }

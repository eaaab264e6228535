"""How similar two saliency maps of the same image are: the measures of Adebayo et al. (NeurIPS 2018,
"Sanity checks for saliency maps", Sec. 3 and Fig. 2), which compare a model's map with the map of
the same class after the model's weights (or its training labels) were randomised.

* :func:`spearman`: Spearman's rank correlation of the pixel values, of the signed map ("without
  absolute values") or of its absolute value (their Fig. 2, both panels);
* :func:`ssim`: the structural similarity index (Wang et al. 2004) of the two maps, each min-max
  normalised to [0, 1] (scikit-image's ``structural_similarity``, data range 1);
* :func:`hog_similarity`: the Pearson correlation of the two maps' histograms of oriented gradients
  (Dalal and Triggs 2005; scikit-image's ``hog``), a comparison of their edge structure.

All take 2-D maps of one shape (tensors or arrays) and return a float. A constant map has no
ranking and no gradients: :func:`spearman` and :func:`hog_similarity` return NaN when either map is
constant (the caller decides what that means; :func:`similarities` reports it in ``constant``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

__all__ = ["MEASURES", "hog_similarity", "normalised", "similarities", "spearman", "ssim"]

#: The columns :func:`similarities` returns, in the order the chapter shows them.
MEASURES = ("spearman", "spearman_abs", "ssim", "hog")


def _as_map(values: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """A finite 2-D float64 array, or a ValueError naming ``name``."""
    array = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinity")
    return array


def _pair(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_map(a, "map_a"), _as_map(b, "map_b")
    if x.shape != y.shape:
        raise ValueError(f"the maps differ in shape: {x.shape} and {y.shape}")
    return x, y


def normalised(values: np.ndarray) -> np.ndarray:
    """Min-max normalised to [0, 1]; a constant map becomes all zeros."""
    span = np.ptp(values)
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def spearman(map_a: torch.Tensor | np.ndarray, map_b: torch.Tensor | np.ndarray, absolute: bool = False) -> float:
    """Spearman's rank correlation of the two maps' pixels (ties get their average rank), of
    ``|map|`` when ``absolute``. NaN when either map is constant."""
    a, b = _pair(map_a, map_b)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(stats.rankdata(a.ravel()), stats.rankdata(b.ravel()))[0, 1])


def ssim(map_a: torch.Tensor | np.ndarray, map_b: torch.Tensor | np.ndarray) -> float:
    """The structural similarity of the two maps, each min-max normalised to [0, 1] (data range 1,
    scikit-image's 7 x 7 uniform window, or the largest odd window that fits a smaller map)."""
    a, b = _pair(map_a, map_b)
    window = min(7, *(s - 1 + s % 2 for s in a.shape))  # largest odd size <= each side
    if window < 3:
        raise ValueError(f"SSIM needs maps of at least 3 x 3 pixels, got {a.shape}")
    return float(structural_similarity(normalised(a), normalised(b), data_range=1.0, win_size=window))


def hog_similarity(map_a: torch.Tensor | np.ndarray, map_b: torch.Tensor | np.ndarray, cell: int = 8) -> float:
    """Pearson correlation of the HOG features of the two maps (9 orientations, ``cell`` x ``cell``
    pixels per cell, 3 x 3 cells per block, L2-Hys: scikit-image's defaults; maps min-max
    normalised first). NaN when either feature vector is constant (a constant map has no edges)."""
    a, b = _pair(map_a, map_b)
    if min(a.shape) < 3 * cell:
        raise ValueError(f"HOG with {cell}-pixel cells needs maps of at least {3 * cell} pixels a side, got {a.shape}")
    features = [hog(normalised(m), pixels_per_cell=(cell, cell), cells_per_block=(3, 3)) for m in (a, b)]
    if np.ptp(features[0]) == 0 or np.ptp(features[1]) == 0:
        return float("nan")
    return float(np.corrcoef(*features)[0, 1])


def similarities(original: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray,
                 hog_cell: int = 8) -> dict[str, float]:
    """Every measure of :data:`MEASURES` between ``original`` and ``other``, and ``constant``
    (1.0 when ``other`` is constant, where the rank and HOG measures are NaN)."""
    a, b = _pair(original, other)
    return {"spearman": spearman(a, b), "spearman_abs": spearman(a, b, absolute=True), "ssim": ssim(a, b),
            "hog": hog_similarity(a, b, hog_cell), "constant": float(np.ptp(b) == 0)}

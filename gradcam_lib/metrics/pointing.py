"""The pointing game's hit rule (Zhang et al., Excitation Backprop, 2016; Grad-CAM paper Sec. 4.3;
TorchRay's ``PointingGame``).

For an (image, ground-truth class) pair whose class has a box in the model's input: take the
maximum point of the class's map (:func:`max_point`) and count a **hit** when it lies closer than
``tolerance`` pixels (Euclidean distance < 15 by default, TorchRay's ``PointingGame.evaluate``) to
one of the class's boxes (:func:`pointing_hit`). Input-space methods are first smoothed as
TorchRay's benchmark smooths its gradient-type methods (:func:`smooth_saliency`). The **centre
baseline** points at ``(W / 2, H / 2)`` (:func:`centre_point`, TorchRay's ``center`` method).
The EBP **difficult** subset: :func:`is_difficult`.

Uncertainty: the (image, class) pairs are not independent units -- pairs of one image share the
image, and the composite benchmark's images share a handful of source crops -- so intervals and
paired comparisons resample whole clusters (cluster bootstrap, Davison & Hinkley 1997, Sec. 3.8:
:func:`cluster_group_means`, :func:`class_accuracy_ci`, :func:`paired_class_accuracy_difference`,
:func:`subset_difference`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import box_mask
from gradcam_lib.stats import PairedDifference
from gradcam_lib.validate import check_boxes, check_map

__all__ = [
    "SMOOTHED_METHODS",
    "box_distances",
    "centre_point",
    "class_accuracy_ci",
    "cluster_group_means",
    "is_difficult",
    "max_point",
    "paired_class_accuracy_difference",
    "pointing_classes",
    "pointing_hit",
    "smooth_saliency",
    "subset_difference",
    "within_tolerance",
]

# Input-space methods that TorchRay's pointing benchmark smooths (examples/attribution_benchmark.py:
# gradient, deconvnet, guided_backprop with smooth=0.02); Guided Grad-CAM is input-space too.
SMOOTHED_METHODS: tuple[str, ...] = ("backprop", "guided_backprop", "guided_gradcam")


def _values(heatmap: torch.Tensor | np.ndarray) -> torch.Tensor:
    values = torch.as_tensor(heatmap).detach().cpu().to(torch.float64)
    check_map("heatmap", values)
    return values


def max_point(heatmap: torch.Tensor | np.ndarray) -> tuple[int, int] | None:
    """The map's maximum point ``(x, y)``; None for a constant map (it points nowhere).

    Ties: of all pixels equal to the maximum, the one nearest to their centroid (then the first in
    row-major order). Why: Grad-CAM maps are coarse maps upsampled bilinearly, which makes plateaus
    of exactly equal maxima -- 2 x 2 pixels around an interior peak, up to (s/2) x (s/2) pixels at a
    border peak for an upsampling factor s (16 x 16 for EfficientNet-Lite0's 7 x 7 map). numpy's /
    TorchRay's argmax takes the plateau's top-left pixel, shifting the point by up to s/2 pixels
    towards the image corner; the pixel nearest the centroid is the plateau's middle. For two
    separate equal peaks it picks one of them (never the empty space between them).

    Raises:
        ValueError: not 2-D, or NaN or infinity.
    """
    values = _values(heatmap)
    peak = values.max()
    if bool(peak == values.min()):
        return None
    ys, xs = torch.nonzero(values == peak, as_tuple=True)
    if len(xs) == 1:
        return int(xs[0]), int(ys[0])
    cx, cy = xs.double().mean(), ys.double().mean()
    nearest = int(torch.argmin((xs - cx) ** 2 + (ys - cy) ** 2))  # first minimum: row-major order
    return int(xs[nearest]), int(ys[nearest])


def box_distances(point: tuple[float, float], boxes: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """Euclidean distance in pixels from ``point (x, y)`` to each inclusive box ``(xmin, ymin,
    xmax, ymax)`` (the box covers pixels xmin..xmax; a point on or inside it is at distance 0).

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` finite numbers, or holds an inverted box (``xmin >
            xmax`` or ``ymin > ymax``: every point would lie "inside" it).
    """
    return _distances(point, check_boxes("boxes", boxes))


def _distances(point: tuple[float, float], boxes: np.ndarray) -> torch.Tensor:
    """:func:`box_distances` to ``(N, 4)`` boxes already checked."""
    b = torch.from_numpy(boxes)
    x, y = float(point[0]), float(point[1])
    dx = (b[:, 0] - x).clamp(min=0) + (x - b[:, 2]).clamp(min=0)
    dy = (b[:, 1] - y).clamp(min=0) + (y - b[:, 3]).clamp(min=0)
    return torch.sqrt(dx**2 + dy**2)


def within_tolerance(point: tuple[float, float], boxes: np.ndarray, tolerance: float) -> bool:
    """TorchRay's hit rule: some pixel of the checked ``(N, 4)`` ``boxes`` lies at Euclidean distance
    < ``tolerance`` from ``point``."""
    if tolerance <= 0:
        raise ValueError(
            f"tolerance must be > 0 (a hit is distance < tolerance; 1 means inside a box), got {tolerance}"
        )
    return bool((_distances(point, boxes) < tolerance).any())


def pointing_hit(
    heatmap: torch.Tensor | np.ndarray, boxes: torch.Tensor | Sequence[Sequence[int]], tolerance: float = 15
) -> bool:
    """Pointing game: is the map's maximum point (:func:`max_point`, see there for ties) closer than
    ``tolerance`` pixels to one of ``boxes``?

    Args:
        heatmap: ``(H, W)``, any scale.
        boxes: ``(N, 4)`` inclusive pixel boxes of the target class in the map's pixels.
        tolerance: a hit when the distance is *strictly* below it, as TorchRay's
            ``PointingGame.evaluate`` (``(u**2 + v**2) < tolerance**2``): a point exactly 15 px from
            a box misses, and ``tolerance=1`` means "inside a box" (distances between pixels are 0 or
            at least 1). Must be > 0.

    Returns:
        False for a constant map (an all-zero Grad-CAM has no maximum point) or when no box is given.

    Raises:
        ValueError: ``tolerance`` <= 0; a map that is not 2-D or not finite; ``boxes`` not ``(N, 4)``
            finite numbers or holding an inverted box.
    """
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    checked = check_boxes("boxes", boxes)
    point = max_point(heatmap)
    if point is None:
        return False
    return within_tolerance(point, checked, tolerance)


def centre_point(height: int, width: int) -> tuple[float, float]:
    """The centre baseline's point ``(W / 2, H / 2)``, as TorchRay's ``center`` method (pixel ``i``
    sits at coordinate ``i`` there, so this is half a pixel right of and below the exact middle)."""
    return width / 2, height / 2


def smooth_saliency(maps: torch.Tensor, fraction: float = 0.02) -> torch.Tensor:
    """TorchRay's smoothing of a saliency map (``attribution.common.saliency`` with ``smooth`` =
    ``fraction``, ``utils.imsmooth``): a separable Gaussian of sigma = ``fraction`` x the map's longer
    side, kernel ``exp(-i^2 / (2 sigma^2))`` for ``|i| <= ceil(4 sigma)`` normalised to sum 1,
    replicate padding, output the same size.

    Args:
        maps: ``(..., H, W)``.
        fraction: 0 returns the maps unchanged.
    """
    if fraction < 0:
        raise ValueError(f"fraction must be >= 0, got {fraction}")
    if fraction == 0:
        return maps
    height, width = maps.shape[-2:]
    sigma = fraction * max(height, width)
    radius = math.ceil(4 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=maps.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    flat = maps.reshape(-1, 1, height, width)
    padded = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.reshape(1, 1, -1, 1))
    out = F.conv2d(out, kernel.reshape(1, 1, 1, -1))
    return out.reshape(maps.shape)


def _union_area(boxes: torch.Tensor, height: int, width: int) -> int:
    """Pixels covered by the union of the inclusive ``boxes`` in an image of ``height`` x ``width``."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes.tolist():
        mask |= box_mask(box, (height, width))
    return int(mask.sum())


def is_difficult(sample: Sample, label: int, fraction: float = 0.25) -> bool:
    """EBP's "difficult" pair: the class's boxes (their union) cover less than ``fraction`` of the
    image, and the image holds at least one other class."""
    height, width = sample.image.shape[-2:]
    others = set(sample.box_labels.tolist()) - {label}
    return bool(others) and _union_area(sample.boxes_of(label), height, width) < fraction * height * width


def pointing_classes(sample: Sample) -> list[int]:
    """The classes of ``sample`` to play for (ascending): those with a box in the input, less those
    whose boxes are all marked PASCAL-difficult (TorchRay skips them; a sample without ``difficult``
    flags has none)."""
    flags = getattr(sample, "difficult", None)
    classes = []
    for label in sorted(set(sample.box_labels.tolist())):
        if flags is not None and bool(flags[sample.box_labels == label].all()):
            continue
        classes.append(label)
    return classes


# --------------------------------------------------------------------------------------------
# Intervals over independent units: cluster bootstrap of pair outcomes
# --------------------------------------------------------------------------------------------


def _resample_counts(n_clusters: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, n_clusters)`` multiplicities of each cluster in resamples of ``n_clusters``
    clusters drawn with replacement (the draws of :func:`gradcam_lib.stats.cluster_bootstrap_ci`)."""
    draws = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    offsets = (np.arange(n_resamples) * n_clusters)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_clusters).reshape(n_resamples, n_clusters)


def cluster_group_means(
    values: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence[object],
    clusters: np.ndarray | Sequence[object],
    n_resamples: int = 10_000,
    seed: int = 0,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster bootstrap (Davison & Hinkley 1997, Sec. 3.8) of the mean of ``values`` within each
    group, for several value columns resampled *together* (paired).

    Whole clusters are drawn with replacement (as many as there are), every unit of a drawn cluster
    enters with the cluster's multiplicity, and each group's mean is recomputed.

    Args:
        values: ``(n,)`` or ``(n, M)`` outcomes (e.g. hits of M methods on the same n pairs).
        groups: ``(n,)`` group of each unit (e.g. its class).
        clusters: ``(n,)`` independent unit of each unit (e.g. its source object).
        n_resamples, seed: the resampling, seeded with its own generator.
        chunk: resamples computed at a time (default: about 5 M cluster weights at a time).

    Returns:
        ``(group names (G,), means (G, M), resampled means (n_resamples, G, M))``; a group absent
        from a resample is NaN there.
    """
    from scipy import sparse

    data = np.asarray(values, dtype=np.float64)
    data = data[:, None] if data.ndim == 1 else data
    group_names, group_codes = np.unique(np.asarray(groups), return_inverse=True)
    cluster_array = np.asarray(clusters, dtype=object)
    if not len(data) == len(group_codes) == len(cluster_array):
        raise ValueError(f"values, groups and clusters must have the same length, got {len(data)}, "
                         f"{len(group_codes)} and {len(cluster_array)}")
    if not len(data):
        raise ValueError("no units to resample")
    _, cluster_codes = np.unique(cluster_array.astype(str), return_inverse=True)
    n_clusters, n_groups, n_columns = int(cluster_codes.max()) + 1, len(group_names), data.shape[1]

    def table(weights: np.ndarray) -> sparse.csr_matrix:  # (clusters, groups) sums of ``weights``
        return sparse.coo_matrix((weights, (cluster_codes, group_codes)), shape=(n_clusters, n_groups)).tocsr()

    sums = [table(data[:, m]) for m in range(n_columns)]
    counts = table(np.ones(len(data)))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.stack([np.asarray(s.sum(axis=0)).ravel() for s in sums], axis=1) / np.asarray(counts.sum(axis=0)).T
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(n_resamples, 5_000_000 // n_clusters))
    resampled = np.empty((n_resamples, n_groups, n_columns))
    for start in range(0, n_resamples, chunk):
        weights = _resample_counts(n_clusters, min(chunk, n_resamples - start), rng).astype(np.float64)
        group_counts = np.asarray((counts.T @ weights.T).T)  # (r, G)
        for m, s in enumerate(sums):
            with np.errstate(invalid="ignore", divide="ignore"):
                resampled[start : start + len(weights), :, m] = np.where(
                    group_counts > 0, np.asarray((s.T @ weights.T).T) / group_counts, np.nan)
    return group_names, means, resampled


def _percentile(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2
    low, high = np.nanquantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


def class_accuracy_ci(
    hits: np.ndarray | Sequence[bool],
    labels: np.ndarray | Sequence[int],
    clusters: np.ndarray | Sequence[object],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(accuracy, low, high)`` in %: TorchRay's mean over classes of the per-class hit rate, with a
    percentile cluster-bootstrap interval (classes absent from a resample are left out of its mean,
    as the point estimate leaves out classes without pairs)."""
    _, means, draws = cluster_group_means(np.asarray(hits, dtype=np.float64), labels, clusters, n_resamples, seed)
    class_means = np.nanmean(draws[:, :, 0], axis=1)
    low, high = _percentile(class_means, confidence)
    return 100 * float(np.nanmean(means[:, 0])), 100 * low, 100 * high


def paired_class_accuracy_difference(
    hits_a: np.ndarray | Sequence[bool],
    hits_b: np.ndarray | Sequence[bool],
    labels: np.ndarray | Sequence[int],
    clusters: np.ndarray | Sequence[object],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Mean class accuracy of A minus that of B (in points) on the *same* pairs, with a paired
    cluster-bootstrap interval: both methods' outcomes are resampled with the same clusters."""
    both = np.stack([np.asarray(hits_a, dtype=np.float64), np.asarray(hits_b, dtype=np.float64)], axis=1)
    _, means, draws = cluster_group_means(both, labels, clusters, n_resamples, seed)
    class_means = np.nanmean(draws, axis=1)  # (R, 2)
    low, high = _percentile(class_means[:, 0] - class_means[:, 1], confidence)
    point = np.nanmean(means, axis=0)
    return PairedDifference(100 * float(point[0] - point[1]), 100 * low, 100 * high, len(both))


def subset_difference(
    hits: np.ndarray | Sequence[bool],
    in_subset: np.ndarray | Sequence[bool],
    clusters: np.ndarray | Sequence[object],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Hit rate (in %) of one method's pairs inside a subset minus that of the pairs outside it (e.g.
    difficult vs the rest), both recomputed on each cluster resample; ``n`` = pairs in all."""
    subset = np.asarray(in_subset, dtype=bool)
    _, means, draws = cluster_group_means(np.asarray(hits, dtype=np.float64), subset, clusters, n_resamples, seed)
    if means.shape[0] != 2:
        raise ValueError("the subset and its complement must both hold pairs")
    low, high = _percentile(draws[:, 1, 0] - draws[:, 0, 0], confidence)  # groups sorted: False, True
    return PairedDifference(100 * float(means[1, 0] - means[0, 0]), 100 * low, 100 * high, len(subset))

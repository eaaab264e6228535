"""MaxBoxAcc (Choe et al., CVPR 2020, "Evaluating weakly supervised object localization methods
right", Sec. 4.1) and its bootstrap interval.

The map of the ground-truth class, binarised at every threshold of a dense grid (0.00, 0.01, ...,
0.99 of its maximum, :data:`~gradcam_lib.metrics.threshold_sweep.THRESHOLD_GRID`); the share of
images whose box has IoU >= delta with a ground-truth box, maximised over the grid. V1: delta = 0.5,
the box of the largest component; V2: the mean over delta in {0.3, 0.5, 0.7}, boxes of all
components, the best-matching one counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gradcam_lib.metrics.localization import CLSLOC_IOU
from gradcam_lib.metrics.threshold_sweep import THRESHOLD_GRID, threshold_sweep

__all__ = ["MAX_BOX_ACC_V2_IOUS", "max_box_acc", "max_box_acc_ci", "max_box_acc_from_ious"]

MAX_BOX_ACC_V2_IOUS = (0.3, 0.5, 0.7)
"""The IoU thresholds delta that MaxBoxAccV2 averages over (Choe et al. 2020, Sec. 4.1)."""


def max_box_acc_from_ious(ious: np.ndarray, iou_thresholds: Sequence[float] = (CLSLOC_IOU,)) -> float:
    """MaxBoxAcc from ``(N images, T thresholds)`` box IoUs: for each delta the best share over the
    thresholds of images with IoU >= delta, then the mean over the deltas."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or not ious.size:
        raise ValueError(f"ious must be a non-empty (N, T) array, got shape {ious.shape}")
    return float(np.mean([(ious >= delta).mean(axis=0).max() for delta in iou_thresholds]))


def max_box_acc(
    heatmaps: Sequence[torch.Tensor | np.ndarray],
    gt_boxes: Sequence[torch.Tensor | Sequence[Sequence[int]]],
    iou_thresholds: Sequence[float] = (CLSLOC_IOU,),
    thresholds: Sequence[float] | None = None,
    all_components: bool = False,
) -> float:
    """MaxBoxAcc (Choe et al., CVPR 2020, Sec. 4.1) of ground-truth-class maps.

    Args:
        heatmaps: ``(H, W)`` maps, one per image, of its ground-truth class.
        gt_boxes: for each map, that class's inclusive boxes (an image without boxes is a miss).
        iou_thresholds: the deltas; ``(0.5,)`` is MaxBoxAcc (V1), :data:`MAX_BOX_ACC_V2_IOUS` with
            ``all_components=True`` is MaxBoxAccV2.
        thresholds: fractions of each map's maximum; default :data:`THRESHOLD_GRID` (0.00 ... 0.99).
        all_components: score the best-matching box among all 8-connected segments (V2) instead
            of the largest segment's box (V1).

    Returns:
        The mean over ``iou_thresholds`` of the best share (over ``thresholds``) of images whose
        box has IoU >= delta with one of their boxes, in [0, 1].

    Differences from the reference code (``wsolevaluation``, which uses OpenCV contours on maps
    min-max normalised and quantised to uint8): thresholds are fractions of the map's maximum and
    inclusive (``>=``), segments are 8-connected pixel sets ranked by pixel count, and boxes are
    inclusive -- the same binarisation and box as :func:`heatmap_to_box`, the paper's protocol.
    """
    if len(heatmaps) != len(gt_boxes):
        raise ValueError(f"{len(heatmaps)} maps but {len(gt_boxes)} box lists")
    grid = THRESHOLD_GRID if thresholds is None else tuple(thresholds)
    sweeps = [threshold_sweep(h, grid, boxes) for h, boxes in zip(heatmaps, gt_boxes, strict=True)]
    ious = np.stack([s.best_iou if all_components else s.largest_iou for s in sweeps])
    return max_box_acc_from_ious(ious, iou_thresholds)


def max_box_acc_ci(
    ious: np.ndarray,
    iou_thresholds: Sequence[float] = (CLSLOC_IOU,),
    clusters: Sequence[object] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(MaxBoxAcc, low, high)``: percentile bootstrap that resamples images -- or whole
    ``clusters`` of images (composites sharing a source object) -- and re-takes the maximum over
    thresholds in every resample, so the interval includes the choice of the threshold."""
    ious = np.asarray(ious, dtype=np.float64)
    value = max_box_acc_from_ious(ious, iou_thresholds)
    groups = np.arange(len(ious)) if clusters is None else np.asarray(clusters, dtype=object).astype(str)
    _, codes = np.unique(groups, return_inverse=True)
    n_clusters = codes.max() + 1
    if n_clusters < 2:
        return value, float("nan"), float("nan")
    counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    hits = {delta: np.stack([np.bincount(codes, weights=column, minlength=n_clusters)
                             for column in (ious >= delta).T.astype(np.float64)], axis=1)
            for delta in iou_thresholds}  # (clusters, T) hit counts
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    values = np.empty(n_resamples)
    chunk = max(1, 2**22 // n_clusters)  # resamples per block: bounded memory for 50 000 images
    for begin in range(0, n_resamples, chunk):
        block = draws[begin : begin + chunk]
        offsets = (np.arange(len(block)) * n_clusters)[:, None]
        weights = np.bincount((block + offsets).ravel(), minlength=len(block) * n_clusters)
        weights = weights.reshape(len(block), n_clusters).astype(np.float64)  # times each cluster is drawn
        sizes = weights @ counts
        values[begin : begin + chunk] = np.mean(
            [((weights @ hits[delta]) / sizes[:, None]).max(axis=1) for delta in iou_thresholds], axis=0)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return value, float(low), float(high)


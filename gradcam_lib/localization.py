"""Weakly supervised localisation (paper Sec. 4.1), the ILSVRC CLS-LOC error rule, and MaxBoxAcc.

Protocol (paper): for each predicted class, binarise its map at ``threshold`` (15 %) of the map's
maximum, keep the largest 8-connected segment, and take its bounding box.

Scoring = the CLS-LOC devkit's ``eval_clsloc.m`` (ILSVRC 2012-2014): a guess is right for class
``c`` of the image when its label is ``c`` and its box has IoU >= 0.5 with one of ``c``'s boxes
(the devkit tests ``ov < 0.50``; fixed, whatever the box size). An image with ``n`` ground-truth
classes scores, for each of them, "wrong unless one of the guesses is right for it", and its error
is the mean over its ``n`` classes (``e./n``); the classification error is averaged the same way
(``c./n``). Images on the devkit's blacklist are left out (:class:`~gradcam_lib.datasets.ILSVRCValDataset`).
The relaxed threshold min(0.5, wh / ((w + 10)(h + 10))) for small boxes is the rule of the *DET*
devkit (``eval_detection.m``), not of localisation; it is kept only as the option
``tiny_box_rule=True``.

MaxBoxAcc (Choe et al., CVPR 2020, "Evaluating weakly supervised object localization methods
right"): the map of the ground-truth class, binarised at every threshold of a dense grid
(0.00, 0.01, ..., 0.99 of its maximum); the share of images whose box has IoU >= delta with a
ground-truth box, maximised over the grid. V1: delta = 0.5, the box of the largest component; V2:
the mean over delta in {0.3, 0.5, 0.7}, boxes of all components, the best-matching one counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from gradcam_lib.acceleration import precision
from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import Box, iou, iou_unchecked
from gradcam_lib.methods import attribute
from gradcam_lib.methods import top_k as top_k_chooser
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import dataset_fingerprint, model_fingerprint, run_key, run_resumable
from gradcam_lib.stats import cluster_bootstrap_ci, wilson_ci
from gradcam_lib.validate import check_box, check_boxes, check_map

__all__ = [
    "CLSLOC_IOU",
    "MAX_BOX_ACC_V2_IOUS",
    "THRESHOLD_GRID",
    "Box",
    "ThresholdSweep",
    "error_interval",
    "error_table",
    "evaluate_localization",
    "guess_is_localized",
    "heatmap_to_box",
    "image_outcome",
    "iou",
    "iou_curves",
    "iou_threshold",
    "localize_batch",
    "max_box_acc",
    "max_box_acc_ci",
    "max_box_acc_from_ious",
    "pick_threshold",
    "threshold_sweep",
]

CLSLOC_IOU = 0.5
"""IoU a CLS-LOC guess needs with a ground-truth box of its class (``eval_clsloc.m``)."""

THRESHOLD_GRID: tuple[float, ...] = tuple(i / 100 for i in range(100))
"""Choe et al.'s threshold grid: 0.00, 0.01, ..., 0.99 of each map's maximum (``i / 100`` is the
same float as the decimal literal, so 0.15 is on the grid exactly)."""

MAX_BOX_ACC_V2_IOUS = (0.3, 0.5, 0.7)
"""The IoU thresholds delta that MaxBoxAccV2 averages over (Choe et al. 2020, Sec. 4.1)."""

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_array(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    values = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    check_map("heatmap", values)
    return values


def heatmap_to_box(heatmap: torch.Tensor | np.ndarray, threshold: float = 0.15) -> Box | None:
    """Bounding box of the largest 8-connected segment of pixels >= ``threshold`` * max.

    Args:
        heatmap: ``(H, W)`` map, any non-negative scale (Grad-CAM is not normalised).
        threshold: fraction of the maximum (paper: 0.15; CAM used 0.20).

    Returns:
        ``(xmin, ymin, xmax, ymax)`` inclusive pixel coordinates, or None when the map has no
        positive value (an all-zero Grad-CAM: the class has no positive evidence at this layer).
        When two segments have the same pixel count, the one met first in row-major order wins.

    Raises:
        ValueError: the map is not 2-D or holds NaN or infinity.
    """
    values = _as_array(heatmap)
    peak = values.max()
    if not peak > 0:
        return None
    segments, count = ndimage.label(values >= threshold * peak, structure=_EIGHT_CONNECTED)
    if count == 0:
        return None
    sizes = np.bincount(segments.ravel(), minlength=count + 1)[1:]
    largest = int(np.argmax(sizes)) + 1
    rows, cols = ndimage.find_objects(segments)[largest - 1]
    return (cols.start, rows.start, cols.stop - 1, rows.stop - 1)


def iou_threshold(box: Sequence[int], tiny_box_rule: bool = False) -> float:
    """IoU needed to match the ground-truth ``box``: 0.5 (CLS-LOC, ``eval_clsloc.m``), or with
    ``tiny_box_rule`` the DET devkit's min(0.5, wh / ((w + 10)(h + 10))).

    Raises:
        ValueError: a box that is not 4 finite numbers or is inverted (its width would be <= 0).
    """
    check_box("box", box)
    return _needed_iou(box, tiny_box_rule)


def _needed_iou(box: Sequence[int], tiny_box_rule: bool) -> float:
    """:func:`iou_threshold` of a box already checked."""
    if not tiny_box_rule:
        return CLSLOC_IOU
    w = box[2] - box[0] + 1
    h = box[3] - box[1] + 1
    return min(CLSLOC_IOU, w * h / ((w + 10) * (h + 10)))


def guess_is_localized(label: int, box: Box | None, sample: Sample, tiny_box_rule: bool = False) -> bool:
    """CLS-LOC rule for one guess: its class is ``label``, a ground-truth class of the image, and
    its box overlaps one of that class's boxes enough (:func:`iou_threshold`).

    Raises:
        ValueError: ``box`` or one of the sample's boxes of ``label`` is not a valid box.
    """
    if box is None or label not in sample.labels:
        return False
    check_box("box", box)
    truths = sample.boxes_of(label)
    check_boxes(f"the boxes of class {label} in sample {sample.image_id!r}", truths)
    return any(iou_unchecked(box, gt) >= _needed_iou(gt, tiny_box_rule) for gt in truths.tolist())


def image_outcome(
    labels: Sequence[int], boxes: Sequence[Box | None], sample: Sample, tiny_box_rule: bool = False
) -> dict[str, float]:
    """The four CLS-LOC scores of one image from its guesses in descending score, as in
    ``eval_clsloc.m``: for each ground-truth class, top-k is right when one of the first k guesses
    is (classification: has that label; localisation: and is localised), and the image scores the
    share of its ground-truth classes that are right (1 - the devkit's ``e./n``).

    Returns ``{"cls_top1", "cls_top5", "loc_top1", "loc_top5"}`` -> share in [0, 1] (for an image
    with one class: 1.0 correct, 0.0 wrong).
    """
    labels = [int(label) for label in labels]
    truth = [int(label) for label in sample.labels]
    localized = [
        guess_is_localized(label, box, sample, tiny_box_rule) for label, box in zip(labels, boxes, strict=False)
    ]

    def share(k: int, localisation: bool) -> float:
        right = [
            any(label == c and (localized[j] or not localisation) for j, label in enumerate(labels[:k]))
            for c in truth
        ]
        return float(np.mean(right)) if right else 0.0

    return {
        "cls_top1": share(1, False),
        "cls_top5": share(5, False),
        "loc_top1": share(1, True),
        "loc_top5": share(5, True),
    }


# --------------------------------------------------------------------------------------------
# All thresholds at once: one union-find sweep over the superlevel sets of a map
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdSweep:
    """The connected components of one map at every threshold of a grid, scored against boxes;
    each attribute holds one entry per threshold, in the order given.

    Attributes:
        largest_boxes: ``(T, 4)`` long, the box of the largest 8-connected segment (what
            :func:`heatmap_to_box` returns at that threshold); ``-1`` rows where there is none.
        largest_iou: ``(T,)`` its best IoU with the ground-truth boxes (0 without boxes).
        largest_hit: ``(T,)`` whether it matches one box at that box's needed IoU.
        best_iou: ``(T,)`` the best IoU of *any* component's box with any ground-truth box
            (MaxBoxAccV2's "all components").
        components: ``(T,)`` how many segments there are.
    """

    largest_boxes: np.ndarray
    largest_iou: np.ndarray
    largest_hit: np.ndarray
    best_iou: np.ndarray
    components: np.ndarray

    def box(self, index: int) -> Box | None:
        """The largest segment's box at threshold ``index`` as :func:`heatmap_to_box` returns it."""
        row = self.largest_boxes[index]
        if row[0] < 0:
            return None
        x0, y0, x1, y1 = (int(v) for v in row)
        return x0, y0, x1, y1


def _sweep_python(levels: np.ndarray, n_levels: int, gt: np.ndarray, need: np.ndarray) -> tuple[np.ndarray, ...]:
    """Reference implementation of :func:`_sweep_kernel` (one ``ndimage.label`` per threshold);
    used when numba is not importable."""
    boxes = np.full((n_levels, 4), -1, dtype=np.int64)
    largest_iou = np.zeros(n_levels)
    largest_hit = np.zeros(n_levels, dtype=bool)
    best_iou = np.zeros(n_levels)
    components = np.zeros(n_levels, dtype=np.int64)
    for k in range(n_levels):
        segments, count = ndimage.label(levels > k, structure=_EIGHT_CONNECTED)
        components[k] = count
        if count == 0:
            continue
        sizes = np.bincount(segments.ravel(), minlength=count + 1)[1:]
        slices = ndimage.find_objects(segments)
        for index, (rows, cols) in enumerate(slices):
            box = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
            overlaps = [iou_unchecked(box, g) for g in gt.tolist()]
            best_iou[k] = max([best_iou[k], *overlaps])
            if index == int(np.argmax(sizes)):
                boxes[k] = box
                largest_iou[k] = max(overlaps, default=0.0)
                largest_hit[k] = any(o >= n for o, n in zip(overlaps, need, strict=True))
    return boxes, largest_iou, largest_hit, best_iou, components


def _sweep_union_find(
    levels: np.ndarray, order: np.ndarray, n_levels: int, gt: np.ndarray, need: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Union-find over the pixels in descending level (a max-tree sweep): after adding the pixels
    of level > k, the sets are the 8-connected segments of threshold k; each set keeps its size,
    box and first pixel in row-major order (the tie-break of :func:`heatmap_to_box`). Written for
    numba (:func:`_sweep_kernel`); same outputs as :func:`_sweep_python`."""
    height, width = levels.shape
    flat = levels.ravel()
    n = flat.size
    parent = np.arange(n)
    area = np.zeros(n, dtype=np.int64)
    x0 = np.zeros(n, dtype=np.int64)
    y0 = np.zeros(n, dtype=np.int64)
    x1 = np.zeros(n, dtype=np.int64)
    y1 = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    inside = np.zeros(n, dtype=np.bool_)
    roots = np.zeros(n, dtype=np.int64)
    n_roots = 0
    boxes = np.full((n_levels, 4), -1, dtype=np.int64)
    largest_iou = np.zeros(n_levels)
    largest_hit = np.zeros(n_levels, dtype=np.bool_)
    best_iou = np.zeros(n_levels)
    components = np.zeros(n_levels, dtype=np.int64)
    n_gt = gt.shape[0]
    pointer = 0
    for k in range(n_levels - 1, -1, -1):
        while pointer < n and flat[order[pointer]] > k:
            p = order[pointer]
            pointer += 1
            py = p // width
            px = p % width
            inside[p] = True
            area[p] = 1
            x0[p] = px
            x1[p] = px
            y0[p] = py
            y1[p] = py
            first[p] = p
            roots[n_roots] = p
            n_roots += 1
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    qy = py + dy
                    qx = px + dx
                    if (dy == 0 and dx == 0) or qy < 0 or qy >= height or qx < 0 or qx >= width:
                        continue
                    q = qy * width + qx
                    if not inside[q]:
                        continue
                    a = p
                    while parent[a] != a:
                        parent[a] = parent[parent[a]]
                        a = parent[a]
                    b = q
                    while parent[b] != b:
                        parent[b] = parent[parent[b]]
                        b = parent[b]
                    if a == b:
                        continue
                    if area[a] < area[b]:
                        a, b = b, a
                    parent[b] = a
                    area[a] += area[b]
                    x0[a] = min(x0[a], x0[b])
                    y0[a] = min(y0[a], y0[b])
                    x1[a] = max(x1[a], x1[b])
                    y1[a] = max(y1[a], y1[b])
                    first[a] = min(first[a], first[b])
        kept = 0
        best_root = -1
        for i in range(n_roots):
            r = roots[i]
            if parent[r] != r:
                continue
            roots[kept] = r
            kept += 1
            if (
                best_root < 0
                or area[r] > area[best_root]
                or (area[r] == area[best_root] and first[r] < first[best_root])
            ):
                best_root = r
            for g in range(n_gt):
                ix = min(x1[r], gt[g, 2]) - max(x0[r], gt[g, 0]) + 1
                iy = min(y1[r], gt[g, 3]) - max(y0[r], gt[g, 1]) + 1
                if ix > 0 and iy > 0:
                    inter = ix * iy
                    union = ((x1[r] - x0[r] + 1) * (y1[r] - y0[r] + 1)
                             + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter)
                    best_iou[k] = max(best_iou[k], inter / union)
        n_roots = kept
        components[k] = kept
        if best_root >= 0:
            r = best_root
            boxes[k, 0] = x0[r]
            boxes[k, 1] = y0[r]
            boxes[k, 2] = x1[r]
            boxes[k, 3] = y1[r]
            for g in range(n_gt):
                ix = min(x1[r], gt[g, 2]) - max(x0[r], gt[g, 0]) + 1
                iy = min(y1[r], gt[g, 3]) - max(y0[r], gt[g, 1]) + 1
                if ix > 0 and iy > 0:
                    inter = ix * iy
                    union = ((x1[r] - x0[r] + 1) * (y1[r] - y0[r] + 1)
                             + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter)
                    overlap = inter / union
                    largest_iou[k] = max(largest_iou[k], overlap)
                    if overlap >= need[g]:
                        largest_hit[k] = True
    return boxes, largest_iou, largest_hit, best_iou, components


@lru_cache(maxsize=1)
def _sweep_kernel() -> Callable[..., tuple[np.ndarray, ...]]:
    """:func:`_sweep_union_find` compiled by numba (a dependency of shap; compiled once, cached on
    disk); without numba, :func:`_sweep_python`."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba ships with shap
        return lambda levels, order, n_levels, gt, need: _sweep_python(levels, n_levels, gt, need)
    return njit(cache=True, nogil=True)(_sweep_union_find)


def threshold_sweep(
    heatmap: torch.Tensor | np.ndarray,
    thresholds: Sequence[float] = THRESHOLD_GRID,
    gt_boxes: torch.Tensor | Sequence[Sequence[int]] = (),
    tiny_box_rule: bool = False,
) -> ThresholdSweep:
    """Binarise ``heatmap`` at every fraction of its maximum in ``thresholds`` (pixels
    ``>= threshold * max``, exactly as :func:`heatmap_to_box`), and score the segments' boxes
    against ``gt_boxes`` -- one union-find pass over the pixels instead of one labelling per
    threshold.

    Raises:
        ValueError: the map is not 2-D or holds NaN or infinity; ``gt_boxes`` holds an invalid box.
    """
    values = _as_array(heatmap)
    check_boxes("gt_boxes", gt_boxes)
    gt = np.asarray(torch.as_tensor(gt_boxes).reshape(-1, 4).tolist(), dtype=np.int64).reshape(-1, 4)
    need = np.array([_needed_iou(box, tiny_box_rule) for box in gt.tolist()], dtype=np.float64)
    n_thresholds = len(thresholds)
    peak = values.max()
    if not peak > 0:
        return ThresholdSweep(np.full((n_thresholds, 4), -1, dtype=np.int64), np.zeros(n_thresholds),
                              np.zeros(n_thresholds, dtype=bool), np.zeros(n_thresholds),
                              np.zeros(n_thresholds, dtype=np.int64))
    cuts = np.array([threshold * peak for threshold in thresholds])  # the products heatmap_to_box compares with
    order = np.argsort(cuts, kind="stable")
    # pixel p is in the set of the k-th smallest cut iff cut_k <= value_p iff k < levels_p
    levels: np.ndarray = np.searchsorted(cuts[order], values, side="right").astype(
        np.int16 if n_thresholds < 2**15 else np.int64
    )
    pixels = np.argsort(-levels.ravel(), kind="stable")  # descending level (radix sort for int16)
    results = _sweep_kernel()(levels, pixels, n_thresholds, gt, need)
    back = np.empty_like(order)
    back[order] = np.arange(n_thresholds)
    return ThresholdSweep(*(np.asarray(r)[back] for r in results))


# --------------------------------------------------------------------------------------------
# MaxBoxAcc (Choe et al. 2020)
# --------------------------------------------------------------------------------------------


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


def iou_curves(rows: pd.DataFrame, column: str = "gt_iou") -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image ids, thresholds, ious (N, T))`` of one run's rows (:func:`localize_batch`), for
    :func:`max_box_acc_from_ious`; images in their first-seen order."""
    table = rows.pivot_table(index="image_id", columns="threshold", values=column, aggfunc="first", sort=False)
    return list(table.index), table.columns.to_numpy(dtype=np.float64), table.to_numpy(dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Intervals and the threshold choice
# --------------------------------------------------------------------------------------------


def error_interval(
    correct: Sequence[float] | np.ndarray, clusters: Sequence[object] | None = None, seed: int = 0
) -> tuple[float, float, float]:
    """``(error %, low %, high %)`` of per-image scores in [0, 1] (1 = right): a cluster bootstrap
    over ``clusters`` when the images are not independent (:func:`~gradcam_lib.stats.cluster_bootstrap_ci`),
    else :func:`~gradcam_lib.stats.wilson_ci` over the images."""
    if clusters is None:
        mean, low, high = wilson_ci(correct)
    else:
        mean, low, high = cluster_bootstrap_ci(correct, clusters, seed=seed)
    return 100 * (1 - mean), 100 * (1 - high), 100 * (1 - low)


def pick_threshold(rows: pd.DataFrame, criterion: str = "loc_gt_known") -> float:
    """The threshold with the highest mean ``criterion`` over ``rows`` (one run, one data set:
    the *calibration* split); ties go to the smallest threshold."""
    means = rows.groupby("threshold")[criterion].mean()
    return float(means.index[np.flatnonzero(means.to_numpy() == means.max())[0]])


# --------------------------------------------------------------------------------------------
# The whole protocol over a data set
# --------------------------------------------------------------------------------------------

CRITERIA = ("cls_top1", "cls_top5", "loc_top1", "loc_top5", "loc_gt_known")


def localize_batch(
    entry: ModelEntry,
    images: torch.Tensor,
    samples: Sequence[Sample],
    method: str = "gradcam",
    thresholds: Sequence[float] = (0.15,),
    top_k: int = 5,
    tiny_box_rule: bool = False,
) -> list[dict[str, Any]]:
    """Predict, map each of the ``top_k`` classes and the image's first ground-truth class, box
    each map at every threshold, and score.

    Columns of each row (one per image and threshold):

    * ``cls_top1``, ``cls_top5``, ``loc_top1``, ``loc_top5``: the CLS-LOC scores
      (:func:`image_outcome`: the share of the image's ground-truth classes that are right);
      left out when ``top_k`` is 0;
    * ``loc_gt_known``: "ground-truth-known" localisation (Zhou et al. 2016; Choe et al.'s
      GT-known): the largest segment of the map of the image's first ground-truth class matches
      one of that class's boxes, whatever the prediction;
    * ``gt_iou``, ``gt_iou_any``: that map's best IoU with those boxes, from the largest segment's
      box and from the best of all segments' boxes (MaxBoxAcc V1 / V2);
    * ``gt_class``: that first ground-truth class; ``classes``: the number of ground-truth
      classes; ``top1_class`` and its box
      (``xmin`` ... ``ymax``, NaN when there is none).
    """
    truth = torch.tensor([[sample.labels[0]] for sample in samples], device=images.device)
    # the top-k classes are chosen from the method's own forward pass (one pass for the CAMs)
    explained = attribute(method, entry.model, entry.layer, images, top_k_chooser(top_k, also=truth),
                          reduction="max_abs")
    maps, classes = explained.maps.float().cpu(), explained.targets.cpu()
    grid = tuple(float(t) for t in thresholds)
    rows = []
    for index, sample in enumerate(samples):
        labels = classes[index].tolist()
        truth_set = set(sample.labels)
        n_classes = len(sample.labels)
        known = threshold_sweep(maps[index, top_k], grid, sample.boxes_of(labels[top_k]), tiny_box_rule)
        columns: dict[str, Any] = {}
        if top_k:
            right = np.array([label in truth_set for label in labels[:top_k]])
            hits = np.zeros((top_k, len(grid)), dtype=bool)
            top1_boxes = None
            for k in range(top_k):
                if right[k] or k == 0:
                    sweep = threshold_sweep(maps[index, k], grid, sample.boxes_of(labels[k]), tiny_box_rule)
                    hits[k] = sweep.largest_hit & right[k]
                    if k == 0:
                        top1_boxes = sweep.largest_boxes
            columns = {
                "cls_top1": np.full(len(grid), right[0] / n_classes),
                "cls_top5": np.full(len(grid), right[:5].sum() / n_classes),
                "loc_top1": hits[0] / n_classes,
                "loc_top5": hits[:5].sum(axis=0) / n_classes,
            }
            assert top1_boxes is not None  # set at k = 0, which always runs
            top1 = np.where(top1_boxes < 0, np.nan, top1_boxes)
        for t, threshold in enumerate(grid):
            row: dict[str, Any] = {"image_id": sample.image_id, "threshold": threshold}
            row.update({name: float(values[t]) for name, values in columns.items()})
            row.update(
                gt_class=labels[top_k],
                loc_gt_known=bool(known.largest_hit[t]),
                gt_iou=float(known.largest_iou[t]),
                gt_iou_any=float(known.best_iou[t]),
                classes=n_classes,
            )
            if top_k:
                row.update(
                    top1_class=labels[0], **dict(zip(("xmin", "ymin", "xmax", "ymax"), top1[t].tolist(), strict=True))
                )
            rows.append(row)
    return rows


def evaluate_localization(
    entry: ModelEntry,
    dataset: Dataset,
    dataset_name: str,
    results_dir: str | Path,
    method: str = "gradcam",
    thresholds: Sequence[float] = (0.15,),
    batch_size: int = 8,
    device: str = "cpu",
    num_workers: int = 0,
    tiny_box_rule: bool = False,
    channels_last: bool = False,
    bf16: bool = False,
    top_k: int = 5,
) -> pd.DataFrame:
    """Run :func:`localize_batch` over ``dataset``, resumably, into
    ``results_dir/<model>_<method>_<dataset>_<settings hash>.csv``; returns all rows.

    ``top_k=0`` maps only the ground-truth class (GT-known and MaxBoxAcc columns; enough for a
    calibration split). GPU fast path: ``channels_last`` converts the model (in place: the memory
    format does not change results) and the batches to channels-last; ``bf16`` runs under bfloat16
    autocast (:mod:`gradcam_lib.acceleration`).
    """
    settings = {"model": entry.name, "weights": model_fingerprint(entry.model), "layer": entry.layer_name,
                "method": method, "dataset": dataset_name, "data": dataset_fingerprint(dataset),
                "thresholds": list(thresholds), "tiny_box_rule": tiny_box_rule, "bf16": bf16, "top_k": top_k,
                "scoring": "eval_clsloc"}
    path = Path(results_dir) / f"{entry.name}_{method}_{dataset_name}_{run_key(settings)}.csv"
    if channels_last:
        entry.model.to(memory_format=torch.channels_last)

    def evaluate_batch(images: torch.Tensor, samples: list[Sample]) -> list[dict[str, Any]]:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision(device, bf16):
            return localize_batch(entry, images, samples, method, thresholds, top_k, tiny_box_rule)

    rows = run_resumable(
        dataset,
        evaluate_batch,
        path,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        description=f"{entry.name} {method} {dataset_name}",
    )
    return rows.assign(model=entry.name, method=method, dataset=dataset_name)


def error_table(rows: pd.DataFrame, threshold: float = 0.15) -> pd.DataFrame:
    """Errors in % (100 - mean score over images; the devkit's error) per (dataset, model,
    method) at one threshold, with the number of images behind each row."""
    at = rows[np.isclose(rows["threshold"], threshold)]
    grouped = at.groupby(["dataset", "model", "method"], sort=False)
    criteria = [c for c in CRITERIA if c in at.columns]
    table = 100.0 * (1.0 - grouped[criteria].mean())
    table["images"] = grouped["image_id"].nunique()
    return table.reset_index()

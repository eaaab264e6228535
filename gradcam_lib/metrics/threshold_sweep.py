"""All binarisation thresholds of a map at once: one union-find sweep over its superlevel sets.

For every fraction ``t`` of a grid (Choe et al., CVPR 2020: 0.00, 0.01, ..., 0.99 of the map's
maximum), the pixels ``>= t * max`` are split into 8-connected segments, exactly as
:func:`~gradcam_lib.metrics.localization.heatmap_to_box` does at one threshold, and the segments'
boxes are scored against ground-truth boxes (IoU, the CLS-LOC match rule). Adding the pixels in
descending level to a union-find forest (a max-tree sweep) yields the segments of every threshold
in one pass, instead of one labelling per threshold (the reference, :func:`_sweep_python`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage

from gradcam_lib.datasets.boxes import Box, iou_unchecked
from gradcam_lib.metrics.localization import EIGHT_CONNECTED, as_map_array, needed_iou
from gradcam_lib.validate import check_boxes

__all__ = ["THRESHOLD_GRID", "ThresholdSweep", "threshold_sweep"]

THRESHOLD_GRID: tuple[float, ...] = tuple(i / 100 for i in range(100))
"""Choe et al.'s threshold grid: 0.00, 0.01, ..., 0.99 of each map's maximum (``i / 100`` is the
same float as the decimal literal, so 0.15 is on the grid exactly)."""


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
        segments, count = ndimage.label(levels > k, structure=EIGHT_CONNECTED)
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
) -> tuple[np.ndarray, ...]:  # pragma: no mutate block (numba compiles it; tests compare it with _sweep_python)
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
    values = as_map_array(heatmap)
    check_boxes("gt_boxes", gt_boxes)
    gt = np.asarray(torch.as_tensor(gt_boxes).reshape(-1, 4).tolist(), dtype=np.int64).reshape(-1, 4)
    need = np.array([needed_iou(box, tiny_box_rule) for box in gt.tolist()], dtype=np.float64)
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


"""Stability of a map under an attack: the true-class map before vs after, and where the new
class's map points (chapter 8).

Per successful attack and method (the columns of the chapter's rows):

* ``vanished``: the true-class map after the attack is all zero (Grad-CAM's ReLU: no positive
  evidence left for the true class);
* ``rank_corr``: Spearman correlation of the true-class map before vs after
  (:func:`gradcam_lib.metrics.occlusion.rank_correlation`: maps averaged down to 14 x 14, the size
  of the Grad-CAM paper's occlusion correlation, Table 2; ties averaged); NaN when a map is
  constant (e.g. vanished);
* ``box_iou``: IoU of the boxes of the two true-class maps, each binarised at 15 % of its maximum
  (:func:`gradcam_lib.metrics.localization.heatmap_to_box`, paper Sec. 4.1;
  :func:`gradcam_lib.datasets.boxes.iou`); 0 when only one map has a box;
* ``points_before`` / ``points_after_true`` / ``points_new``: whether the maximum point of the
  true-class map before, the true-class map after, and the new top-1 class's map after lies closer
  than 15 px (TorchRay's pointing-game tolerance, strict) to a ground-truth box of the true class
  (:func:`gradcam_lib.metrics.pointing.pointing_hit`, chapter 2).
"""

from __future__ import annotations

import torch

from gradcam_lib.datasets.boxes import iou
from gradcam_lib.metrics.localization import heatmap_to_box
from gradcam_lib.metrics.occlusion import rank_correlation
from gradcam_lib.metrics.pointing import pointing_hit

__all__ = ["box_iou", "map_stability", "points_at", "vanished"]


def points_at(heatmap: torch.Tensor, boxes: torch.Tensor, tolerance: float = 15.0) -> float:
    """Chapter 2's pointing test (:func:`~gradcam_lib.metrics.pointing.pointing_hit`: the map's
    maximum point closer than ``tolerance`` px to a box; a constant map points nowhere, a miss) as
    1.0 / 0.0; NaN when there is no box to point at (the class's boxes fell outside the crop)."""
    if len(boxes) == 0:
        return float("nan")
    return float(pointing_hit(heatmap, boxes, tolerance))


def box_iou(map_a: torch.Tensor, map_b: torch.Tensor, threshold: float = 0.15) -> float:
    """IoU of the two maps' ``threshold`` boxes; 0 when only one map has a box (the other is all
    zero: its box vanished), NaN when neither has one."""
    box_a, box_b = heatmap_to_box(map_a, threshold), heatmap_to_box(map_b, threshold)
    if box_a is None and box_b is None:
        return float("nan")
    return 0.0 if box_a is None or box_b is None else iou(box_a, box_b)


def vanished(heatmap: torch.Tensor) -> float:
    """1.0 when the map has no positive value (all zero after Grad-CAM's ReLU), else 0.0."""
    return float(not heatmap.max() > 0)


def map_stability(
    before: torch.Tensor,
    after_true: torch.Tensor,
    after_new: torch.Tensor,
    boxes: torch.Tensor,
    threshold: float = 0.15,
    tolerance: float = 15.0,
) -> dict[str, float]:
    """The module's measures of one attacked image: ``vanished``, ``rank_corr``, ``box_iou``,
    ``points_before``, ``points_after_true``, ``points_new`` (maps ``(H, W)``, ``boxes`` of the
    true class ``(N, 4)``)."""
    return {
        "vanished": vanished(after_true),
        "rank_corr": rank_correlation(before, after_true),
        "box_iou": box_iou(before, after_true, threshold),
        "points_before": points_at(before, boxes, tolerance),
        "points_after_true": points_at(after_true, boxes, tolerance),
        "points_new": points_at(after_new, boxes, tolerance),
    }

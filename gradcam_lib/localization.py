"""Weakly supervised localisation (paper Sec. 4.1) and the ILSVRC error rule.

Protocol: for each predicted class, binarise its map at ``threshold`` (15 %) of the map's maximum,
keep the largest 8-connected segment, and take its bounding box. A guess is right for
localisation when its class is a ground-truth class of the image and its box overlaps one of that
class's boxes with IoU >= min(0.5, wh / ((w + 10)(h + 10))) (the ILSVRC devkit's rule, which
relaxes the threshold only for boxes under about 90 px a side). Top-5: any of five guesses right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from gradcam_lib.datasets.base import Sample

Box = tuple[int, int, int, int]

__all__ = [
    "Box",
    "heatmap_to_box",
    "iou",
    "iou_threshold",
    "guess_is_localized",
    "image_outcome",
    "error_rates",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


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
        ValueError: the map is not 2-D or holds NaN.
    """
    values = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if values.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("heatmap holds NaN; the explanation failed upstream")
    peak = values.max()
    if not peak > 0:
        return None
    segments, count = ndimage.label(values >= threshold * peak, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(segments.ravel(), minlength=count + 1)[1:]
    largest = int(np.argmax(sizes)) + 1
    rows, cols = ndimage.find_objects(segments)[largest - 1]
    return (cols.start, rows.start, cols.stop - 1, rows.stop - 1)


def iou(box_a: Sequence[int], box_b: Sequence[int]) -> float:
    """Intersection over union of two inclusive pixel boxes (ILSVRC devkit: widths are x2 - x1 + 1)."""
    ix = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]) + 1
    iy = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]) + 1
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area_a = (box_a[2] - box_a[0] + 1) * (box_a[3] - box_a[1] + 1)
    area_b = (box_b[2] - box_b[0] + 1) * (box_b[3] - box_b[1] + 1)
    return inter / (area_a + area_b - inter)


def iou_threshold(box: Sequence[int], tiny_box_rule: bool = True) -> float:
    """IoU needed to match a ground-truth box: 0.5, or min(0.5, wh/((w+10)(h+10))) with the
    devkit's rule for tiny boxes."""
    if not tiny_box_rule:
        return 0.5
    w = box[2] - box[0] + 1
    h = box[3] - box[1] + 1
    return min(0.5, w * h / ((w + 10) * (h + 10)))


def guess_is_localized(label: int, box: Box | None, sample: Sample, tiny_box_rule: bool = True) -> bool:
    """ILSVRC rule for one guess: right class and enough overlap with one of that class's boxes."""
    if box is None or label not in sample.labels:
        return False
    return any(iou(box, gt) >= iou_threshold(gt, tiny_box_rule) for gt in sample.boxes_of(label).tolist())


def image_outcome(
    labels: Sequence[int], boxes: Sequence[Box | None], sample: Sample, tiny_box_rule: bool = True
) -> dict[str, bool]:
    """Which of the four ILSVRC criteria one image meets, from its guesses in descending score.

    Returns ``{"cls_top1", "cls_top5", "loc_top1", "loc_top5"}`` -> correct (True) or not.
    """
    labels = [int(label) for label in labels]
    right_class = [label in sample.labels for label in labels]
    localized = [guess_is_localized(label, box, sample, tiny_box_rule) for label, box in zip(labels, boxes)]
    return {
        "cls_top1": right_class[0],
        "cls_top5": any(right_class[:5]),
        "loc_top1": localized[0],
        "loc_top5": any(localized[:5]),
    }


def error_rates(outcomes: Sequence[dict[str, bool]]) -> dict[str, float]:
    """Errors in % (100 - accuracy) over images, for each criterion of :func:`image_outcome`."""
    if not outcomes:
        raise ValueError("no images were evaluated")
    keys = ("cls_top1", "cls_top5", "loc_top1", "loc_top5")
    return {key: 100.0 * (1.0 - float(np.mean([o[key] for o in outcomes]))) for key in keys}

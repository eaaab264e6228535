"""Weakly supervised localisation (Grad-CAM paper Sec. 4.1) and the ILSVRC CLS-LOC error rule.

Protocol (paper): for each predicted class, binarise its map at ``threshold`` (15 %) of the map's
maximum, keep the largest 8-connected segment, and take its bounding box (:func:`heatmap_to_box`).

Scoring = the CLS-LOC devkit's ``eval_clsloc.m`` (ILSVRC 2012-2014): a guess is right for class
``c`` of the image when its label is ``c`` and its box has IoU >= 0.5 with one of ``c``'s boxes
(the devkit tests ``ov < 0.50``; fixed, whatever the box size). An image with ``n`` ground-truth
classes scores, for each of them, "wrong unless one of the guesses is right for it", and its error
is the mean over its ``n`` classes (``e./n``); the classification error is averaged the same way
(``c./n``) (:func:`image_outcome`). Images on the devkit's blacklist are left out
(:class:`~gradcam_lib.datasets.ILSVRCValDataset`). The relaxed threshold
min(0.5, wh / ((w + 10)(h + 10))) for small boxes is the rule of the *DET* devkit
(``eval_detection.m``), not of localisation; it is kept only as the option ``tiny_box_rule=True``.

All thresholds at once and MaxBoxAcc: :mod:`gradcam_lib.metrics.threshold_sweep`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import Box, iou_unchecked
from gradcam_lib.validate import check_box, check_boxes, check_map

__all__ = [
    "CLSLOC_IOU",
    "CRITERIA",
    "EIGHT_CONNECTED",
    "as_map_array",
    "guess_is_localized",
    "heatmap_to_box",
    "image_outcome",
    "iou_threshold",
    "needed_iou",
]

CLSLOC_IOU = 0.5
"""IoU a CLS-LOC guess needs with a ground-truth box of its class (``eval_clsloc.m``)."""

CRITERIA = ("cls_top1", "cls_top5", "loc_top1", "loc_top5", "loc_gt_known")
"""The per-image scores of the protocol (1 = right, in [0, 1]; an error is 100 x (1 - their mean)):
the four of :func:`image_outcome` and the "GT-known" localisation of the ground-truth class's map
(Zhou et al. 2016; Choe et al. 2020)."""

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
"""8-connectivity of the segments (the paper's "largest connected segment")."""


def as_map_array(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """``heatmap`` as a numpy array, checked to be a finite 2-D map (:func:`~gradcam_lib.validate.check_map`)."""
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
    values = as_map_array(heatmap)
    peak = values.max()
    if not peak > 0:
        return None
    segments, count = ndimage.label(values >= threshold * peak, structure=EIGHT_CONNECTED)
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
    return needed_iou(box, tiny_box_rule)


def needed_iou(box: Sequence[int], tiny_box_rule: bool = False) -> float:
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
    return any(iou_unchecked(box, gt) >= needed_iou(gt, tiny_box_rule) for gt in truths.tolist())


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


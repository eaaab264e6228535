"""Box geometry, in the one convention of the library: ``(xmin, ymin, xmax, ymax)`` in *inclusive*
pixel indices, widths ``xmax - xmin + 1`` (the ILSVRC devkit's and VOC's; conversions to and from
continuous coordinates are in :mod:`gradcam_lib.datasets.transforms`).

:func:`iou` (the ILSVRC devkit's overlap), :func:`iobb` (ChestX-ray8's intersection over the
predicted box), :func:`box_mask` and :func:`box_fraction`. The checked functions refuse a box that
is not 4 finite numbers or is inverted; the ``*_unchecked`` forms are for boxes already checked
(inner loops).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradcam_lib.validate import check_box

__all__ = ["Box", "box_fraction", "box_mask", "intersection", "iobb", "iobb_unchecked", "iou", "iou_unchecked"]

Box = tuple[int, int, int, int]


def intersection(box_a: Sequence[int], box_b: Sequence[int]) -> int:
    """Pixels that two checked inclusive boxes share (0 when they are disjoint)."""
    ix = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]) + 1
    iy = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]) + 1
    return ix * iy if ix > 0 and iy > 0 else 0


def _area(box: Sequence[int]) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def iou(box_a: Sequence[int], box_b: Sequence[int]) -> float:
    """Intersection over union of two inclusive pixel boxes (ILSVRC devkit: widths are x2 - x1 + 1).

    Raises:
        ValueError: a box that is not 4 finite numbers or is inverted (xmin > xmax or ymin > ymax).
    """
    check_box("box_a", box_a)
    check_box("box_b", box_b)
    return iou_unchecked(box_a, box_b)


def iou_unchecked(box_a: Sequence[int], box_b: Sequence[int]) -> float:
    """:func:`iou` of boxes already checked."""
    inter = intersection(box_a, box_b)
    return inter / (_area(box_a) + _area(box_b) - inter) if inter else 0.0


def iobb(truth: Sequence[int], predicted: Sequence[int]) -> float:
    """ChestX-ray8's IoBB (Wang et al. 2017, Sec. 4 "Disease Localization"): area(truth n
    predicted) / area(predicted), inclusive pixel boxes. Raises ValueError for an invalid or
    inverted box."""
    check_box("truth", truth)
    check_box("predicted", predicted)
    return iobb_unchecked(truth, predicted)


def iobb_unchecked(truth: Sequence[int], predicted: Sequence[int]) -> float:
    """:func:`iobb` of boxes already checked."""
    return intersection(truth, predicted) / _area(predicted)


def box_mask(box: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    """A boolean ``shape`` (H, W) mask of the inclusive ``box``, clipped to the image."""
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return mask


def box_fraction(box: Sequence[int], shape: tuple[int, ...]) -> float:
    """The box's share of an image of ``shape`` (the score of a map that knows nothing, on average).
    Raises ValueError for an invalid box."""
    check_box("box", box)
    return float(box_mask(box, shape).mean())

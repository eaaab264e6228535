"""Chapter 5's localisation metrics on chest X-rays, both computed on the *positive part* of a 2-D map:

* **KTH's box share** (:func:`kth_box_share`; the KTH reproduction's chest X-ray experiment): min-max
  the map per image, keep the pixels >= 0.85 (the top 15 % of its value range), score = the share of
  those pixels inside the finding's box (0 when none is kept). Its chance level is the box's share
  of the image (:func:`gradcam_lib.datasets.boxes.box_fraction`).
* **ChestX-ray8's localisation accuracy** (Wang et al., CVPR 2017, Sec. 3.2 and Table 4): the map is
  normalised to [0, 255] and binarised at 60 and at 180; every 8-connected region of either binary
  map gives a predicted box (:func:`map_to_boxes`). The finding is localised at threshold T when one
  predicted box has IoBB > T, IoBB = area(GT n predicted) / area(predicted) ("the Intersection over
  the detected B-Box area ratio (IoBB)", :func:`gradcam_lib.datasets.boxes.iobb`); T(IoBB) in
  {0.1, 0.25, 0.5, 0.75, 0.9}. AFP counts the predicted boxes that match no ground-truth box.
  IoBB rewards small boxes: a one-pixel box inside the ground truth scores 1, so accuracy is read
  together with AFP.

Input-space maps (IG, SHAP, GradientShap) are ``(3, H, W)``; a pixel's attribution is the *sum* over
its channels (:func:`to_grey`, the registry's ``reduction="sum"``), which keeps completeness. The
mean would score identically: both metrics min-max the map. :func:`classification_auc` asks whether
a model is worth explaining (ROC AUC per finding output).
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import Box, box_fraction, box_mask, iobb_unchecked
from gradcam_lib.datasets.chestxray import FINDINGS
from gradcam_lib.methods.scopes import explanation_scope
from gradcam_lib.models import ModelEntry
from gradcam_lib.models.xray import finding_index
from gradcam_lib.validate import check_box, check_boxes, check_map

__all__ = ["CHESTXRAY8_LEVELS", "IG_TOLERANCE", "IOBB_THRESHOLDS", "KTH_THRESHOLD", "classification_auc",
           "kth_box_share", "map_to_boxes", "score_boxes", "to_grey"]

#: Sundararajan et al.'s completeness check: the relative gap must be under 5 %.
IG_TOLERANCE = 0.05
IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: ChestX-ray8's two binarisation levels on the map normalised to [0, 255].
CHESTXRAY8_LEVELS: tuple[float, ...] = (60.0, 180.0)
KTH_THRESHOLD = 0.85


def to_grey(maps: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` input-space attributions -> ``(..., H, W)``: the sum over channels
    (module docstring: keeps completeness; the mean scores identically)."""
    return maps.sum(dim=-3)


def _positive(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    values = (
        heatmap.detach().cpu().double().numpy()
        if isinstance(heatmap, torch.Tensor)
        else np.asarray(heatmap, np.float64)
    )
    check_map("heatmap", values)
    return np.clip(values, 0.0, None)


def _min_max(values: np.ndarray) -> np.ndarray | None:
    """Per-image min-max to [0, 1]; None for a constant map (nothing stands out)."""
    low, high = values.min(), values.max()
    return None if not high > low else (values - low) / (high - low)


def kth_box_share(heatmap: torch.Tensor | np.ndarray, box: Sequence[int], threshold: float = KTH_THRESHOLD
                  ) -> tuple[float, int]:
    """KTH's score: positive part, per-image min-max, keep pixels >= ``threshold``; the share of
    the kept pixels inside the inclusive ``box``.

    Returns:
        ``(share, kept pixels)``; ``(0.0, 0)`` for a map with no positive variation (an all-zero
        Grad-CAM), as KTH scored a map that keeps nothing.

    Raises:
        ValueError: a map that is not 2-D or holds NaN or infinity; an invalid or inverted ``box``.
    """
    check_box("box", box)
    values = _min_max(_positive(heatmap))
    if values is None:
        return 0.0, 0
    kept = values >= threshold
    count = int(kept.sum())
    return float((kept & box_mask(box, values.shape)).sum() / count), count


_EIGHT = np.ones((3, 3), dtype=bool)


def map_to_boxes(heatmap: torch.Tensor | np.ndarray, levels: Sequence[float] = CHESTXRAY8_LEVELS) -> list[Box]:
    """ChestX-ray8's box generator (Sec. 3.2): the positive part min-max normalised to [0, 255],
    binarised at each of ``levels`` (>= level), one box around each 8-connected region of each
    binary map; duplicates removed, in order of level then row-major position. An all-zero map
    gives no box; a map that is not 2-D or holds NaN or infinity is refused (ValueError)."""
    values = _min_max(_positive(heatmap))
    if values is None:
        return []
    boxes: list[Box] = []
    for level in levels:
        segments, _ = ndimage.label(values * 255.0 >= level, structure=_EIGHT)
        for rows, cols in ndimage.find_objects(segments):
            box = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
            if box not in boxes:
                boxes.append(box)
    return boxes


def score_boxes(heatmap: torch.Tensor, truths: list[Box], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Both metrics for every ground-truth box of one (image, finding) map, with the areas (in
    pixels) of the ground-truth box and of the smallest box that ChestX-ray8's generator drew
    (NaN when it drew none)."""
    check_boxes("truths", truths)
    predicted = map_to_boxes(heatmap)
    overlaps = np.array([[iobb_unchecked(t, p) for p in predicted] for t in truths])
    overlaps = overlaps.reshape(len(truths), len(predicted))
    area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731  inclusive pixel box
    smallest = float(min(area(p) for p in predicted)) if predicted else float("nan")
    rows = []
    for i, truth in enumerate(truths):
        share, kept = kth_box_share(heatmap, truth)
        row: dict[str, Any] = {"kth_share": share, "kth_pixels": kept, "chance": box_fraction(truth, heatmap.shape),
                               "pred_boxes": len(predicted), "box_area": area(truth), "smallest_pred_area": smallest}
        for t in thresholds:
            row[f"hit@{t}"] = bool((overlaps[i] > t).any())
            row[f"fp@{t}"] = int((~(overlaps > t).any(axis=0)).sum())
        rows.append(row)
    return rows


def classification_auc(entry: ModelEntry, dataset: Dataset[Sample], batch_size: int = 64) -> pd.DataFrame:
    """ROC AUC of each of the model's outputs that is a finding of :data:`FINDINGS`, on images
    labelled by their boxes (the stand-in; ChestX-ray14's box images are all positive): is the
    model worth explaining? Returns finding, output, auc, positives, images. The model runs inside
    :func:`~gradcam_lib.methods.scopes.explanation_scope` (its train / eval flags are restored)."""
    from sklearn.metrics import roc_auc_score

    samples = [dataset[i] for i in range(len(cast(Sized, dataset)))]
    device = next(entry.model.parameters()).device
    with explanation_scope(entry.model), torch.no_grad():
        logits = torch.cat([entry.model(torch.stack([s.image for s in samples[i : i + batch_size]]).to(device)).cpu()
                            for i in range(0, len(samples), batch_size)])
    rows = []
    for finding in FINDINGS:
        try:
            output = finding_index(entry.class_names, finding)
        except KeyError:
            continue
        truth = np.array([FINDINGS.index(finding) in s.labels for s in samples])
        auc = roc_auc_score(truth, logits[:, output].numpy()) if 0 < truth.sum() < len(truth) else float("nan")
        rows.append({"finding": finding, "output": output, "auc": auc, "positives": int(truth.sum()),
                     "images": len(samples)})
    return pd.DataFrame(rows)


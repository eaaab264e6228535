"""Weakly supervised localisation (paper Sec. 4.1) and the ILSVRC error rule.

Protocol: for each predicted class, binarise its map at ``threshold`` (15 %) of the map's maximum,
keep the largest 8-connected segment, and take its bounding box. A guess is right for
localisation when its class is a ground-truth class of the image and its box overlaps one of that
class's boxes with IoU >= min(0.5, wh / ((w + 10)(h + 10))) (the ILSVRC devkit's rule, which
relaxes the threshold only for boxes under about 90 px a side). Top-5: any of five guesses right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from gradcam_lib.acceleration import precision
from gradcam_lib.datasets.base import Sample
from gradcam_lib.explain import grad_cam_top_k, heatmaps
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import dataset_fingerprint, run_key, run_resumable

Box = tuple[int, int, int, int]

__all__ = [
    "Box",
    "heatmap_to_box",
    "iou",
    "iou_threshold",
    "guess_is_localized",
    "image_outcome",
    "localize_batch",
    "evaluate_localization",
    "error_table",
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
    tiny_box_rule: bool = True,
) -> list[dict[str, Any]]:
    """Predict, map each of the ``top_k`` classes, box each map at every threshold, and score.

    Also scores "ground-truth-known" localisation (``loc_gt_known``, Zhou et al. 2016): the map of
    the image's first ground-truth class, whatever the prediction -- localisation quality apart
    from classification.

    Returns one row per (image, threshold): the ILSVRC outcomes, ``loc_gt_known``, the top-1 class
    and its box.
    """
    truth = torch.tensor([[sample.labels[0]] for sample in samples], device=images.device)
    if method == "gradcam":
        _, classes, maps = grad_cam_top_k(entry.model, entry.layer, images, top_k, also=truth)
    else:
        with torch.no_grad():
            classes = torch.cat([entry.model(images).topk(top_k, dim=1).indices, truth], dim=1)
        maps = heatmaps(method, entry.model, entry.layer, images, classes)
    maps, classes = maps.float().cpu(), classes.cpu()
    rows = []
    for index, sample in enumerate(samples):
        labels = classes[index].tolist()
        for threshold in thresholds:
            boxes = [heatmap_to_box(maps[index, k], threshold) for k in range(top_k + 1)]
            top1_box = boxes[0] if boxes[0] is not None else (np.nan,) * 4
            rows.append(
                {
                    "image_id": sample.image_id,
                    "threshold": threshold,
                    **image_outcome(labels[:top_k], boxes[:top_k], sample, tiny_box_rule),
                    "loc_gt_known": guess_is_localized(labels[top_k], boxes[top_k], sample, tiny_box_rule),
                    "top1_class": labels[0],
                    **dict(zip(("xmin", "ymin", "xmax", "ymax"), top1_box)),
                }
            )
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
    tiny_box_rule: bool = True,
    channels_last: bool = False,
    bf16: bool = False,
) -> pd.DataFrame:
    """Run :func:`localize_batch` over ``dataset``, resumably, into
    ``results_dir/<model>_<method>_<dataset>_<settings hash>.csv``; returns all rows.

    GPU fast path: ``channels_last`` converts the model (in place: the memory format does not
    change results) and the batches to channels-last; ``bf16`` runs under bfloat16 autocast
    (:mod:`gradcam_lib.acceleration`).
    """
    settings = {"model": entry.name, "method": method, "dataset": dataset_name, "data": dataset_fingerprint(dataset),
                "thresholds": list(thresholds), "tiny_box_rule": tiny_box_rule, "bf16": bf16}
    path = Path(results_dir) / f"{entry.name}_{method}_{dataset_name}_{run_key(settings)}.csv"
    if channels_last:
        entry.model.to(memory_format=torch.channels_last)

    def evaluate_batch(images: torch.Tensor, samples: list[Sample]) -> list[dict[str, Any]]:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with precision(device, bf16):
            return localize_batch(entry, images, samples, method, thresholds, 5, tiny_box_rule)

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
    """Errors in % (100 - accuracy over images) per (dataset, model, method) at one threshold,
    with the number of images behind each row."""
    at = rows[np.isclose(rows["threshold"], threshold)]
    grouped = at.groupby(["dataset", "model", "method"], sort=False)
    table = 100.0 * (1.0 - grouped[list(CRITERIA)].mean())
    table["images"] = grouped["image_id"].nunique()
    return table.reset_index()

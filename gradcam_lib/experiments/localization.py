"""Chapter 1's run: weakly supervised localisation (Grad-CAM paper Sec. 4.1) scored with the ILSVRC
CLS-LOC rule (``eval_clsloc.m``) at every threshold of a grid, plus the GT-known and MaxBoxAcc
columns (Choe et al., CVPR 2020).

One :meth:`LocalizationExperiment.batch`: predict, map each of the ``top_k`` classes and the image's
first ground-truth class in one call of the method, box each map at every threshold at once
(:func:`~gradcam_lib.metrics.threshold_sweep.threshold_sweep`), and score
(:mod:`gradcam_lib.metrics.localization`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradcam_lib.acceleration import precision
from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import attribute
from gradcam_lib.methods import top_k as top_k_chooser
from gradcam_lib.metrics.threshold_sweep import threshold_sweep

__all__ = ["LocalizationExperiment", "LocalizationSettings"]


@dataclass(frozen=True)
class LocalizationSettings:
    """Everything that changes a localisation run's rows.

    Attributes:
        method: the explanation method's registry key (``"gradcam"``, ``"backprop"``, ...).
        thresholds: fractions of each map's maximum to binarise at (paper: 0.15).
        top_k: predicted classes mapped and boxed; 0 maps only the ground-truth class (GT-known and
            MaxBoxAcc columns; enough for a calibration split).
        tiny_box_rule: the DET devkit's relaxed IoU for small boxes instead of the CLS-LOC 0.5.
        channels_last: GPU fast path: the model (in place) and the batches in channels-last memory
            format.
        bf16: GPU fast path: bfloat16 autocast (:mod:`gradcam_lib.acceleration`); maps within a few %.
    """

    method: str = "gradcam"
    thresholds: tuple[float, ...] = (0.15,)
    top_k: int = 5
    tiny_box_rule: bool = False
    channels_last: bool = False
    bf16: bool = False


class LocalizationExperiment(Experiment[LocalizationSettings]):
    """One (model, method, data set) localisation run; rows are one per image and threshold.

    Columns of each row:

    * ``cls_top1``, ``cls_top5``, ``loc_top1``, ``loc_top5``: the CLS-LOC scores
      (:func:`~gradcam_lib.metrics.localization.image_outcome`: the share of the image's
      ground-truth classes that are right); left out when ``top_k`` is 0;
    * ``loc_gt_known``: "ground-truth-known" localisation (Zhou et al. 2016; Choe et al.'s
      GT-known): the largest segment of the map of the image's first ground-truth class matches
      one of that class's boxes, whatever the prediction;
    * ``gt_iou``, ``gt_iou_any``: that map's best IoU with those boxes, from the largest segment's
      box and from the best of all segments' boxes (MaxBoxAcc V1 / V2);
    * ``gt_class``: that first ground-truth class; ``classes``: the number of ground-truth
      classes; ``top1_class`` and its box (``xmin`` ... ``ymax``, NaN when there is none).
    """

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        settings = self.settings
        if settings.channels_last:
            self.entry.model.to(memory_format=torch.channels_last)  # in place; a no-op after the first batch
            images = images.contiguous(memory_format=torch.channels_last)
        with precision(images.device, settings.bf16):
            return self._score(images, samples)

    def _score(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        method, top_k, tiny_box_rule = self.settings.method, self.settings.top_k, self.settings.tiny_box_rule
        truth = torch.tensor([[sample.labels[0]] for sample in samples], device=images.device)
        # the top-k classes are chosen from the method's own forward pass (one pass for the CAMs)
        explained = attribute(method, self.entry.model, self.entry.layer, images,
                              top_k_chooser(top_k, also=truth), reduction="max_abs")
        maps, classes = explained.maps.float().cpu(), explained.targets.cpu()
        grid = tuple(float(t) for t in self.settings.thresholds)
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
                    row.update(top1_class=labels[0],
                               **dict(zip(("xmin", "ymin", "xmax", "ymax"), top1[t].tolist(), strict=True)))
                rows.append(row)
        return rows

"""Chapter 2's run: the pointing game (Zhang et al., Excitation Backprop, 2016; Grad-CAM paper
Sec. 4.3) as TorchRay's benchmark plays it, with the centre baseline and the paper's top-k variant
with rejection.

One :meth:`PointingExperiment.batch`: for each method, maps of every ground-truth class (rows
``kind="gt"``) and, for the methods in ``rejection_methods``, of the ``top_k`` predictions
(``kind="topk"``, with ``present`` and the map maximum ``peak`` for the rejection rule), in one call
per method; maps of :data:`~gradcam_lib.metrics.pointing.SMOOTHED_METHODS` are smoothed first
(:func:`~gradcam_lib.metrics.pointing.smooth_saliency`). The centre baseline adds a ``kind="gt"``
row per pair with ``method="centre"``. Hit rule: :func:`~gradcam_lib.metrics.pointing.pointing_hit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import attribute
from gradcam_lib.metrics.pointing import (
    SMOOTHED_METHODS,
    centre_point,
    is_difficult,
    pointing_classes,
    pointing_hit,
    smooth_saliency,
    within_tolerance,
)
from gradcam_lib.validate import check_boxes

__all__ = ["PointingExperiment", "PointingSettings"]


@dataclass(frozen=True)
class PointingSettings:
    """Everything that changes a pointing run's rows.

    Attributes:
        methods: the registry keys of the methods played.
        rejection_methods: those also mapped for the ``top_k`` predictions (the rejection variant).
        top_k: predictions mapped per image for the rejection variant.
        tolerance: a hit is a distance < ``tolerance`` pixels to a box (TorchRay: 15).
        smooth: TorchRay's Gaussian smoothing of input-space maps, sigma as a fraction of the
            longer side (0.02).
    """

    methods: tuple[str, ...] = ("gradcam",)
    rejection_methods: tuple[str, ...] = ()
    top_k: int = 5
    tolerance: float = 15
    smooth: float = 0.02


class PointingExperiment(Experiment[PointingSettings]):
    """One (model, data set) pointing run over all methods; rows
    ``image_id, method, kind, rank, label, present, difficult, hit, peak``."""

    tag = "pointing"

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        settings, entry = self.settings, self.entry
        top_k, tolerance = settings.top_k, settings.tolerance
        height, width = images.shape[-2:]
        pairs = [pointing_classes(s) for s in samples]
        width_gt = max(1, max(len(p) for p in pairs))
        gt = torch.tensor([(p + p[:1] * width_gt)[:width_gt] if p else [0] * width_gt for p in pairs],
                          device=images.device)
        centre = centre_point(height, width)
        rows: list[dict[str, Any]] = []
        for index, sample in enumerate(samples):
            for label in pairs[index]:
                boxes = check_boxes(f"the boxes of class {label} in sample {sample.image_id!r}", sample.boxes_of(label))
                hit = within_tolerance(centre, boxes, tolerance)
                rows.append(_row(sample, "centre", "gt", -1, label, True, hit, float("nan")))
        for method in settings.methods:
            with_topk = method in settings.rejection_methods
            # the ground-truth classes, then the top-k chosen from the method's own forward pass
            choose = (lambda logits: torch.cat([gt, logits.topk(top_k, dim=1).indices], dim=1)) if with_topk else gt
            explained = attribute(method, entry.model, entry.layer, images, choose, reduction="max_abs")
            maps, targets = explained.maps, explained.targets
            if method in SMOOTHED_METHODS:
                maps = smooth_saliency(maps.detach(), settings.smooth)
            maps, targets = maps.detach().cpu(), targets.cpu()
            for index, sample in enumerate(samples):
                for k, label in enumerate(pairs[index]):
                    hit = pointing_hit(maps[index, k], sample.boxes_of(label), tolerance)
                    rows.append(_row(sample, method, "gt", -1, label, True, hit, float(maps[index, k].max())))
                if with_topk:
                    for rank in range(top_k):
                        k = width_gt + rank
                        label = int(targets[index, k])
                        present = label in pairs[index]
                        hit = present and pointing_hit(maps[index, k], sample.boxes_of(label), tolerance)
                        rows.append(_row(sample, method, "topk", rank, label, present, hit,
                                         float(maps[index, k].max())))
        return rows


def _row(
    sample: Sample, method: str, kind: str, rank: int, label: int, present: bool, hit: bool, peak: float
) -> dict[str, Any]:
    return {
        "image_id": sample.image_id,
        "method": method,
        "kind": kind,
        "rank": rank,
        "label": label,
        "present": present,
        "difficult": present and is_difficult(sample, label),
        "hit": hit,
        "peak": peak,
    }

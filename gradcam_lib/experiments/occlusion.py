"""Chapter 3's run: occlusion, rank correlation, Average Drop / Increase in Confidence, deletion /
insertion, per image, resumably (:class:`~gradcam_lib.experiments.base.Experiment`).

Protocols: the occlusion map of Zeiler & Fergus (2014) and its Spearman rank correlation with a
method's map (Grad-CAM paper Sec. 5.2 / Table 2); Grad-CAM++'s Average Drop and Increase in
Confidence (Chattopadhyay et al. 2018, Sec. 6.1); RISE's deletion and insertion (Petsiuk et al.
2018, Sec. 4.1); ROAD's MoRF / LeRF curves with noisy linear imputation (Rong et al. 2022, Sec. 4).
The metrics are in :mod:`gradcam_lib.metrics.occlusion`, :mod:`~gradcam_lib.metrics.confidence`,
:mod:`~gradcam_lib.metrics.deletion` and :mod:`~gradcam_lib.metrics.road`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import maps as method_maps
from gradcam_lib.metrics.confidence import explanation_map_confidence
from gradcam_lib.metrics.deletion import curve_auc, deletion_insertion_curves
from gradcam_lib.metrics.occlusion import argsort_correlation, occlusion_map, rank_correlation
from gradcam_lib.metrics.road import combined_score, road_curves

__all__ = ["OcclusionExperiment", "OcclusionSettings"]


@dataclass(frozen=True)
class OcclusionSettings:
    """Everything that changes the rows of :class:`OcclusionExperiment`.

    Attributes:
        methods: correlated with the occlusion map (:func:`rank_correlation` at ``size`` x ``size``).
        causal_methods: also Y / O of their explanation map and deletion / insertion curves.
        patch, stride, fill: the occlusion window (KTH: 45, 1; ``fill = 0`` is the data mean).
        occlusion_batch: occluded images per forward pass; backend: ``ours`` or ``captum`` (both give
            the same map; they are in the run key all the same, as every field is).
        size: the maps are compared at ``size`` x ``size``.
        n_steps: deletion / insertion steps (RISE: 224).
        road_percentages: ROAD's shares removed, in % (empty: no ROAD columns); road_noise: its
            imputation noise; seed: the imputation noise's seed (with the image id and the method:
            a row does not depend on the other images of its batch).
    """

    methods: tuple[str, ...] = ("gradcam", "guided_gradcam", "guided_backprop")
    causal_methods: tuple[str, ...] = ("gradcam", "gradcam_pp")
    patch: int = 45
    stride: int = 1
    fill: float = 0.0
    occlusion_batch: int = 128
    size: int = 14
    n_steps: int = 32
    backend: str = "ours"
    road_percentages: tuple[float, ...] = ()
    road_noise: float = 0.01
    seed: int = 0


def _road_generator(seed: int, image_id: str, method: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{image_id}:{method}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class OcclusionExperiment(Experiment[OcclusionSettings]):
    """For the top-1 class of each image: the occlusion map, then per method one row with its
    :func:`rank_correlation` (and KTH's :func:`argsort_correlation`) with the occlusion map (NaN for
    a method only in ``causal_methods``); for ``causal_methods`` also ``y`` / ``o``
    (:func:`explanation_map_confidence`), the deletion / insertion curves (columns ``deletion_<k>``,
    ``insertion_<k>``) and their AUCs (:func:`curve_auc`), and with ``road_percentages`` ROAD's
    curves (``road_morf_<k>``, ``road_lerf_<k>``: the class probability with the k-th share of the
    most / least relevant pixels imputed), their means ``road_morf`` (lower is better), ``road_lerf``
    (higher is better) and ``road_combined``. Input-space maps are reduced to 2-D by
    the maximum magnitude over colour channels (``reduction="max_abs"``, Simonyan et al. 2014)."""

    tag = "occlusion"

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        s, entry = self.settings, self.entry
        with torch.no_grad():
            targets = entry.model(images).argmax(1)
        occlusion = occlusion_map(entry.model, images, targets, s.patch, s.stride, s.fill, s.occlusion_batch,
                                  s.backend).cpu()
        rows: list[dict[str, Any]] = []
        for method in dict.fromkeys([*s.methods, *s.causal_methods]):
            maps = method_maps(method, entry.model, entry.layer, images, targets, reduction="max_abs").detach()
            extra: list[dict[str, Any]] = [{} for _ in samples]
            if method in s.causal_methods:
                y, o = explanation_map_confidence(entry.model, images, targets, maps, entry.transform.mean,
                                                  entry.transform.std)
                deletion, insertion = deletion_insertion_curves(entry.model, images, targets, maps, s.n_steps)
                road = self._road(images, targets, maps, samples, method)
                for i in range(len(samples)):
                    extra[i] = {"y": float(y[i]), "o": float(o[i]), "deletion_auc": float(curve_auc(deletion[i])),
                                "insertion_auc": float(curve_auc(insertion[i])),
                                **{f"deletion_{k}": float(v) for k, v in enumerate(deletion[i])},
                                **{f"insertion_{k}": float(v) for k, v in enumerate(insertion[i])}, **road[i]}
            maps = maps.cpu()
            correlates = method in s.methods
            for i, sample in enumerate(samples):
                rows.append({
                    "image_id": sample.image_id,
                    "method": method,
                    "target": int(targets[i]),
                    "rank_correlation": rank_correlation(maps[i], occlusion[i], s.size) if correlates else np.nan,
                    "kth_argsort": argsort_correlation(maps[i], occlusion[i], s.size) if correlates else np.nan,
                    **extra[i],
                })
        return rows

    def _road(self, images: torch.Tensor, targets: torch.Tensor, saliency: torch.Tensor, samples: Sequence[Sample],
              method: str) -> list[dict[str, float]]:
        """ROAD's columns per image, the batch imputed together; each image's noise comes from its own
        generator (MoRF's draws first, then LeRF's), so a row does not depend on its batch."""
        s = self.settings
        if not s.road_percentages:
            return [{} for _ in samples]
        streams = [_road_generator(s.seed, sample.image_id, method) for sample in samples]
        batch = len(s.road_percentages) * len(samples)
        morf, lerf = (road_curves(self.entry.model, images, targets, saliency, s.road_percentages, order, s.road_noise,
                                  streams, batch=batch).cpu() for order in ("morf", "lerf"))
        combined = combined_score(morf, lerf)
        return [{"road_morf": float(morf[i].mean()), "road_lerf": float(lerf[i].mean()),
                 "road_combined": float(combined[i]),
                 **{f"road_morf_{k}": float(v) for k, v in enumerate(morf[i])},
                 **{f"road_lerf_{k}": float(v) for k, v in enumerate(lerf[i])}} for i in range(len(samples))]

"""Chapter 5's run: for every ground-truth box of every image, each method's map of the box's
finding, scored with KTH's box share and ChestX-ray8's IoBB protocol
(:mod:`gradcam_lib.metrics.chestxray`).

The maps come from the method registry (:func:`gradcam_lib.methods.attribute`, channels summed:
``reduction="sum"``, which keeps IG's and SHAP's completeness). What this module adds is the
chapter's settings of each method (:func:`method_options`): Integrated Gradients is converged per
(image, finding) map (:func:`gradcam_lib.methods.attributions.converged_ig`: the first step count of a
schedule whose completeness gap is under 5 %, Sundararajan et al. 2017), with two baselines named by
what they are in pixels (:data:`IG_METHODS`, :func:`ig_baseline`): the zero tensor of the
ImageNet-normalised space is the *mean colour* (a grey; KTH's "zero baseline"), the *black* image is
``(0 - mean) / std``. GradientShap runs with one mean-colour baseline (as KTH), SHAP with reference
X-rays. Every row carries IG's gap and steps (``ig_gap``, ``ig_steps``; NaN for other methods).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.chestxray import FINDINGS
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import attribute, canonical_key
from gradcam_lib.methods import labels as method_labels
from gradcam_lib.methods.attributions import black_baseline
from gradcam_lib.metrics.chestxray import IG_TOLERANCE, IOBB_THRESHOLDS, score_boxes
from gradcam_lib.models import ModelEntry
from gradcam_lib.models.xray import finding_index

__all__ = ["IG_BASELINES", "IG_METHODS", "XRAY_METHODS", "AttributionSettings", "ChestXrayExperiment",
           "ChestXraySettings", "ig_baseline", "method_maps", "method_options"]

#: The Integrated Gradients methods of the chapter: :func:`gradcam_lib.methods.attributions.converged_ig`
#: (registry key ``converged_ig``) with these baselines (:func:`ig_baseline`): ``mean_colour`` is
#: the zero tensor of the normalised input space (KTH's "zero baseline": for ImageNet statistics
#: the mean colour (0.485, 0.456, 0.406), a grey); ``black`` is pixel value 0.
IG_METHODS: dict[str, str] = {"ig_mean_colour": "mean_colour", "ig_black": "black"}
#: The chapter's methods and labels: registry keys (``gradcam`` is ``grad_cam``, ``shap`` is
#: ``shap_expected_gradients``: :mod:`gradcam_lib.methods`) and the two IG baselines; GradientShap
#: runs with the mean-colour baseline.
XRAY_METHODS: dict[str, str] = {
    **method_labels(("gradcam", "gradcam_pp")),
    "ig_mean_colour": "IG (mean-colour baseline)",
    "ig_black": "IG (black baseline)",
    "gradient_shap": "GradientShap (mean-colour baseline)",
    **method_labels(("shap",)),
}
IG_BASELINES: tuple[str, ...] = ("mean_colour", "black")


@dataclass(frozen=True)
class AttributionSettings:
    """Settings of the input-space methods. ``ig_steps``: the step schedule of ``converged_ig``
    (each map gets the first count whose completeness gap is under ``ig_tolerance``; the last when
    none is). ``background``: SHAP's reference images (required for ``shap``); captum's
    GradientShap uses one mean-colour baseline (zero in normalised space), as KTH did."""

    ig_steps: tuple[int, ...] = (32, 64, 128, 256)
    ig_tolerance: float = IG_TOLERANCE
    ig_internal_batch_size: int | None = None
    gradient_shap_samples: int = 20
    shap_samples: int = 50
    seed: int = 0
    background: torch.Tensor | None = None

    def key(self) -> dict[str, Any]:
        """JSON-able identity (the background by its shape and sum) for result file names."""
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "background"}
        if self.background is not None:
            settings["background"] = [list(self.background.shape), float(self.background.double().sum())]
        return settings


def ig_baseline(name: str, transform: ImageTransform, images: torch.Tensor) -> torch.Tensor:
    """The IG baseline ``name`` of :data:`IG_BASELINES` in the model's input space, shaped like
    ``images``: ``mean_colour`` = zeros (the normalisation's mean colour), ``black`` = pixel 0,
    i.e. ``(0 - mean) / std`` per channel."""
    if name == "mean_colour":
        return torch.zeros_like(images)
    if name == "black":
        return black_baseline(tuple(transform.mean), tuple(transform.std), images)
    raise ValueError(f"unknown IG baseline {name!r}; choose one of {', '.join(IG_BASELINES)}")


def method_options(method: str, transform: ImageTransform, images: torch.Tensor, settings: AttributionSettings
                   ) -> tuple[str, dict[str, Any]]:
    """The registry key of ``method`` and the chapter's settings of it as the function's options."""
    if method in IG_METHODS:
        return "converged_ig", {"baseline": ig_baseline(IG_METHODS[method], transform, images),
                                "steps": settings.ig_steps, "tolerance": settings.ig_tolerance,
                                "internal_batch_size": settings.ig_internal_batch_size}
    key = canonical_key(method)
    if key == "gradient_shap":  # seeds and restores both torch's and numpy's RNGs (captum draws from both)
        return key, {"baselines": ig_baseline("mean_colour", transform, images[:1]),
                     "n_samples": settings.gradient_shap_samples, "seed": settings.seed}
    if key == "shap_expected_gradients":
        if settings.background is None:
            raise ValueError(f"method {method!r} needs AttributionSettings.background (reference images)")
        return key, {"background": settings.background.to(images.device), "n_samples": settings.shap_samples,
                     "seed": settings.seed}
    return key, {}


def method_maps(method: str, entry: ModelEntry, images: torch.Tensor, targets: torch.Tensor,
                settings: AttributionSettings) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(maps (B, H, W), IG gaps (B,) or None, IG steps (B,) or None)`` of one method for
    ``targets (B,)`` (model output indices): :func:`~gradcam_lib.methods.attribute` with
    :func:`method_options` and ``reduction="sum"`` (signed for the input-space methods,
    non-negative for the CAMs)."""
    key, options = method_options(method, entry.transform, images, settings)
    explained = attribute(key, entry.model, entry.layer, images, targets, reduction="sum", **options)
    return explained.maps, explained.info.get("gaps"), explained.info.get("steps")


@dataclass(frozen=True)
class ChestXraySettings:
    """The chapter's run: ``methods`` (keys of :data:`XRAY_METHODS`), their ``attribution``
    settings and ChestX-ray8's ``thresholds`` T(IoBB)."""

    methods: tuple[str, ...] = tuple(XRAY_METHODS)
    attribution: AttributionSettings = AttributionSettings()
    thresholds: tuple[float, ...] = IOBB_THRESHOLDS


class ChestXrayExperiment(Experiment[ChestXraySettings]):
    """One row per (ground-truth box, method): the finding, the model output it was mapped to
    (:func:`~gradcam_lib.models.xray.finding_index`), the model's probability for it, KTH's share,
    ChestX-ray8's hits and false positives per T(IoBB) (:func:`~gradcam_lib.metrics.chestxray.score_boxes`),
    and IG's completeness gap and steps. Each method runs once per (image, finding), for the output
    of that finding."""

    tag = "boxes"

    def labels(self) -> dict[str, Any]:
        """Nothing beyond ``model`` and ``dataset``: the rows carry their own ``method``."""
        return {}

    def key(self) -> dict[str, Any]:
        """The template's key, SHAP's reference images by shape and sum (:meth:`AttributionSettings.key`)."""
        key = super().key()
        key["attribution"] = self.settings.attribution.key()
        return key

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        entry, settings = self.entry, self.settings
        pairs = sorted({(i, int(label)) for i, s in enumerate(samples) for label in s.box_labels.tolist()})
        targets = torch.tensor([finding_index(entry.class_names, FINDINGS[label]) for _, label in pairs],
                               dtype=torch.long, device=images.device)
        batch = images[[i for i, _ in pairs]]
        with torch.no_grad():
            probs = torch.sigmoid(entry.model(batch).gather(1, targets[:, None])[:, 0]).cpu()
        rows = []
        for method in settings.methods:
            maps, gaps, used = method_maps(method, entry, batch, targets, settings.attribution)
            maps = maps.detach().cpu()
            for k, (i, label) in enumerate(pairs):
                truths = [tuple(b) for b in samples[i].boxes_of(label).tolist()]
                convergence = {"ig_gap": float(gaps[k]) if gaps is not None else float("nan"),
                               "ig_steps": int(used[k]) if used is not None else float("nan")}
                scored = score_boxes(maps[k], truths, settings.thresholds)
                for box_index, (truth, scores) in enumerate(zip(truths, scored, strict=True)):
                    rows.append({"image_id": samples[i].image_id, "finding": FINDINGS[label], "box": box_index,
                                 "output": int(targets[k]), "prob": float(probs[k]), "method": method,
                                 **dict(zip(("xmin", "ymin", "xmax", "ymax"), truth, strict=True)),
                                 **scores, **convergence})
        return rows

    def with_seed(self, seed: int, methods: Sequence[str] | None = None) -> ChestXrayExperiment:
        """The same run with the Monte Carlo methods' ``seed`` replaced (and optionally fewer
        ``methods``): GradientShap's random points re-drawn, same images, same batches."""
        attribution = dataclasses.replace(self.settings.attribution, seed=seed)
        settings = dataclasses.replace(self.settings, attribution=attribution,
                                       methods=tuple(methods) if methods is not None else self.settings.methods)
        return ChestXrayExperiment(self.entry, self.dataset, self.dataset_name, settings)

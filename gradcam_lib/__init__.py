"""gradcam_lib: Grad-CAM (Selvaraju et al., ICCV 2017), its relatives and the evaluation protocols
of the book, batched, tested against captum, pytorch-grad-cam and closed forms.

    >>> from gradcam_lib import grad_cam, load_model
    >>> from gradcam_lib.datasets.samples import load_raw_photos
    >>> entry = load_model("efficientnet_lite0")  # shipped weights; pretrained=False: random ones
    >>> images = entry.transform(load_raw_photos()[0].image)[0][None]  # PIL image -> (1, 3, 224, 224)
    >>> grad_cam(entry.model, entry.layer, images, [[285, 281]]).shape  # two classes, one pass
    torch.Size([1, 2, 224, 224])

The public surface, importable from here (loaded on first use, so ``import gradcam_lib`` stays
cheap; ``_PUBLIC`` names each one's module):

* explanations (:mod:`~gradcam_lib.explain`): ``grad_cam``, ``grad_cam_pp``, ``grad_cam_top_k``,
  ``input_gradient``, ``guided_backprop``, ``guided_grad_cam``, ``heatmaps``,
  ``explanation_scope``; (:mod:`~gradcam_lib.attributions`): ``integrated_gradients``,
  ``converged_integrated_gradients``, ``completeness_gap``;
* the method registry (:mod:`~gradcam_lib.methods`): ``maps``, ``attribute``, ``method``,
  ``register_method`` -- every method by its function's name (``maps("grad_cam", model, layer,
  images, targets, reduction="max_abs")``; older keys such as ``"gradcam"`` are aliases);
* models and data: ``load_model`` (``MODEL_NAMES`` in :mod:`~gradcam_lib.models`: efficientnet_lite0
  / lite2 offline, vgg16, alexnet, googlenet, resnet50, densenet121), ``build_dataset``, ``Sample``;
* metrics: ``heatmap_to_box``, ``iou``, ``max_box_acc``, ``pointing_hit``, ``rank_correlation``,
  ``occlusion_map``;
* statistics, runs, claims: ``mcnemar``, ``paired_difference``, ``cluster_bootstrap_ci``,
  ``wilson_ci``, ``run_resumable``, ``Claims``.

Figures are in :mod:`gradcam_lib.report.viz` (``show_overlay``, ``show_guided``, ``draw_box``); the README's
"Using the library" section shows a whole session.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC: dict[str, str] = {
    # explanations
    "explanation_scope": "methods",
    "grad_cam": "methods",
    "grad_cam_pp": "methods",
    "grad_cam_top_k": "methods",
    "guided_backprop": "methods",
    "guided_grad_cam": "methods",
    "input_gradient": "methods",
    "heatmaps": "methods",
    "integrated_gradients": "methods",
    # the method registry
    "attribute": "methods",
    "maps": "methods",
    "method": "methods",
    "register_method": "methods",
    "completeness_gap": "methods",
    "converged_integrated_gradients": "methods",
    # models and data
    "load_model": "models",
    "build_dataset": "datasets",
    "Sample": "datasets",
    # metrics
    "heatmap_to_box": "localization",
    "iou": "localization",
    "max_box_acc": "localization",
    "pointing_hit": "pointing",
    "rank_correlation": "faithfulness",
    "occlusion_map": "faithfulness",
    # statistics, runs, claims
    "mcnemar": "stats",
    "paired_difference": "stats",
    "cluster_bootstrap_ci": "stats",
    "wilson_ci": "stats",
    "run_resumable": "results",
    "Claims": "report.claims",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcam_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gradcam_lib.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

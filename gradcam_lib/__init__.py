"""gradcam_lib: Grad-CAM (Selvaraju et al., ICCV 2017), its relatives and the evaluation protocols
of the book, batched, tested against captum, pytorch-grad-cam and closed forms.

    >>> from gradcam_lib import grad_cam, load_model
    >>> from gradcam_lib.datasets.samples import load_raw_photos
    >>> entry = load_model("efficientnet_lite0")  # shipped weights; pretrained=False: random ones
    >>> images = entry.transform(load_raw_photos()[0].image)[0][None]  # PIL image -> (1, 3, 224, 224)
    >>> grad_cam(entry.model, entry.layer, images, [[285, 281]]).shape  # two classes, one pass
    torch.Size([1, 2, 224, 224])

The public surface, importable from here (loaded on first use, so ``import gradcam_lib`` stays
cheap; ``_PUBLIC`` names each one's module). The package is layered, and each layer only imports
the ones above it in this list (``tests/test_layers.py`` checks it):

* :mod:`~gradcam_lib.datasets` -- ``Sample``, box geometry (``iou``, ``iobb``), readers and
  ``build_dataset`` (every data set by name);
* :mod:`~gradcam_lib.models` -- ``load_model`` (every network by name: ImageNet, VOC, MNIST, X-ray);
* :mod:`~gradcam_lib.methods` -- the method registry (``maps``, ``attribute``, ``method``,
  ``register_method``; keys are function names, ``"gradcam"`` and other old keys are aliases) and
  the methods: ``grad_cam``, ``grad_cam_pp``, ``grad_cam_top_k``, ``input_gradient``,
  ``guided_backprop``, ``guided_grad_cam``, ``heatmaps``, ``integrated_gradients``,
  ``converged_integrated_gradients``, ``completeness_gap``; ``explanation_scope``;
* :mod:`~gradcam_lib.metrics` -- ``heatmap_to_box``, ``max_box_acc``, ``pointing_hit``,
  ``occlusion_map``, ``rank_correlation``, ``average_drop``, ``increase_in_confidence``,
  ``deletion_insertion_curves``, ``curve_auc``, ``fidelity``, ``contrastivity``, ``map_to_boxes``;
* :mod:`~gradcam_lib.attacks` -- FGSM / PGD and the one-pixel attack;
* :mod:`~gradcam_lib.results` -- ``run_resumable`` (exactly-once resumable runs);
  :mod:`~gradcam_lib.experiments` -- ``Experiment``, the template of every chapter's run;
* :mod:`~gradcam_lib.report` -- ``Table``, ``side_by_side``, ``Claims``; figures in
  :mod:`gradcam_lib.report.viz` (``show_overlay``, ``show_guided``, ``draw_box``);
* :mod:`~gradcam_lib.stats` -- ``mcnemar``, ``paired_difference``, ``cluster_bootstrap_ci``,
  ``wilson_ci``.

The README's "Using the library" section shows a whole session.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC: dict[str, str] = {
    # data and models
    "Sample": "datasets",
    "build_dataset": "datasets",
    "iou": "datasets.boxes",
    "iobb": "datasets.boxes",
    "load_model": "models",
    # explanations and their registry
    "attribute": "methods",
    "completeness_gap": "methods",
    "converged_integrated_gradients": "methods",
    "explanation_scope": "methods",
    "grad_cam": "methods",
    "grad_cam_pp": "methods",
    "grad_cam_top_k": "methods",
    "guided_backprop": "methods",
    "guided_grad_cam": "methods",
    "heatmaps": "methods",
    "input_gradient": "methods",
    "integrated_gradients": "methods",
    "maps": "methods",
    "method": "methods",
    "register_method": "methods",
    # metrics
    "average_drop": "metrics.confidence",
    "contrastivity": "metrics.fidelity",
    "curve_auc": "metrics.deletion",
    "deletion_insertion_curves": "metrics.deletion",
    "fidelity": "metrics.fidelity",
    "heatmap_to_box": "metrics.localization",
    "increase_in_confidence": "metrics.confidence",
    "map_to_boxes": "metrics.chestxray",
    "max_box_acc": "metrics.max_box_acc",
    "occlusion_map": "metrics.occlusion",
    "pointing_hit": "metrics.pointing",
    "rank_correlation": "metrics.occlusion",
    # runs, experiments, report, statistics
    "run_resumable": "results",
    "Experiment": "experiments",
    "Claims": "report",
    "Table": "report",
    "side_by_side": "report",
    "cluster_bootstrap_ci": "stats",
    "mcnemar": "stats",
    "paired_difference": "stats",
    "wilson_ci": "stats",
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

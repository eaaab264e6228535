"""gradcam_lib: Grad-CAM (Selvaraju et al., ICCV 2017), its relatives and the evaluation protocols
of the book, batched, tested against captum, pytorch-grad-cam and closed forms.

    >>> from gradcam_lib import load_model, grad_cam
    >>> entry = load_model("efficientnet_lite0")
    >>> maps = grad_cam(entry.model, entry.layer, images, torch.tensor([[285, 281]]))  # (B, K, H, W)

The public functions are importable from here (loaded on first use, so ``import gradcam_lib`` stays
cheap); each lives in the module named in ``_PUBLIC``.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC: dict[str, str] = {
    # explanations
    "explanation_scope": "explain",
    "grad_cam": "explain",
    "grad_cam_pp": "explain",
    "grad_cam_top_k": "explain",
    "guided_backprop": "explain",
    "guided_grad_cam": "explain",
    "input_gradient": "explain",
    "heatmaps": "explain",
    "integrated_gradients": "attributions",
    "completeness_gap": "attributions",
    "converged_integrated_gradients": "attributions",
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
    "Claims": "claims",
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

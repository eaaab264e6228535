"""Explanation methods, one registry (:mod:`~gradcam_lib.methods.registry`) and the modules that
register into it:

* :mod:`~gradcam_lib.methods.scopes`: state that is always restored (eval mode, requires_grad,
  hooks, the guided ReLU rule);
* :mod:`~gradcam_lib.methods.arguments`: ``targets``, ``layer`` and ``images`` checked before the
  forward pass;
* :mod:`~gradcam_lib.methods.cam`: Grad-CAM, Grad-CAM++ (layer space, K classes from one pass);
* :mod:`~gradcam_lib.methods.gradients`: Backprop, Guided Backprop, Guided Grad-CAM (input space);
* :mod:`~gradcam_lib.methods.attributions`: Integrated Gradients and SHAP (captum), loaded on first
  use.

Dependencies go down this list: the registry knows no method, a method module knows the registry.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradcam_lib.methods.arguments import Classes, Layer, Targets
from gradcam_lib.methods.cam import grad_cam, grad_cam_pp, grad_cam_top_k
from gradcam_lib.methods.gradients import HEATMAP_METHODS, guided_backprop, guided_grad_cam, heatmaps, input_gradient
from gradcam_lib.methods.registry import (
    ALIASES,
    Attribution,
    Chooser,
    Method,
    Reduction,
    attribute,
    canonical_key,
    labels,
    maps,
    method,
    method_keys,
    reduce_channels,
    register_method,
    top_k,
)
from gradcam_lib.methods.scopes import explanation_scope, guided_relus, layer_capture

_ATTRIBUTIONS = (
    "black_baseline",
    "completeness_gap",
    "converged_ig",
    "converged_integrated_gradients",
    "first_class_converged_ig",
    "gradient_shap",
    "integrated_gradients",
    "shap_expected_gradients",
)

__all__ = [
    "ALIASES",
    "HEATMAP_METHODS",
    "Attribution",
    "Chooser",
    "Classes",
    "Layer",
    "Method",
    "Reduction",
    "Targets",
    "attribute",
    "canonical_key",
    "explanation_scope",
    "grad_cam",
    "grad_cam_pp",
    "grad_cam_top_k",
    "guided_backprop",
    "guided_grad_cam",
    "guided_relus",
    "heatmaps",
    "input_gradient",
    "labels",
    "layer_capture",
    "maps",
    "method",
    "method_keys",
    "reduce_channels",
    "register_method",
    "top_k",
    *_ATTRIBUTIONS,
]


def __getattr__(name: str) -> Any:
    """IG and SHAP from :mod:`~gradcam_lib.methods.attributions` on first use (it imports captum)."""
    if name in _ATTRIBUTIONS:
        return getattr(importlib.import_module("gradcam_lib.methods.attributions"), name)
    raise AttributeError(f"module 'gradcam_lib.methods' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The loaded names and the lazy ones (so that ``dir()`` and autodoc see IG and SHAP too)."""
    return sorted({*globals(), *__all__})

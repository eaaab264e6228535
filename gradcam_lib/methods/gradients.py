"""Input-space maps: the gradient ('Backprop', Simonyan et al. 2014), Guided Backprop
(Springenberg et al. 2015) and Guided Grad-CAM (the paper's Sec. 3.1: Guided Backprop times the
up-sampled Grad-CAM map), ``(B, [K,] C, H, W)``, under :func:`~gradcam_lib.methods.scopes.explanation_scope`.

Speed: K classes share one forward pass and one batched backward pass
(:func:`~gradcam_lib.methods.cam.class_gradients`). Guided Grad-CAM takes both of its halves from
one forward pass: guided and plain rectifiers compute the same forward values and differ only in
their backward rule, so the plain backward from the scores to the layer (Grad-CAM's dy^c/dA) and
the guided backward to the input (Guided Backprop) share it (:meth:`guided_relus.plain_backward`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from gradcam_lib.methods.arguments import Choice, Classes, Layer, checked_batch, logits_of, resolve_layer
from gradcam_lib.methods.cam import _class_maps, _grad_cam_weights, class_gradients, grad_cam
from gradcam_lib.methods.registry import labels, register_method
from gradcam_lib.methods.registry import maps as _registry_maps
from gradcam_lib.methods.scopes import _Capture, explanation_scope, guided_relus, layer_capture

# --------------------------------------------------------------------------------------------
# Input-space maps
# --------------------------------------------------------------------------------------------


def _input_maps(
    model: nn.Module, images: torch.Tensor, targets: Classes, guided: bool, layer: Layer | None = None
) -> torch.Tensor:
    """One forward pass (rectifiers guided if ``guided``), then the input gradients of the K
    chosen classes from one batched backward; with a ``layer``, times the upsampled Grad-CAM map of
    the same classes, whose layer gradients come from the same forward pass by the plain rule."""
    images = checked_batch(model, images, spatial=layer is not None)
    choice = Choice(targets, images.shape[0], images.device)
    rectifiers = guided_relus()
    capturing: AbstractContextManager[_Capture | None] = (
        nullcontext() if layer is None else layer_capture(resolve_layer(model, layer), reroot=False)
    )
    with explanation_scope(model), capturing as capture:
        inputs = images.requires_grad_(True)
        with rectifiers if guided else nullcontext():
            logits = logits_of(model, inputs)
        activations = None if capture is None else capture.output()
        fixed = choice(logits.detach())
        cam = None
        if activations is not None:  # Grad-CAM (Eqs. 1-2): the plain rule from the scores to the layer
            with rectifiers.plain_backward():
                layer_gradients = class_gradients(logits, fixed, activations, retain_graph=True)
            activations = activations.detach()
            cam = _class_maps(activations, _grad_cam_weights(activations, layer_gradients), images.shape[-2:])
        gradients = class_gradients(logits, fixed, inputs)
    if cam is not None:
        gradients = gradients * cam.unsqueeze(-3)
    return gradients[:, 0] if choice.single else gradients


@register_method(label="Backprop (gradient)", space="input", chooses=True, aliases=("backprop",))
def input_gradient(model: nn.Module, images: torch.Tensor, targets: Classes) -> torch.Tensor:
    """Plain gradient of the logit with respect to the input ('Backprop', Simonyan et al. 2014,
    Eq. 3: w = dS_c/dI), ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``; ``images`` may also be ``(B, F)``."""
    return _input_maps(model, images, targets, guided=False)


@register_method(label="Guided Backprop", space="input", chooses=True)
def guided_backprop(model: nn.Module, images: torch.Tensor, targets: Classes) -> torch.Tensor:
    """Guided Backpropagation (Springenberg et al. 2015, Fig. 1): the input gradient with every
    rectifier that runs in the forward pass guided (see :class:`guided_relus`): a gradient passes
    a rectifier only where its input was positive (below 6 for ReLU6) and the gradient is positive.

    Returns:
        ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``.
    """
    return _input_maps(model, images, targets, guided=True)


@register_method(label="Guided Grad-CAM", space="input", chooses=True, aliases=("guided_gradcam",))
def guided_grad_cam(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    guided: torch.Tensor | None = None,
) -> torch.Tensor:
    """Guided Grad-CAM (paper Sec. 3.1): Guided Backprop times the upsampled Grad-CAM map, both
    from one forward pass (the module docstring); a chooser as ``targets`` is called once, on it.

    Args:
        guided: the :func:`guided_backprop` of the same inputs and targets, when the caller has it
            already: then only Grad-CAM is computed. Not with a chooser as ``targets``.

    Returns:
        ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``.
    """
    if guided is None:
        return _input_maps(model, images, targets, guided=True, layer=layer)
    if callable(targets):
        raise ValueError("guided= needs fixed targets: a chooser would pick them in another forward pass")
    return guided * grad_cam(model, layer, images, targets).unsqueeze(-3)


# --------------------------------------------------------------------------------------------
# One 2-D heatmap per (image, class), whatever the method: what the evaluation chapters compare
# --------------------------------------------------------------------------------------------


#: The methods of the localisation, pointing, occlusion and attack chapters under their older keys
#: (a view of :mod:`gradcam_lib.methods`, whose canonical keys are the function names).
HEATMAP_METHODS: dict[str, str] = labels(("gradcam", "gradcam_pp", "backprop", "guided_backprop", "guided_gradcam"))


def heatmaps(method: str, model: nn.Module, layer: Layer, images: torch.Tensor, targets: Classes) -> torch.Tensor:
    """``(B, [K,] H, W)`` non-negative maps for any registered method (:mod:`gradcam_lib.methods`;
    the chapters use ``HEATMAP_METHODS``); input-space maps M are reduced to 2-D as Simonyan et al.
    (2014, Sec. 3.1) do: ``max_c |M_c|`` over the colour channels (``reduction="max_abs"``).

    Raises:
        KeyError: an unknown method, with the known keys.
    """
    return _registry_maps(method, model, layer, images, targets, reduction="max_abs")

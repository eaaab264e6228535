"""Input-space maps: the gradient ('Backprop', Simonyan et al. 2014), Guided Backprop
(Springenberg et al. 2015) and Guided Grad-CAM (the paper's Sec. 3.1: Guided Backprop times the
up-sampled Grad-CAM map), ``(B, [K,] C, H, W)``, under :func:`~gradcam_lib.methods.scopes.explanation_scope`.
"""

from __future__ import annotations

import torch
from torch import nn

from gradcam_lib.methods.arguments import Choice, Classes, Layer, checked_batch, logits_of, target_scores
from gradcam_lib.methods.cam import grad_cam
from gradcam_lib.methods.registry import labels, register_method
from gradcam_lib.methods.registry import maps as _registry_maps
from gradcam_lib.methods.scopes import explanation_scope, guided_relus

# --------------------------------------------------------------------------------------------
# Input-space maps
# --------------------------------------------------------------------------------------------


def _input_gradients(model: nn.Module, images: torch.Tensor, targets: Classes, guided: bool) -> torch.Tensor:
    images = checked_batch(model, images, spatial=False)
    choice = Choice(targets, images.shape[0], images.device)
    with explanation_scope(model):
        inputs = images.requires_grad_(True)
        if guided:
            with guided_relus():
                logits = logits_of(model, inputs)
        else:
            logits = logits_of(model, inputs)
        fixed = choice(logits.detach())
        scores = target_scores(logits, fixed)
        num_targets = fixed.shape[1]
        gradients = torch.stack(
            [
                torch.autograd.grad(scores[:, k].sum(), inputs, retain_graph=k < num_targets - 1)[0]
                for k in range(num_targets)
            ],
            dim=1,
        )
    return gradients[:, 0] if choice.single else gradients


@register_method(label="Backprop (gradient)", space="input", chooses=True, aliases=("backprop",))
def input_gradient(model: nn.Module, images: torch.Tensor, targets: Classes) -> torch.Tensor:
    """Plain gradient of the logit with respect to the input ('Backprop', Simonyan et al. 2014,
    Eq. 3: w = dS_c/dI), ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``; ``images`` may also be ``(B, F)``."""
    return _input_gradients(model, images, targets, guided=False)


@register_method(label="Guided Backprop", space="input", chooses=True)
def guided_backprop(model: nn.Module, images: torch.Tensor, targets: Classes) -> torch.Tensor:
    """Guided Backpropagation (Springenberg et al. 2015, Fig. 1): the input gradient with every
    rectifier that runs in the forward pass guided (see :class:`guided_relus`): a gradient passes
    a rectifier only where its input was positive (below 6 for ReLU6) and the gradient is positive.

    Returns:
        ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``.
    """
    return _input_gradients(model, images, targets, guided=True)


@register_method(label="Guided Grad-CAM", space="input", chooses=True, aliases=("guided_gradcam",))
def guided_grad_cam(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    guided: torch.Tensor | None = None,
) -> torch.Tensor:
    """Guided Grad-CAM (paper Sec. 3.1): Guided Backprop times the upsampled Grad-CAM map.

    Args:
        guided: the :func:`guided_backprop` of the same inputs and targets, when the caller has it
            already (it is the expensive half); not with a chooser as ``targets``.

    Returns:
        ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``.
    """
    if callable(targets):  # the Guided Backprop pass chooses; Grad-CAM maps the same classes
        if guided is not None:
            raise ValueError("guided= needs fixed targets: a chooser picks them in the Guided Backprop pass")
        chosen: list[torch.Tensor] = []
        choose = targets

        def remember(logits: torch.Tensor) -> torch.Tensor:
            chosen.append(choose(logits))
            return chosen[0]

        guided = guided_backprop(model, images, remember)
        targets = chosen[0]
    elif guided is None:
        guided = guided_backprop(model, images, targets)
    cam = grad_cam(model, layer, images, targets)
    return guided * cam.unsqueeze(-3)


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

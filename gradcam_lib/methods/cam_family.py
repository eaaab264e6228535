"""The modern CAM family, registered beside Grad-CAM: HiResCAM, XGrad-CAM and LayerCAM (gradients
of the logits at the layer), Score-CAM (forward passes of masked inputs) and Eigen-CAM (the first
principal component of the activations, class-agnostic).

Every method takes the arguments and follows the conventions of
:func:`~gradcam_lib.methods.cam.grad_cam` (:mod:`~gradcam_lib.methods.cam`'s module docstring):
``(model, layer, images, targets, upsample=True)``, ``targets`` ``(B,)``, ``(B, K)``, one int or a
chooser called on the method's own forward pass; maps ``(B, H, W)`` or ``(B, K, H, W)``, ReLU'd,
upsampled bilinearly (``align_corners=False``) to the input size, not normalised; the model's
state restored on return (:func:`~gradcam_lib.methods.scopes.explanation_scope`). The
gradient-based three reuse :mod:`~gradcam_lib.methods.cam`'s machinery: one forward pass and one
batched backward pass for the K classes. Scores are logits.

Against pytorch-grad-cam 1.5.7 (``tests/test_cam_family.py`` compares the maps before its min-max
normalisation): HiResCAM, LayerCAM and Eigen-CAM's projection are the same computation; XGrad-CAM
and Score-CAM drop its additive epsilons (1e-7 in XGrad-CAM's denominator, 1e-8 in Score-CAM's
normalisation), guarding only a zero denominator, as :func:`~gradcam_lib.methods.cam.grad_cam_pp`
does; Score-CAM upsamples its masks with ``align_corners=False`` (the Score-CAM authors' code;
pytorch-grad-cam's ``UpsamplingBilinear2d`` is ``align_corners=True``: ``align_corners=True``
reproduces it); Eigen-CAM fixes the sign of the principal component, which pytorch-grad-cam's
``EigenCAM`` leaves to LAPACK.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.methods.arguments import (
    Choice,
    Classes,
    Layer,
    check_class_range,
    checked_batch,
    logits_of,
    resolve_layer,
)
from gradcam_lib.methods.cam import _cam, _class_maps, _layer_gradients
from gradcam_lib.methods.registry import register_method
from gradcam_lib.methods.scopes import explanation_scope, layer_capture

__all__ = ["eigen_cam", "hires_cam", "layer_cam", "score_cam", "xgrad_cam"]


def _rectified_maps(summed: torch.Tensor, size: tuple[int, ...] | None) -> torch.Tensor:
    """``(B, K, h, w)`` maps through :func:`~gradcam_lib.methods.cam._class_maps`' ReLU and
    upsampling: each map as a one-channel activation of weight 1 (exact: ``1 * x == x``)."""
    b, k, h, w = summed.shape
    ones = torch.ones((b * k, 1, 1), dtype=summed.dtype, device=summed.device)
    maps = _class_maps(summed.reshape(b * k, 1, h, w), ones, size)
    return maps.view(b, k, *maps.shape[-2:])


def _elementwise_cam(
    rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    upsample: bool,
) -> torch.Tensor:
    """``ReLU(sum_k rule(A, dy/dA)^k)`` for methods that weigh each position, not each channel."""
    images = checked_batch(model, images, spatial=True)
    choice = Choice(targets, images.shape[0], images.device)
    _, _, activations, gradients = _layer_gradients(model, layer, images, choice)
    maps = _rectified_maps(rule(activations, gradients).sum(dim=2), images.shape[-2:] if upsample else None)
    return maps[:, 0] if choice.single else maps


def _hires_products(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    return gradients * activations.unsqueeze(1)


def _layer_cam_products(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    return gradients.clamp(min=0) * activations.unsqueeze(1)


def _xgrad_cam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy/dA^k_ij; 0 where sum_ab A^k_ab = 0 (no epsilon)."""
    sums = activations.sum(dim=(-2, -1), keepdim=True)
    nonzero = sums != 0
    shares = torch.where(nonzero, activations / torch.where(nonzero, sums, torch.ones_like(sums)),
                         torch.zeros_like(activations))
    return torch.einsum("bchw,bkchw->bkc", shares, gradients)


@register_method(label="HiResCAM", space="layer", nonnegative=True, chooses=True)
def hires_cam(
    model: nn.Module, layer: Layer, images: torch.Tensor, targets: Classes, upsample: bool = True
) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks"): ReLU(sum_k dy/dA^k ⊙ A^k), the gradient multiplied
    element-wise into the activations (Grad-CAM with the spatial average of the gradients left
    out). Arguments, shapes and errors as :func:`~gradcam_lib.methods.cam.grad_cam`; non-negative."""
    return _elementwise_cam(_hires_products, model, layer, images, targets, upsample)


@register_method(label="XGrad-CAM", space="layer", nonnegative=True, chooses=True)
def xgrad_cam(
    model: nn.Module, layer: Layer, images: torch.Tensor, targets: Classes, upsample: bool = True
) -> torch.Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, "Axiom-based Grad-CAM"): ReLU(sum_k w_k A^k) with the
    weights that satisfy their Sensitivity and Conservation axioms best,
    w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy/dA^k_ij -- exactly: no additive epsilon (pytorch-grad-cam
    adds 1e-7 to the denominator); a channel whose activations sum to 0 gets weight 0. Arguments,
    shapes and errors as :func:`~gradcam_lib.methods.cam.grad_cam`; non-negative."""
    return _cam(_xgrad_cam_weights, model, layer, images, targets, False, upsample)


@register_method(label="LayerCAM", space="layer", nonnegative=True, chooses=True)
def layer_cam(
    model: nn.Module, layer: Layer, images: torch.Tensor, targets: Classes, upsample: bool = True
) -> torch.Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): ReLU(sum_k ReLU(dy/dA^k) ⊙ A^k), each
    position weighted by its own positive gradient. Arguments, shapes and errors as
    :func:`~gradcam_lib.methods.cam.grad_cam`; non-negative."""
    return _elementwise_cam(_layer_cam_products, model, layer, images, targets, upsample)


def _forward(module: nn.Module, model: nn.Module, images: torch.Tensor,
             choice: Choice) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass (the caller holds the scope): ``(targets (B, K), activations (B, C, h, w))``."""
    with layer_capture(module) as capture:
        logits = logits_of(model, images)
    if capture.activation is None:
        raise RuntimeError(f"the CAM layer {type(module).__name__} did not run in the forward pass")
    targets = choice(logits)
    check_class_range(targets, logits.shape[1])
    return targets, capture.activation.detach()


def _masked_scores(model: nn.Module, images: torch.Tensor, activations: torch.Tensor, targets: torch.Tensor,
                   chunk: int, align_corners: bool) -> torch.Tensor:
    """The target logits ``(B, C, K)`` of the B * C masked inputs X ⊙ s(Up(A^c)), ``chunk`` per pass."""
    b, c, h, w = activations.shape
    flat = activations.reshape(b * c, 1, h, w)
    scores = []
    for start in range(0, b * c, chunk):
        owner = torch.arange(start, min(start + chunk, b * c), device=images.device) // c
        up = F.interpolate(flat[start:start + chunk], size=images.shape[-2:], mode="bilinear",
                           align_corners=align_corners)
        low, high = up.amin(dim=(-2, -1), keepdim=True), up.amax(dim=(-2, -1), keepdim=True)
        span = high - low
        masks = torch.where(span > 0, (up - low) / torch.where(span > 0, span, torch.ones_like(span)),
                            torch.zeros_like(up))
        scores.append(logits_of(model, images[owner] * masks).gather(1, targets[owner]))
    return torch.cat(scores).view(b, c, -1)


@register_method(label="Score-CAM", space="layer", nonnegative=True, chooses=True)
def score_cam(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    upsample: bool = True,
    chunk: int = 64,
    align_corners: bool = False,
) -> torch.Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020, Algorithm 1): ReLU(sum_k w_k A^k) with
    w = softmax over the channels k of f^c(X ⊙ H^k), H^k = s(Up(A^k)) the channel's activation
    upsampled bilinearly to the input and min-max normalised to [0, 1], f^c the target's logit.
    (The paper's f^c(X_b) baseline is the same for every k and cancels in the softmax;
    pytorch-grad-cam uses the raw logit and the channel softmax too. The authors' released code
    weighs by the class softmax probability instead, without the channel softmax.) A constant
    channel's mask is 0 (the exact normalisation, no epsilon; pytorch-grad-cam's 1e-8 gives 0 there
    too). The K classes share the masked forward passes.

    Args:
        chunk: masked images per forward pass (B * C of them, for all images together).
        align_corners: of the masks' upsampling; True is pytorch-grad-cam's (``UpsamplingBilinear2d``).
        Others as :func:`~gradcam_lib.methods.cam.grad_cam`.

    Returns:
        ``(B, H, W)`` or ``(B, K, H, W)``, non-negative; 1 + ceil(B * C / chunk) forward passes.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a whole number of images >= 1, got {chunk!r}")
    module = resolve_layer(model, layer)
    images = checked_batch(model, images, spatial=True)
    choice = Choice(targets, images.shape[0], images.device)
    with explanation_scope(model), torch.no_grad():
        classes, activations = _forward(module, model, images, choice)
        scores = _masked_scores(model, images, activations, classes, chunk, align_corners)
    weights = scores.softmax(dim=1).transpose(1, 2)
    maps = _class_maps(activations, weights, images.shape[-2:] if upsample else None)
    return maps[:, 0] if choice.single else maps


def _principal_projection(activations: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h, w)``: the centred ``(hw, C)`` matrix projected on its first
    right-singular vector, the sign chosen so that the largest magnitude is positive."""
    b, c, h, w = activations.shape
    matrix = activations.reshape(b, c, h * w).transpose(1, 2)
    if matrix.dtype not in (torch.float32, torch.float64):  # the SVD needs single or double precision
        matrix = matrix.float()
    centred = matrix - matrix.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, 0, :, None]).squeeze(-1)
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.view(b, h, w).to(activations.dtype)


@register_method(label="Eigen-CAM", space="layer", nonnegative=True, chooses=True)
def eigen_cam(
    model: nn.Module, layer: Layer, images: torch.Tensor, targets: Classes, upsample: bool = True
) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020; pytorch-grad-cam's ``get_2d_projection``):
    ReLU of the activations projected on their first principal component -- the ``(hw, C)`` matrix
    of each image, centred over the positions (as pytorch-grad-cam; the paper projects the raw
    matrix), times its first right-singular vector V_1. The sign of V_1 is arbitrary (an SVD's
    ``-U, -V`` is as good), so it is fixed: the projection's largest magnitude is positive
    (pytorch-grad-cam's ``get_2d_projection_with_sign_correction``; its ``EigenCAM`` keeps LAPACK's
    sign).

    Class-agnostic: ``targets`` are checked and shape the result as for
    :func:`~gradcam_lib.methods.cam.grad_cam` (a chooser is called on this forward pass), but every
    target gets the same map, ``(B, K, H, W)`` holding K copies. No gradient is taken.
    """
    module = resolve_layer(model, layer)
    images = checked_batch(model, images, spatial=True)
    choice = Choice(targets, images.shape[0], images.device)
    with explanation_scope(model), torch.no_grad():
        classes, activations = _forward(module, model, images, choice)
    maps = _rectified_maps(_principal_projection(activations)[:, None], images.shape[-2:] if upsample else None)
    return maps[:, 0] if choice.single else maps.expand(-1, classes.shape[1], -1, -1).contiguous()

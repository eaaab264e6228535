"""Grad-CAM and Grad-CAM++, batched, for K classes per image (:mod:`gradcam_lib.methods.gradients`
holds the input-space maps: Backprop, Guided Backprop, Guided Grad-CAM).

Shapes: ``images`` is a float batch ``(B, 3, H, W)`` (any H and W the model accepts); ``targets``
(:data:`Targets`) is ``(B,)`` (one class per image), ``(B, K)`` (K classes per image) or one int
(the same class for every image, as ``(B,)``). Class maps come back as ``(B, H, W)`` or
``(B, K, H, W)``, input-space maps as ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``. Scores are logits
(pre-softmax), as in the paper (Sec. 3: "the score for class c, y^c, before the softmax").

Input is checked before the forward pass: ``layer`` is a module of ``model`` or its dotted name
(``"layer4"``, ``"features.29"``: ``model.get_submodule``); images must be a floating-point batch
(a single ``(3, H, W)`` image is refused -- add the batch dimension with ``images[None]`` -- and so
are uint8 pixels, which need the model's normalisation, ``entry.transform``); a float64 batch is
computed in the model's dtype (that of its first floating-point parameter); an inference tensor
is cloned into a normal one; targets must be integer-valued (1.7 is refused, not truncated) and
lie in ``[0, N)``. The model must return the logits tensor ``(B, N)``: a model that returns a tuple
or a dict is refused with a message saying how to wrap it. Gradients cannot be taken inside
``torch.inference_mode()``; ``torch.no_grad()`` is fine (the scope switches gradients on).

Speed: Grad-CAM needs dy^c/dA at the target layer only. The layer's output is re-rooted as a leaf
of the autograd graph and no parameter requires a gradient, so the backward pass only crosses the
part of the network after the layer; K classes share one forward pass and one batched (vmapped)
backward pass through that part.

Each method is registered in :mod:`gradcam_lib.methods` under its function's name
(``maps("grad_cam", ...)``), and takes as ``targets`` also a chooser ``logits -> (B, K)``
(:data:`Classes`), called on the method's own forward pass: the top-k classes and their maps from
one pass.

Every entry point runs inside :func:`explanation_scope`, which puts the model in eval mode,
switches parameter gradients off and restores both (and removes every hook) on exit, also when an
exception is raised.
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
    Targets,
    check_class_range,
    checked_batch,
    logits_of,
    resolve_layer,
    targets_2d,
)
from gradcam_lib.methods.registry import register_method
from gradcam_lib.methods.scopes import explanation_scope, layer_capture


def class_gradients(
    logits: torch.Tensor, targets: torch.Tensor, wrt: torch.Tensor, retain_graph: bool = False
) -> torch.Tensor:
    """d logits[b, targets[b, k]] / d ``wrt`` for each of the K classes of ``targets`` (B, K),
    ``(B, K, *wrt.shape[1:])``, from one batched backward pass seeded with one-hot rows (K, B, N).

    One batched (vmapped) backward computes the K vector-Jacobian products in one sweep: a linear
    layer's K matrix-vector products become one matrix product (VGG-16's 120M-parameter head: 4x
    faster than K sweeps). Convolutions gain nothing on a CPU: torch's batched backward loops over
    the K seeds in ``convolution_backward`` and ``native_batch_norm_backward`` (no batching rule in
    its legacy vmap), and each class needs its own products anyway: a backward to the input of
    ResNet-50 costs 1.18x K plain backward passes (``make bench``, rows ``fast_paths``). K = 1 takes
    the plain backward (no vmap overhead).
    """
    check_class_range(targets, logits.shape[1])
    seeds = torch.zeros((targets.shape[1], *logits.shape), dtype=logits.dtype, device=logits.device)
    seeds.scatter_(2, targets.T.unsqueeze(-1), 1.0)
    batched = len(seeds) > 1
    (gradients,) = torch.autograd.grad(logits, wrt, grad_outputs=seeds if batched else seeds[0],
                                       retain_graph=retain_graph, is_grads_batched=batched)
    return gradients.transpose(0, 1) if batched else gradients.unsqueeze(1)


def _layer_gradients(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    choose_targets: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass, then d(logit_k)/dA for each of the K chosen classes (:func:`class_gradients`).

    Returns ``(logits (B, N), targets (B, K), activations (B, C, h, w), gradients (B, K, C, h, w))``.
    """
    module = resolve_layer(model, layer)
    with explanation_scope(model), layer_capture(module) as capture:
        logits = logits_of(model, images)
        activations = capture.output()
        targets = choose_targets(logits.detach())
        gradients = class_gradients(logits, targets, activations)
    return logits.detach(), targets, activations.detach(), gradients


def _grad_cam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 1: alpha_k^c = (1/Z) sum_ij dy^c/dA^k_ij -- the spatial mean of the gradients."""
    return gradients.mean(dim=(-2, -1))


def _grad_cam_pp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ closed form (Chattopadhyay et al. 2018, Eq. 19 with Y = exp(S)):
    alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3), w_k = sum_ij alpha_ij relu(g_ij), g = dS/dA.

    Exactly the closed form: no additive epsilon. pytorch-grad-cam adds 1e-7 to the denominator,
    which matters where g^2 is not far above 1e-7: real logit gradients are ~1e-3 (g^2 ~ 1e-6);
    ``tests/test_comparisons.py`` shows a 10 % change of its map at gradients of 1e-3. Only a zero
    denominator is guarded: alpha = 0 there (it is 0 iff g = 0 or sum A = -2 / g)."""
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    sum_a = activations.sum(dim=(-2, -1), keepdim=True).unsqueeze(1)
    denominator = 2 * g2 + sum_a * g3
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)),
                        torch.zeros_like(denominator))
    return (alpha * gradients.clamp(min=0)).sum(dim=(-2, -1))


def _class_maps(
    activations: torch.Tensor, weights: torch.Tensor, size: tuple[int, ...] | None
) -> torch.Tensor:
    """Paper Eq. 2: L^c = ReLU(sum_k alpha_k^c A^k), then bilinear upsampling to ``size``."""
    maps = torch.einsum("bkc,bchw->bkhw", weights, activations).clamp(min=0)
    if size is None:
        return maps
    b, k, h, w = maps.shape
    return F.interpolate(maps.view(b * k, 1, h, w), size=size, mode="bilinear", align_corners=False).view(
        b, k, *size
    )


def _cam(
    weight_rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    counterfactual: bool,
    upsample: bool,
) -> torch.Tensor:
    images = checked_batch(model, images, spatial=True)
    choice = Choice(targets, images.shape[0], images.device)
    _, _, activations, gradients = _layer_gradients(model, layer, images, choice)
    if counterfactual:
        gradients = -gradients
    maps = _class_maps(activations, weight_rule(activations, gradients), images.shape[-2:] if upsample else None)
    return maps[:, 0] if choice.single else maps


@register_method(label="Grad-CAM", space="layer", nonnegative=True, chooses=True, aliases=("gradcam",))
def grad_cam(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    counterfactual: bool = False,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2): ReLU(sum_k w_k A^k), w_k the spatial mean of
    d(logit)/dA^k, upsampled bilinearly (align_corners=False) to the input size, not normalised.

    Args:
        model: the classifier, returning logits ``(B, N)``; its state is restored on return.
        layer: the module inside ``model`` whose output is A, or its dotted name (``"layer4"``).
        images: a float batch ``(B, 3, H, W)``, normalised as the model expects.
        targets: ``(B,)`` or ``(B, K)`` class indices, or one int for every image; or a chooser
            ``logits -> (B, K)`` called on this forward pass (:data:`Classes`).
        counterfactual: negate the gradients (paper Sec. 3.2): regions that lower the score.
        upsample: False returns the ``(h, w)`` map at the layer's resolution.

    Returns:
        ``(B, H, W)`` or ``(B, K, H, W)``, non-negative.

    Raises:
        ValueError / TypeError / IndexError: bad input, before the forward pass where possible
        (see the module docstring); RuntimeError: inside ``torch.inference_mode()``.

    Example:
        >>> entry = load_model("efficientnet_lite0")
        >>> images = entry.transform(pil_image)[0][None]             # (1, 3, 224, 224)
        >>> maps = grad_cam(entry.model, entry.layer, images, [[285, 281]])  # (1, 2, 224, 224)
    """
    return _cam(_grad_cam_weights, model, layer, images, targets, counterfactual, upsample)


@register_method(label="Grad-CAM++", space="layer", nonnegative=True, chooses=True, aliases=("gradcam_pp",))
def grad_cam_pp(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    targets: Classes,
    counterfactual: bool = False,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018) with the exact closed-form weights of their Eq. 19
    (Y = exp(S)): w_k = sum_ij alpha_ij ReLU(g_ij), alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab A_ab g_ij^3),
    g = d(logit)/dA^k, with no additive epsilon (alpha = 0 where the denominator is 0); then
    ReLU(sum_k w_k A^k) as in :func:`grad_cam`, with the same shapes and options."""
    return _cam(_grad_cam_pp_weights, model, layer, images, targets, counterfactual, upsample)


def grad_cam_top_k(
    model: nn.Module, layer: Layer, images: torch.Tensor, k: int = 5, also: Targets | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM (Eqs. 1-2, as :func:`grad_cam`) for the ``k`` highest-scoring classes of each image
    from a single forward pass: the localisation protocol needs the prediction and its maps.
    (captum's ``LayerGradCam`` needs the target classes before its pass, so a forward pass of its
    own first; pytorch-grad-cam maps the top-1 class in its pass, but one class per call, so k > 1
    takes k calls: ``tests/test_comparisons.py``.)

    Args:
        k: how many top classes, 1 to N (0 only together with ``also``).
        also: optional ``(B,)`` or ``(B, E)`` further classes to map in the same pass (e.g. the
            ground truth).

    Returns:
        ``(logits (B, N), classes (B, k [+ E]) -- the top-k in descending score, then ``also`` --,
        maps (B, k [+ E], H, W))``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a whole number of classes >= 1, got {k!r}")
    if k == 0 and also is None:
        raise ValueError("k must be >= 1 (k = 0 maps nothing unless also= gives classes)")
    images = checked_batch(model, images, spatial=True)
    extra = None if also is None else targets_2d(also, len(images), "also")[0].to(images.device)

    def choose(scores: torch.Tensor) -> torch.Tensor:
        if k > scores.shape[1]:
            raise ValueError(f"k={k} is larger than the model's {scores.shape[1]} classes")
        top = scores.topk(k, dim=1).indices
        return top if extra is None else torch.cat([top, extra], dim=1)

    logits, classes, activations, gradients = _layer_gradients(model, layer, images, choose)
    maps = _class_maps(activations, _grad_cam_weights(activations, gradients), images.shape[-2:])
    return logits, classes, maps

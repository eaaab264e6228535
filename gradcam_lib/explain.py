"""Grad-CAM, Grad-CAM++, (Guided) Backprop and Guided Grad-CAM, batched, for K classes per image.

Shapes: ``images`` is ``(B, 3, H, W)``; ``targets`` is a LongTensor ``(B,)`` (one class per image)
or ``(B, K)`` (K classes per image). Class maps come back as ``(B, H, W)`` or ``(B, K, H, W)``,
input-space maps as ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``. Scores are logits (pre-softmax), as
in the paper (Sec. 3: "the score for class c, y^c, before the softmax").

Speed: Grad-CAM needs dy^c/dA at the target layer only. The layer's output is re-rooted as a leaf
of the autograd graph and no parameter requires a gradient, so the backward pass only crosses the
part of the network after the layer; K classes share one forward pass and one batched (vmapped)
backward pass through that part.

Every entry point runs inside :func:`explanation_scope`, which puts the model in eval mode,
switches parameter gradients off and restores both (and removes every hook) on exit, also when an
exception is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "explanation_scope",
    "layer_capture",
    "guided_relus",
    "grad_cam",
    "grad_cam_pp",
    "grad_cam_top_k",
    "input_gradient",
    "guided_backprop",
    "guided_grad_cam",
    "HEATMAP_METHODS",
    "heatmaps",
]

Targets = torch.Tensor


# --------------------------------------------------------------------------------------------
# Scopes: model state, layer capture, guided ReLUs. Each always cleans up.
# --------------------------------------------------------------------------------------------


@contextmanager
def explanation_scope(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside; the model's ``training`` flags and every
    parameter's ``requires_grad`` are restored on exit, whatever happens inside."""
    training = {module: module.training for module in model.modules()}
    requires_grad = {param: param.requires_grad for param in model.parameters()}
    try:
        model.eval()
        for param in requires_grad:
            param.requires_grad_(False)
        with torch.enable_grad():
            yield model
    finally:
        for module, flag in training.items():
            module.train(flag)
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)


class _Capture:
    activation: torch.Tensor | None = None


@contextmanager
def layer_capture(layer: nn.Module) -> Iterator[_Capture]:
    """Record ``layer``'s output as a fresh autograd leaf, so gradients can be taken with respect
    to it and the backward pass stops there. The hook is removed on exit.

    The module returns a clone of the leaf, so in-place operations after the layer (DenseNet's
    ``F.relu(features, inplace=True)``) leave the leaf intact. If the layer runs several times in
    one forward pass, the last call is kept.
    """
    capture = _Capture()

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the Grad-CAM layer must return a tensor, got {type(output).__name__}")
        capture.activation = output.detach().requires_grad_(True)
        return capture.activation.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


class _GuidedReLU(torch.autograd.Function):
    """ReLU (or ReLU6 when ``upper`` is 6) whose backward pass follows the guided rule of
    Springenberg et al. (2015): a gradient passes only where the input was in the linear region
    AND the incoming gradient is positive. The output is saved, not the input (0 < y < upper
    exactly where 0 < x < upper), so an in-place call stays in place."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float | None, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            y = x.clamp_(min=0.0, max=upper)
        else:
            y = x.clamp(min=0.0, max=upper)
        ctx.save_for_backward(y)
        ctx.upper = upper
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (y,) = ctx.saved_tensors
        positive = grad.clamp(min=0.0)
        if ctx.upper is None:  # the native ReLU backward, fed the positive part of the gradient
            return torch.ops.aten.threshold_backward(positive, y, 0.0), None, None
        return torch.ops.aten.hardtanh_backward(positive, y, 0.0, ctx.upper), None, None


_RELUS = {F.relu, torch.relu, torch.Tensor.relu}
_RELUS_INPLACE = {torch.relu_, F.relu_, torch.Tensor.relu_}
_HARDTANHS = {F.hardtanh: False, F.hardtanh_: True}


class guided_relus(TorchFunctionMode):
    """Inside this scope every rectifier that runs is guided: ``nn.ReLU``, ``nn.ReLU6``, functional
    ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (torchvision's GoogLeNet and DenseNet call these
    instead of modules), in-place variants, and modules called several times. Hooking modules, as
    captum and pytorch-grad-cam do, misses all but the first kind.
    """

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELUS:
            inplace = func is F.relu and kwargs.get("inplace", args[1] if len(args) > 1 else False)
            return _GuidedReLU.apply(args[0], None, bool(inplace))
        if func in _RELUS_INPLACE:
            return _GuidedReLU.apply(args[0], None, True)
        if func is F.relu6:
            return _GuidedReLU.apply(args[0], 6.0, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False)))
        if func in _HARDTANHS:
            min_val = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            max_val = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            inplace = _HARDTANHS[func] or kwargs.get("inplace", args[3] if len(args) > 3 else False)
            if min_val == 0.0:  # nn.ReLU6 calls F.hardtanh(x, 0, 6)
                return _GuidedReLU.apply(args[0], float(max_val), bool(inplace))
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# Class-activation maps
# --------------------------------------------------------------------------------------------


def _as_2d(targets: Targets, batch: int) -> tuple[torch.Tensor, bool]:
    targets = torch.as_tensor(targets, dtype=torch.long)
    if targets.dim() not in (1, 2) or targets.shape[0] != batch:
        raise ValueError(f"targets must be (B,) or (B, K) with B={batch}, got {tuple(targets.shape)}")
    return targets.view(batch, -1), targets.dim() == 1


def _check_targets(targets: torch.Tensor, num_classes: int) -> None:
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise IndexError(f"target classes must lie in [0, {num_classes}), got {targets.tolist()}")


def _scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    _check_targets(targets, logits.shape[1])
    return logits.gather(1, targets)


def _layer_gradients(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    choose_targets: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass, then d(logit_k)/dA for each of the K chosen classes.

    Returns ``(logits (B, N), targets (B, K), activations (B, C, h, w), gradients (B, K, C, h, w))``.
    """
    with explanation_scope(model), layer_capture(layer) as capture:
        logits = model(images.detach())
        if capture.activation is None:
            raise RuntimeError("the Grad-CAM layer did not run in the forward pass")
        activations = capture.activation
        targets = choose_targets(logits.detach())
        _check_targets(targets, logits.shape[1])
        # One-hot seeds (K, B, N): a single batched backward (vmap) computes the K gradients in one
        # sweep over the head's weights instead of K sweeps (VGG-16's 120M-parameter head: 4x).
        seeds = torch.zeros((targets.shape[1], *logits.shape), dtype=logits.dtype, device=logits.device)
        seeds.scatter_(2, targets.T.unsqueeze(-1), 1.0)
        (gradients,) = torch.autograd.grad(logits, activations, grad_outputs=seeds, is_grads_batched=True)
    return logits.detach(), targets, activations.detach(), gradients.transpose(0, 1)


def _grad_cam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 1: alpha_k^c = (1/Z) sum_ij dy^c/dA^k_ij -- the spatial mean of the gradients."""
    return gradients.mean(dim=(-2, -1))


def _grad_cam_pp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ closed form (Chattopadhyay et al. 2018, Eq. 19 with Y = exp(S)):
    alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3), w_k = sum_ij alpha_ij relu(g_ij), g = dS/dA.

    Exactly the closed form: no additive epsilon (pytorch-grad-cam adds 1e-7 to the denominator,
    which at logit gradients of ~1e-3, g^2 ~ 1e-6, changes the maps by 10-20 % of their maximum).
    Only a zero denominator is guarded: alpha = 0 there (it is 0 iff g = 0 or sum A = -2 / g)."""
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    sum_a = activations.sum(dim=(-2, -1), keepdim=True).unsqueeze(1)
    denominator = 2 * g2 + sum_a * g3
    nonzero = denominator != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)),
                        torch.zeros_like(denominator))
    return (alpha * gradients.clamp(min=0)).sum(dim=(-2, -1))


def _class_maps(
    activations: torch.Tensor, weights: torch.Tensor, size: tuple[int, int] | None
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
    layer: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    counterfactual: bool,
    upsample: bool,
) -> torch.Tensor:
    fixed, single = _as_2d(targets, images.shape[0])
    fixed = fixed.to(images.device)
    _, _, activations, gradients = _layer_gradients(model, layer, images, lambda _logits: fixed)
    if counterfactual:
        gradients = -gradients
    maps = _class_maps(activations, weight_rule(activations, gradients), images.shape[-2:] if upsample else None)
    return maps[:, 0] if single else maps


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    counterfactual: bool = False,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2): ReLU(sum_k w_k A^k), w_k the spatial mean of
    d(logit)/dA^k, upsampled bilinearly (align_corners=False) to the input size, not normalised.

    Args:
        model: the classifier; its state is restored on return.
        layer: an ``nn.Module`` inside ``model`` whose output is A.
        images: ``(B, 3, H, W)``.
        targets: ``(B,)`` or ``(B, K)`` class indices.
        counterfactual: negate the gradients (paper Sec. 3.2): regions that lower the score.
        upsample: False returns the ``(h, w)`` map at the layer's resolution.

    Returns:
        ``(B, H, W)`` or ``(B, K, H, W)``, non-negative.

    Example:
        >>> entry = load_model("efficientnet_lite0")
        >>> maps = grad_cam(entry.model, entry.layer, images, torch.tensor([285, 967]))
    """
    return _cam(_grad_cam_weights, model, layer, images, targets, counterfactual, upsample)


def grad_cam_pp(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    counterfactual: bool = False,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM++ with the closed-form weights (see ``_grad_cam_pp_weights``); same shapes and
    options as :func:`grad_cam`."""
    return _cam(_grad_cam_pp_weights, model, layer, images, targets, counterfactual, upsample)


def grad_cam_top_k(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, k: int = 5, also: Targets | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM for the ``k`` highest-scoring classes of each image from a single forward pass
    (the localisation protocol needs the prediction and its maps; captum and pytorch-grad-cam need
    a second pass to learn the predicted classes).

    Args:
        also: optional ``(B, E)`` further classes to map in the same pass (e.g. the ground truth).

    Returns:
        ``(logits (B, N), classes (B, k [+ E]) -- the top-k in descending score, then ``also`` --,
        maps (B, k [+ E], H, W))``.
    """
    extra = None if also is None else torch.as_tensor(also, dtype=torch.long, device=images.device).view(len(images), -1)

    def choose(scores: torch.Tensor) -> torch.Tensor:
        top = scores.topk(k, dim=1).indices
        return top if extra is None else torch.cat([top, extra], dim=1)

    logits, classes, activations, gradients = _layer_gradients(model, layer, images, choose)
    maps = _class_maps(activations, _grad_cam_weights(activations, gradients), images.shape[-2:])
    return logits, classes, maps


# --------------------------------------------------------------------------------------------
# Input-space maps
# --------------------------------------------------------------------------------------------


def _input_gradients(model: nn.Module, images: torch.Tensor, targets: Targets, guided: bool) -> torch.Tensor:
    fixed, single = _as_2d(targets, images.shape[0])
    fixed = fixed.to(images.device)
    with explanation_scope(model):
        inputs = images.detach().requires_grad_(True)
        if guided:
            with guided_relus():
                logits = model(inputs)
        else:
            logits = model(inputs)
        scores = _scores(logits, fixed)
        num_targets = fixed.shape[1]
        gradients = torch.stack(
            [
                torch.autograd.grad(scores[:, k].sum(), inputs, retain_graph=k < num_targets - 1)[0]
                for k in range(num_targets)
            ],
            dim=1,
        )
    return gradients[:, 0] if single else gradients


def input_gradient(model: nn.Module, images: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Plain gradient of the logit with respect to the input ('Backprop', Simonyan et al. 2014)."""
    return _input_gradients(model, images, targets, guided=False)


def guided_backprop(model: nn.Module, images: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Guided Backpropagation (Springenberg et al. 2015): the input gradient with every rectifier
    that runs in the forward pass guided (see :class:`guided_relus`).

    Returns:
        ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``.
    """
    return _input_gradients(model, images, targets, guided=True)


def guided_grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    guided: torch.Tensor | None = None,
) -> torch.Tensor:
    """Guided Grad-CAM (paper Sec. 3.1): Guided Backprop times the upsampled Grad-CAM map.

    Args:
        guided: the :func:`guided_backprop` of the same inputs and targets, when the caller has it
            already (it is the expensive half).

    Returns:
        ``(B, 3, H, W)`` or ``(B, K, 3, H, W)``.
    """
    if guided is None:
        guided = guided_backprop(model, images, targets)
    cam = grad_cam(model, layer, images, targets)
    return guided * cam.unsqueeze(-3)


# --------------------------------------------------------------------------------------------
# One 2-D heatmap per (image, class), whatever the method: what the evaluation chapters compare
# --------------------------------------------------------------------------------------------


def _channel_saliency(maps: torch.Tensor) -> torch.Tensor:
    """Input-space maps -> 2-D: max over colour channels of the magnitude (Simonyan et al. 2014)."""
    return maps.abs().amax(dim=-3)


HEATMAP_METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "gradcam_pp": "Grad-CAM++",
    "backprop": "Backprop (gradient)",
    "guided_backprop": "Guided Backprop",
    "guided_gradcam": "Guided Grad-CAM",
}


def heatmaps(method: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: Targets) -> torch.Tensor:
    """``(B, [K,] H, W)`` non-negative maps for any method of ``HEATMAP_METHODS``; input-space
    methods are reduced to 2-D by :func:`_channel_saliency`."""
    if method == "gradcam":
        return grad_cam(model, layer, images, targets)
    if method == "gradcam_pp":
        return grad_cam_pp(model, layer, images, targets)
    if method == "backprop":
        return _channel_saliency(input_gradient(model, images, targets))
    if method == "guided_backprop":
        return _channel_saliency(guided_backprop(model, images, targets))
    if method == "guided_gradcam":
        return _channel_saliency(guided_grad_cam(model, layer, images, targets))
    raise KeyError(f"unknown method {method!r}; choose one of {', '.join(HEATMAP_METHODS)}")

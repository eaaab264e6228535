"""Grad-CAM, Grad-CAM++, (Guided) Backprop and Guided Grad-CAM, batched, for K classes per image.

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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from gradcam_lib.methods import Chooser, labels, register_method
from gradcam_lib.methods import maps as _registry_maps

__all__ = [
    "HEATMAP_METHODS",
    "explanation_scope",
    "grad_cam",
    "grad_cam_pp",
    "grad_cam_top_k",
    "guided_backprop",
    "guided_grad_cam",
    "guided_relus",
    "heatmaps",
    "input_gradient",
    "layer_capture",
]

Targets: TypeAlias = torch.Tensor | int | Sequence[int] | Sequence[Sequence[int]]
"""Class indices to explain: ``(B,)`` one class per image, ``(B, K)`` K classes per image (one
forward pass for all K), or a single int / 0-d tensor, the same class for every image (maps shaped
as for ``(B,)``). Integer-valued: floats are accepted only when they hold whole numbers."""

Classes: TypeAlias = Targets | Chooser
"""``targets`` as the registered methods take them: :data:`Targets`, or a chooser
``logits (B, N) -> (B,) or (B, K)`` called once on the method's own forward pass (top-k from the
same pass: :func:`gradcam_lib.methods.top_k`)."""

Layer: TypeAlias = nn.Module | str
"""The layer whose output A Grad-CAM weighs: a module of the model, or its dotted name as in
``model.named_modules()`` (``"layer4"``; ``ModelEntry.layer_name``)."""


# --------------------------------------------------------------------------------------------
# Scopes: model state, layer capture, guided ReLUs. Each always cleans up.
# --------------------------------------------------------------------------------------------


@contextmanager
def explanation_scope(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside; the model's ``training`` flags and every
    parameter's ``requires_grad`` are restored on exit, whatever happens inside.

    Raises:
        RuntimeError: inside ``torch.inference_mode()``, where no gradient can be taken.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradients cannot be taken inside torch.inference_mode(): call the explanation outside "
            "that block (torch.no_grad() is fine: explanations switch gradients on themselves)"
        )
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
    instead of modules), in-place variants, and modules called several times.

    captum's ``GuidedBackprop`` and pytorch-grad-cam's ``GuidedBackpropReLUModel`` guide
    ``nn.ReLU`` modules only (a reused one correctly): on torchvision's GoogLeNet (``F.relu``) and
    on EfficientNet-Lite (``nn.ReLU6``) they return the plain gradient; on DenseNet they guide its
    ``nn.ReLU`` modules but not the final ``F.relu``, so their maps differ from the guided rule's
    (``tests/test_comparisons.py`` checks all three).
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


def _as_2d(targets: Targets, batch: int, name: str = "targets") -> tuple[torch.Tensor, bool]:
    """``targets`` as a LongTensor ``(B, K)``, and whether it was one class per image."""
    values = torch.as_tensor(targets)
    if values.dtype == torch.bool or values.is_complex():
        raise TypeError(f"{name} must be integer class indices, got dtype {values.dtype}")
    if values.is_floating_point():
        fractional = ~torch.isfinite(values) | (values != values.round())
        if fractional.any():
            raise ValueError(
                f"{name} must be whole class indices, got {[f'{v:g}' for v in values[fractional][:5].tolist()]}; "
                "fractional values are refused rather than truncated"
            )
    values = values.to(torch.long)
    if values.dim() == 0:  # one class for every image
        values = values.expand(batch)
    if values.dim() not in (1, 2) or values.shape[0] != batch:
        raise ValueError(
            f"{name} must be (B,) or (B, K) with B={batch} (the number of images), or one int for "
            f"every image; got shape {tuple(values.shape)}"
        )
    if values.dim() == 2 and values.shape[1] == 0:
        raise ValueError(f"{name} has shape {tuple(values.shape)}: give at least one class per image")
    return values.reshape(batch, -1), values.dim() == 1


class _Choice:
    """``targets`` as a chooser of the forward pass: fixed classes are checked (and moved to
    ``device``) before the pass; a caller's chooser is called on the logits. ``single``: one class
    per image (maps without the K dimension)."""

    def __init__(self, targets: Classes, batch: int, device: torch.device) -> None:
        self.choose: Chooser | None = None
        self.fixed: torch.Tensor | None = None
        if callable(targets):
            self.choose, self.single = targets, False
        else:
            fixed, self.single = _as_2d(targets, batch)
            self.fixed = fixed.to(device)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        assert self.choose is not None
        chosen, self.single = _as_2d(self.choose(logits), logits.shape[0], "the chosen targets")
        return chosen.to(logits.device)


def _check_targets(targets: torch.Tensor, num_classes: int) -> None:
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise IndexError(
            f"targets must be class indices in [0, {num_classes}) (the model has {num_classes} outputs), "
            f"got {targets.tolist()}"
        )


def _scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    _check_targets(targets, logits.shape[1])
    return logits.gather(1, targets)


def _resolve_layer(model: nn.Module, layer: Layer) -> nn.Module:
    """The module ``layer`` of ``model``, given as the module or its dotted name; checked before
    any forward pass."""
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_children()][:6]
            raise ValueError(
                f"layer {layer!r} is not a submodule of {type(model).__name__}; give a module of the "
                f"model or its dotted name as listed by model.named_modules() (its children: {names})"
            ) from None
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module of the model or its dotted name, got {type(layer).__name__}")
    if not any(module is layer for module in model.modules()):
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of {type(model).__name__} (a module of "
            "another model or a copy?); give a module of this model or its dotted name, e.g. entry.layer_name"
        )
    return layer


def _batch(model: nn.Module, images: torch.Tensor, spatial: bool) -> torch.Tensor:
    """``images`` checked (a non-empty float batch; ``(B, C, H, W)`` when ``spatial``), detached and
    in the dtype of the model's first floating-point parameter."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor batch (B, C, H, W), got {type(images).__name__}; "
            "a PIL image becomes one with entry.transform(image)[0][None]"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"images are {images.dtype}, but the model reads normalised floats: prepare them with the "
            "model's transform (entry.transform(pil_image)[0], or entry.transform.normalise(uint8_pixels))"
        )
    if images.dim() == 3:
        raise ValueError(
            f"images must be a batch (B, C, H, W), got one image of shape {tuple(images.shape)}; "
            "add the batch dimension with images[None]"
        )
    if (spatial and images.dim() != 4) or images.dim() < 2:
        expected = "(B, C, H, W)" if spatial else "(B, C, H, W) or (B, F)"
        raise ValueError(f"images must be {expected}, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0): give at least one image")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), images.dtype)
    images = images.detach()
    if images.is_inference():  # made under torch.inference_mode(): a normal copy can enter autograd
        images = images.clone()
    return images.to(dtype)


def _logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``model(inputs)``, which must be the logits tensor ``(B, N)``."""
    output = model(inputs)
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"{type(model).__name__} returned a {type(output).__name__}, not a logits tensor (B, N); wrap it "
            "in a module whose forward returns the logits, e.g. `return self.model(x)[0]` for a tuple or "
            "`return self.model(x)['logits']` for a dict"
        )
    if output.dim() != 2:
        raise ValueError(
            f"{type(model).__name__} returned shape {tuple(output.shape)}; explanations need logits (B, N)"
        )
    return output


def _layer_gradients(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    choose_targets: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass, then d(logit_k)/dA for each of the K chosen classes.

    Returns ``(logits (B, N), targets (B, K), activations (B, C, h, w), gradients (B, K, C, h, w))``.
    """
    module = _resolve_layer(model, layer)
    with explanation_scope(model), layer_capture(module) as capture:
        logits = _logits(model, images)
        if capture.activation is None:
            raise RuntimeError(f"the Grad-CAM layer {type(module).__name__} did not run in the forward pass")
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
    images = _batch(model, images, spatial=True)
    choice = _Choice(targets, images.shape[0], images.device)
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
    images = _batch(model, images, spatial=True)
    extra = None if also is None else _as_2d(also, len(images), "also")[0].to(images.device)

    def choose(scores: torch.Tensor) -> torch.Tensor:
        if k > scores.shape[1]:
            raise ValueError(f"k={k} is larger than the model's {scores.shape[1]} classes")
        top = scores.topk(k, dim=1).indices
        return top if extra is None else torch.cat([top, extra], dim=1)

    logits, classes, activations, gradients = _layer_gradients(model, layer, images, choose)
    maps = _class_maps(activations, _grad_cam_weights(activations, gradients), images.shape[-2:])
    return logits, classes, maps


# --------------------------------------------------------------------------------------------
# Input-space maps
# --------------------------------------------------------------------------------------------


def _input_gradients(model: nn.Module, images: torch.Tensor, targets: Classes, guided: bool) -> torch.Tensor:
    images = _batch(model, images, spatial=False)
    choice = _Choice(targets, images.shape[0], images.device)
    with explanation_scope(model):
        inputs = images.requires_grad_(True)
        if guided:
            with guided_relus():
                logits = _logits(model, inputs)
        else:
            logits = _logits(model, inputs)
        fixed = choice(logits.detach())
        scores = _scores(logits, fixed)
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

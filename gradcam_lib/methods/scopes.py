"""Scopes that always restore state: the model's train/eval flags and requires_grad
(:func:`explanation_scope`), forward hooks (:func:`layer_capture`) and the guided-backprop ReLU
rule (:class:`guided_relus`, a TorchFunctionMode, with its switch to the plain rule,
:meth:`guided_relus.plain_backward`). Every method in :mod:`gradcam_lib.methods` runs inside them;
each cleans up also when an exception is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

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
    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.activation: torch.Tensor | None = None

    def output(self) -> torch.Tensor:
        """The recorded output; RuntimeError if the layer did not run."""
        if self.activation is None:
            raise RuntimeError(f"the Grad-CAM layer {type(self.layer).__name__} did not run in the forward pass")
        return self.activation


@contextmanager
def layer_capture(layer: nn.Module, reroot: bool = True) -> Iterator[_Capture]:
    """Record ``layer``'s output, by default as a fresh autograd leaf, so gradients can be taken
    with respect to it and the backward pass stops there; ``reroot=False`` records the output
    inside the graph instead, so that a backward pass to the input still crosses the layer (a
    backward pass to the recorded output still runs only the part of the graph after it). The hook
    is removed on exit.

    The module returns a clone of the recorded tensor, so in-place operations after the layer
    (DenseNet's ``F.relu(features, inplace=True)``) leave it intact. If the layer runs several
    times in one forward pass, the last call is kept.
    """
    capture = _Capture(layer)

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the Grad-CAM layer must return a tensor, got {type(output).__name__}")
        capture.activation = output.detach().requires_grad_(True) if reroot else output
        return capture.activation.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


class _GuidedReLU(torch.autograd.Function):
    """ReLU (or ReLU6 when ``upper`` is 6) whose backward pass follows the guided rule of
    Springenberg et al. (2015): a gradient passes only where the input was in the linear region
    AND the incoming gradient is positive -- or, while ``rule.guided`` is False, the plain rule
    (the native backward: where the input was in the linear region). The output is saved, not the
    input (0 < y < upper exactly where 0 < x < upper), so an in-place call stays in place.

    The classic ``forward(ctx, ...)`` form on purpose: a batched backward
    (``autograd.grad(..., is_grads_batched=True)``) vmaps only the backward, whose ops
    (``clamp``, ``threshold_backward``, ``hardtanh_backward``) have batching rules; the
    ``setup_context`` form needed inside ``torch.func`` transforms refuses to save an output that
    is its input modified in place (``nn.ReLU(inplace=True)``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float | None, inplace: bool, rule: guided_relus) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            y = x.clamp_(min=0.0, max=upper)
        else:
            y = x.clamp(min=0.0, max=upper)
        ctx.save_for_backward(y)
        ctx.upper, ctx.rule = upper, rule
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (y,) = ctx.saved_tensors
        incoming = grad.clamp(min=0.0) if ctx.rule.guided else grad
        if ctx.upper is None:  # the native ReLU backward, fed the (positive part of the) gradient
            return torch.ops.aten.threshold_backward(incoming, y, 0.0), None, None, None
        return torch.ops.aten.hardtanh_backward(incoming, y, 0.0, ctx.upper), None, None, None


_RELUS = {F.relu, torch.relu, torch.Tensor.relu}
_RELUS_INPLACE = {torch.relu_, F.relu_, torch.Tensor.relu_}
_HARDTANHS = {F.hardtanh: False, F.hardtanh_: True}


class guided_relus(TorchFunctionMode):
    """Inside this scope every rectifier that runs is guided: ``nn.ReLU``, ``nn.ReLU6``, functional
    ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (torchvision's GoogLeNet and DenseNet call these
    instead of modules), in-place variants, and modules called several times.

    The rule is read at backward time from this scope's switch: inside :meth:`plain_backward`, the
    rectifiers it recorded back-propagate by the plain chain rule, so one forward pass serves both
    halves of Guided Grad-CAM (paper Sec. 3.1: Grad-CAM's dy^c/dA, then Guided Backprop).

    captum's ``GuidedBackprop`` and pytorch-grad-cam's ``GuidedBackpropReLUModel`` guide
    ``nn.ReLU`` modules only (a reused one correctly): on torchvision's GoogLeNet (``F.relu``) and
    on EfficientNet-Lite (``nn.ReLU6``) they return the plain gradient; on DenseNet they guide its
    ``nn.ReLU`` modules but not the final ``F.relu``, so their maps differ from the guided rule's
    (``tests/test_comparisons.py`` checks all three).
    """

    def __init__(self) -> None:
        super().__init__()
        self.guided = True

    @contextmanager
    def plain_backward(self) -> Iterator[None]:
        """The plain backward rule for this scope's rectifiers inside; the previous rule on exit,
        whatever happens inside."""
        previous, self.guided = self.guided, False
        try:
            yield
        finally:
            self.guided = previous

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELUS:
            inplace = func is F.relu and kwargs.get("inplace", args[1] if len(args) > 1 else False)
            return _GuidedReLU.apply(args[0], None, bool(inplace), self)
        if func in _RELUS_INPLACE:
            return _GuidedReLU.apply(args[0], None, True, self)
        if func is F.relu6:
            inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
            return _GuidedReLU.apply(args[0], 6.0, bool(inplace), self)
        if func in _HARDTANHS:
            min_val = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            max_val = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            inplace = _HARDTANHS[func] or kwargs.get("inplace", args[3] if len(args) > 3 else False)
            if min_val == 0.0:  # nn.ReLU6 calls F.hardtanh(x, 0, 6)
                return _GuidedReLU.apply(args[0], float(max_val), bool(inplace), self)
        return func(*args, **kwargs)

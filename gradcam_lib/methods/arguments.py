"""The arguments every explanation method takes, checked before the forward pass: ``targets``
(:data:`Targets`, or a chooser of the forward pass's logits, :data:`Classes`), ``layer``
(:data:`Layer`, a module or its dotted name) and the ``images`` batch; and the logits the model
must return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import nn

from gradcam_lib.methods.registry import Chooser

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


def targets_2d(targets: Targets, batch: int, name: str = "targets") -> tuple[torch.Tensor, bool]:
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


class Choice:
    """``targets`` as a chooser of the forward pass: fixed classes are checked (and moved to
    ``device``) before the pass; a caller's chooser is called on the logits. ``single``: one class
    per image (maps without the K dimension)."""

    def __init__(self, targets: Classes, batch: int, device: torch.device) -> None:
        self.choose: Chooser | None = None
        self.fixed: torch.Tensor | None = None
        if callable(targets):
            self.choose, self.single = targets, False
        else:
            fixed, self.single = targets_2d(targets, batch)
            self.fixed = fixed.to(device)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        assert self.choose is not None
        chosen, self.single = targets_2d(self.choose(logits), logits.shape[0], "the chosen targets")
        return chosen.to(logits.device)


def check_class_range(targets: torch.Tensor, num_classes: int) -> None:
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise IndexError(
            f"targets must be class indices in [0, {num_classes}) (the model has {num_classes} outputs), "
            f"got {targets.tolist()}"
        )


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    check_class_range(targets, logits.shape[1])
    return logits.gather(1, targets)


def resolve_layer(model: nn.Module, layer: Layer) -> nn.Module:
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


def checked_batch(model: nn.Module, images: torch.Tensor, spatial: bool) -> torch.Tensor:
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


def logits_of(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
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

"""Average Drop % and % Increase in Confidence of the explanation map E = L * I (Grad-CAM++,
Chattopadhyay et al. 2018, "Grad-CAM++: generalized gradient-based visual explanations for deep
convolutional networks", Sec. 6.1).

Y is the target's softmax probability on the image, O on its explanation map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradcam_lib.methods import explanation_scope
from gradcam_lib.metrics.occlusion import class_probabilities

__all__ = [
    "average_drop",
    "confidence_drop",
    "confidence_increased",
    "explanation_map_confidence",
    "increase_in_confidence",
]


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``(H, W)`` map to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).clamp(min=torch.finfo(maps.dtype).tiny)
    return ((flat - low[:, None]) / span[:, None]).view_as(maps) * (high > low).to(maps.dtype)[:, None, None]


def explanation_map_confidence(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probability of the target on the image (Y) and on its explanation map (O).

    E = L * I as in Grad-CAM++: L is the map min-max normalised to [0, 1], I the image in pixel
    space ([0, 1], i.e. un-normalised with ``mean``/``std``); E is normalised again for the model,
    so unexplained regions turn black, as in the paper's Fig. 7.

    Returns:
        ``(Y (B,), O (B,))``.
    """
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)  # one value per channel (1 or 3)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    pixels = images * s + m
    explained = (pixels * _unit(maps.to(images.device))[:, None] - m) / s
    with explanation_scope(model):
        return class_probabilities(model, images, targets), class_probabilities(model, explained, targets)


def confidence_drop(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-image term of the Average Drop, ``100 * max(0, Y - O) / Y`` (Grad-CAM++ Sec. 6.1,
    Chattopadhyay et al. 2018): Y the target's score on the image, O on its explanation map."""
    y, o = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(o, dtype=torch.float64)
    return 100 * (y - o).clamp(min=0) / y


def confidence_increased(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool per image, ``O > Y`` (the indicator of Grad-CAM++'s % Increase in Confidence)."""
    return torch.as_tensor(o, dtype=torch.float64) > torch.as_tensor(y, dtype=torch.float64)


def average_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """Average Drop % = 100 * mean_i(max(0, Y_i - O_i) / Y_i) (Grad-CAM++ Sec. 6.1; lower is better)."""
    return float(confidence_drop(y, o).mean())


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> float:
    """% Increase in Confidence = 100 * mean_i 1[Y_i < O_i] (Grad-CAM++ Sec. 6.1; higher is better)."""
    return float(100 * confidence_increased(y, o).double().mean())


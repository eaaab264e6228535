"""Deletion and insertion curves and their areas (RISE, Petsiuk et al. 2018, "RISE: randomized
input sampling for explanation of black-box models", Sec. 4.1, and their ``evaluation.py``).

The score is the softmax probability of the target class.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from gradcam_lib.methods import explanation_scope
from gradcam_lib.metrics.occlusion import class_probabilities
from gradcam_lib.validate import check_maps_for_images

__all__ = ["curve_auc", "deletion_insertion_curves", "rise_blur", "rise_kernel"]


def rise_kernel(klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's blur kernel (``gkern`` in Petsiuk et al.'s ``evaluation.py``): a ``klen`` x ``klen``
    Dirac delta smoothed by ``scipy.ndimage.gaussian_filter(delta, nsig)`` (reflecting borders, so
    the kernel sums to 1 but is not a plain truncated Gaussian). ``(klen, klen)`` float64."""
    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1.0
    return torch.from_numpy(ndimage.gaussian_filter(delta, nsig))


def rise_blur(images: torch.Tensor, klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: every channel convolved with :func:`rise_kernel` with *zero*
    padding of ``klen // 2`` (``conv2d(x, kern, padding=klen//2)`` on the normalised image, so the
    border fades towards 0, the data set mean). ``(B, C, H, W)`` -> same shape."""
    channels = images.shape[1]
    kernel = rise_kernel(klen, nsig).to(images).expand(channels, 1, klen, klen)
    return F.conv2d(images, kernel, padding=klen // 2, groups=channels)


def deletion_insertion_curves(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    n_steps: int = 32,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RISE's causal metrics (Petsiuk et al. 2018, Sec. 4.1, and their ``CausalMetric``). Pixels are
    taken in descending map order (ties: stable sort, i.e. row-major order). **Deletion** sets the
    first k pixels to 0 (the data set mean in normalised space; RISE's ``torch.zeros_like``) and
    records p(class); **insertion** starts from :func:`rise_blur` (``blur_kernel``, ``blur_sigma``:
    RISE's 11 / 5) and puts the first k original pixels back. k goes from 0 to H*W in ``n_steps``
    equal steps (RISE: 224 pixels per step on 224 x 224, i.e. 224 steps, 225 points). The
    ``(image, step)`` inputs go through the model ``batch_size`` at a time, several images per pass
    (all deletion steps, then all insertion steps).

    Returns:
        ``(deletion (B, n_steps + 1), insertion (B, n_steps + 1))`` softmax probabilities.

    Raises:
        ValueError: ``images`` not ``(B, C, H, W)``, ``maps`` not ``(B, H, W)`` of the same B, H, W,
            a map with NaN or infinity, or ``targets`` not one class index per image.
    """
    b, h, w, targets = check_maps_for_images(images, maps, targets)
    order = torch.argsort(maps.to(images.device).reshape(b, -1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=images.device).expand(b, -1))
    counts = torch.linspace(0, h * w, n_steps + 1, device=images.device).round().long()
    blurred = rise_blur(images, blur_kernel, blur_sigma)
    points, total = n_steps + 1, b * (n_steps + 1)
    curves: list[torch.Tensor] = []
    with explanation_scope(model):
        for start_images, fills in ((images, torch.zeros_like(images)), (blurred, images)):
            probs: list[torch.Tensor] = []
            for first in range(0, total, batch_size):  # (image, step) pairs, several images per pass
                pair = torch.arange(first, min(first + batch_size, total), device=images.device)
                image, step = pair // points, pair % points
                chosen = (rank[image] < counts[step][:, None]).view(-1, 1, h, w).float()  # (n, 1, H, W)
                steps = start_images[image] * (1 - chosen) + fills[image] * chosen
                probs.append(class_probabilities(model, steps, targets[image]))
            curves.append(torch.cat(probs).view(b, points))
    return curves[0], curves[1]


def curve_auc(curve: torch.Tensor | np.ndarray) -> np.ndarray:
    """Area under curves sampled at equal steps over [0, 1] (trapezoid rule, as RISE's ``auc``);
    ``(..., n)`` -> ``(...)``."""
    y = np.asarray(curve.detach().cpu() if isinstance(curve, torch.Tensor) else curve, dtype=np.float64)
    return (y.sum(-1) - y[..., 0] / 2 - y[..., -1] / 2) / (y.shape[-1] - 1)


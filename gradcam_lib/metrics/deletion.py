"""Deletion and insertion curves and their areas (RISE, Petsiuk et al. 2018, "RISE: randomized
input sampling for explanation of black-box models", Sec. 4.1, and their ``evaluation.py``).

The score is the softmax probability of the target class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from gradcam_lib.methods import explanation_scope
from gradcam_lib.metrics.occlusion import perturbed_probabilities
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
    images = images.detach()
    rank = _pixel_ranks(maps.to(images.device).reshape(b, -1))
    counts = torch.linspace(0, h * w, n_steps + 1, device=images.device).round().long()
    with explanation_scope(model), torch.no_grad():
        blurred = rise_blur(images, blur_kernel, blur_sigma)
        curves = [  # deletion: the image, then 0 (the data set mean); insertion: the blur, then the image
            perturbed_probabilities(model, b * (n_steps + 1), batch_size,
                                    _step_inputs(start, fill, rank, counts, targets), images.device).view(b, -1)
            for start, fill in ((images, 0.0), (blurred, images))
        ]
    return curves[0], curves[1]


def _step_inputs(
    start: torch.Tensor, fill: torch.Tensor | float, rank: torch.Tensor, counts: torch.Tensor, targets: torch.Tensor
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The chunk builder of one curve: pair ``i`` is step ``i % len(counts)`` of image
    ``i // len(counts)``, whose pixels of rank below ``counts[step]`` are taken from ``fill`` (a
    tensor like ``start``, or a value) and the others from ``start``; a whole chunk at once, as one
    rank-below-count mask broadcast over the channels."""
    points, (height, width) = len(counts), start.shape[-2:]

    def build(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, step = pair // points, pair % points
        chosen = (rank.index_select(0, image) < counts[step][:, None]).view(-1, 1, height, width)  # (n, 1, H, W)
        inputs = start.index_select(0, image)  # a copy, filled in place
        if isinstance(fill, torch.Tensor):
            return torch.where(chosen, fill.index_select(0, image), inputs, out=inputs), targets[image]
        return inputs.masked_fill_(chosen, fill), targets[image]

    return build


def _pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` rank of every pixel of the flattened ``(B, N)`` maps in descending order (0: the
    highest; ties by position, a stable sort), scattered back to the pixels' places."""
    order = torch.argsort(maps, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    return rank.scatter_(1, order, torch.arange(maps.shape[1], device=maps.device).expand_as(order))


def curve_auc(curve: torch.Tensor | np.ndarray) -> np.ndarray:
    """Area under curves sampled at equal steps over [0, 1] (trapezoid rule, as RISE's ``auc``);
    ``(..., n)`` -> ``(...)``."""
    y = np.asarray(curve.detach().cpu() if isinstance(curve, torch.Tensor) else curve, dtype=np.float64)
    return (y.sum(-1) - y[..., 0] / 2 - y[..., -1] / 2) / (y.shape[-1] - 1)


"""Figures shared by every chapter: heatmap overlays, guided-gradient images, boxes, grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from gradcam_lib.methods.display import as_numpy, guided_to_display

__all__ = ["NORMALIZATIONS", "draw_box", "figure_grid", "guided_to_display", "show_guided", "show_overlay"]


def figure_grid(rows: int, cols: int, cell: float = 2.4) -> tuple[Figure, np.ndarray]:
    """A ``rows x cols`` grid of image axes without ticks; ``axes`` is always 2-D."""
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


NORMALIZATIONS = ("max", "minmax")


def _picture(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A picture for ``imshow``: a tensor ``(3, H, W)`` (torch's layout) or an array ``(H, W, 3)``
    (matplotlib's) goes to ``(H, W, 3)``; a tensor ``(H, W, 3)`` or an array ``(3, H, W)`` is
    recognised too when its last / first size alone is 3. Values in [0, 1] or uint8 (a normalised
    model input goes through ``entry.transform.to_display`` first)."""
    tensor = isinstance(image, torch.Tensor)
    picture = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if picture.ndim == 3:
        first, last = picture.shape[0] in (1, 3), picture.shape[-1] in (1, 3, 4)
        if first and (tensor or not last):
            picture = np.moveaxis(picture, 0, -1)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = np.repeat(picture, 3, axis=-1)
    if picture.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W, 3), (3, H, W) or (H, W), got shape {picture.shape}")
    return picture


def _fit(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``heat`` resized to ``size`` bilinearly (align_corners=False), as :func:`~gradcam_lib.methods.grad_cam`
    upsamples its maps."""
    if heat.shape == size:
        return heat
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(heat))[None, None], size=size, mode="bilinear", align_corners=False
    )
    return resized[0, 0].numpy()


def show_overlay(
    ax: Axes,
    image: torch.Tensor | np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    title: str = "",
    alpha: float = 0.5,
    normalize: str = "max",
) -> None:
    """Image with the heatmap on top (jet, as the paper's figures).

    Args:
        image: ``(H, W, 3)`` or ``(3, H, W)``, values in [0, 1] or uint8.
        heatmap: ``(h, w)`` (leading size-1 dimensions are dropped); resized bilinearly to
            ``(H, W)`` when its size differs (a map at the layer's resolution, say).
        normalize: ``"max"`` divides by the map's maximum (its zero stays the coldest colour);
            ``"minmax"`` stretches [min, max] to the whole colour scale. An all-zero (``"max"``)
            or constant (``"minmax"``) map shows the image alone.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    picture = _picture(image)
    heat = as_numpy(heatmap)
    while heat.ndim > 2 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be one 2-D map (h, w), got shape {heat.shape}")
    heat = _fit(heat, picture.shape[:2])
    low = heat.min() if normalize == "minmax" else 0.0
    span = heat.max() - low
    ax.imshow(picture)
    if span > 0:
        ax.imshow((heat - low) / span, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def show_guided(ax: Axes, gradient: torch.Tensor | np.ndarray, title: str = "") -> None:
    """Show an input-space map (Guided Backprop, Guided Grad-CAM) as an image."""
    ax.imshow(guided_to_display(gradient))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_box(ax: Axes, box: Sequence[float], color: str = "lime", label: str = "", linestyle: str = "-") -> None:
    """Draw an inclusive pixel box ``(xmin, ymin, xmax, ymax)`` around the pixels it covers."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    ax.add_patch(
        Rectangle((xmin - 0.5, ymin - 0.5), xmax - xmin + 1, ymax - ymin + 1, fill=False, edgecolor=color,
                  linewidth=2, linestyle=linestyle)
    )
    if label:
        ax.text(xmin, ymin - 2, label, color=color, fontsize=7, va="bottom",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})

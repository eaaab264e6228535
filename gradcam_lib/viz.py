"""Figures shared by every chapter: heatmap overlays, guided-gradient images, boxes, grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["figure_grid", "show_overlay", "show_guided", "draw_box", "guided_to_display"]


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def figure_grid(rows: int, cols: int, cell: float = 2.4) -> tuple[Figure, np.ndarray]:
    """A ``rows x cols`` grid of image axes without ticks; ``axes`` is always 2-D."""
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def show_overlay(ax: Axes, image: np.ndarray, heatmap: torch.Tensor | np.ndarray, title: str = "", alpha: float = 0.5) -> None:
    """Image with the heatmap on top, scaled by the map's own maximum (jet, as the paper's
    figures). An all-zero map shows the image alone."""
    heat = _numpy(heatmap)
    peak = heat.max()
    ax.imshow(image)
    if peak > 0:
        ax.imshow(heat / peak, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def guided_to_display(gradient: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` input-space gradient -> ``(H, W, 3)`` in [0, 1], the usual deprocessing of
    guided-backprop images: centre, scale to 0.1 standard deviations, shift to 0.5, clip."""
    g = _numpy(gradient)
    g = (g - g.mean()) / (g.std() + 1e-12) * 0.1 + 0.5
    return np.clip(g, 0, 1).transpose(1, 2, 0)


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

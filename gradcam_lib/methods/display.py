"""Maps as pictures: pure array functions (no matplotlib) that turn an explanation or an image into
the pixels a person sees -- the figures (:mod:`gradcam_lib.report.viz`) and the user study's stimuli
(:mod:`gradcam_lib.experiments.user_study`) show the same pictures."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["as_numpy", "guided_to_display", "resize_picture"]


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor (detached, on the CPU) or an array as ``float32`` numpy."""
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def guided_to_display(gradient: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` input-space gradient -> ``(H, W, 3)`` in [0, 1], the usual deprocessing of
    guided-backprop images: centre, scale to 0.1 standard deviations, shift to 0.5, clip. The map
    is first divided by its largest magnitude, so that the result does not depend on its scale (a
    random-weight network's maps of ~1e-16 look like any other); an all-zero map is flat grey."""
    g = as_numpy(gradient)
    peak = np.abs(g).max()
    if not peak > 0:
        return np.full((*g.shape[1:], g.shape[0]), 0.5, dtype=np.float32)
    g = g / peak
    g = (g - g.mean()) / (g.std() + 1e-12) * 0.1 + 0.5
    return np.clip(g, 0, 1).transpose(1, 2, 0)


def resize_picture(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] -> ``(size, size, 3)`` uint8 (bilinear, antialiased)."""
    pixels = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pixels.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))

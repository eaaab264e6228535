"""Chapter 6: sensitivity of Grad-CAM to single-pixel attacks (KTH's own experiment; the paper has
none). KTH numbers recomputed from its stored result files: ILSVRC val images, torchvision VGG-16
and GoogLeNet, differential evolution (maxiter 150, popsize 175 in total), 75 successful attacks
per model; the Grad-CAM value at the attacked pixel, before (original top-1 class) and after (new
top-1 class)."""

from __future__ import annotations

import pandas as pd

__all__ = ["kth_sensitivity"]

_COLUMNS = ["model", "successes", "before_mean", "before_sd", "before_min", "before_max",
            "after_mean", "after_sd", "after_min", "after_max", "source"]
_ROWS = [
    ("VGG-16", 75, 0.0609, 0.0553, 0.0, 0.2450, 0.0683, 0.0716, 0.0, 0.2840, "KTH"),
    ("GoogLeNet", 75, 0.3476, 0.1984, 0.0264, 0.9397, 0.3039, 0.1875, 0.0028, 0.9302, "KTH"),
]


def kth_sensitivity() -> pd.DataFrame:
    """KTH's Grad-CAM value at the attacked pixel (mean / sd / min / max), before and after."""
    return pd.DataFrame(_ROWS, columns=_COLUMNS)

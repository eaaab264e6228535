"""Chapter 8: Grad-CAM under adversarial attacks.

No number was published for this task. The KTH reproduction ran FGSM on VGG-16 with eps = 0.05
*in the normalised input space* (no clipping to valid pixels) and showed three pictures, with
Grad-CAM of the true class before and after the attack and of the new class; it computed no metric.
Their eps in pixel units is 0.05 * std of each channel, about 2.9/255.
"""

from __future__ import annotations

import pandas as pd

from gradcam_lib.datasets.transforms import IMAGENET_STD

__all__ = ["KTH_EPS_NORMALISED", "kth_adversarial_examples", "kth_eps_in_pixels"]

KTH_EPS_NORMALISED = 0.05

_KTH_EXAMPLES = [
    ("VGG-16", "FGSM", "crutch", "swab"),
    ("VGG-16", "FGSM", "dragonfly", "tarantula"),
    ("VGG-16", "FGSM", "rose hip", "fly"),
]


def kth_eps_in_pixels() -> tuple[float, float, float]:
    """KTH's eps = 0.05 in normalised units, per channel in [0, 1] pixel units (0.05 * std)."""
    red, green, blue = IMAGENET_STD
    return KTH_EPS_NORMALISED * red, KTH_EPS_NORMALISED * green, KTH_EPS_NORMALISED * blue


def kth_adversarial_examples() -> pd.DataFrame:
    """The KTH reproduction's three FGSM examples (qualitative only: no metric was computed)."""
    frame = pd.DataFrame(_KTH_EXAMPLES, columns=["model", "attack", "class before", "class after"])
    return frame.assign(eps="0.05 normalised (~2.9/255 pixels)", source="KTH")

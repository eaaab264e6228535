"""Chapter 5: chest X-ray localisation (NIH ChestX-ray14, ``BBox_List_2017.csv``: 984 boxes of 8
findings on 880 images).

"KTH" = the DD2412 reproduction, recomputed from its stored result files: mean share of the
top-15 % pixels (>= 0.85 after per-image min-max of the positive part) inside the finding's box,
over the 984 boxes; IG and GradientShap with captum's zero baseline (zero in the normalised input
space, i.e. the mean colour). Its label map did not follow CheXNet's output order (only Effusion was right),
so the CheXNet row is suspect.

"ChestX-ray8" = Wang et al., ChestX-ray8, CVPR 2017, Table 4: localisation accuracy (Acc.) and
average false positives (AFP) per finding at T(IoBB) in {0.1, 0.25, 0.5, 0.75, 0.9}, for their own
heatmaps (ResNet-50, transition layer x prediction weights, boxes from thresholds 60 and 180).
"""

from __future__ import annotations

import pandas as pd

from gradcam_lib.datasets.chestxray import FINDINGS as _CX8_FINDINGS  # ChestX-ray8 tables' order

__all__ = ["chestxray8_localization", "kth_box_shares"]

#: KTH's methods under this book's labels: KTH's notes say "zero baseline" for captum's IG (50 steps)
#: and GradientShap; on CheXNet's ImageNet-normalised input a zero tensor is the mean colour (a grey).
_KTH_METHODS = ("Grad-CAM", "Grad-CAM++", "IG (mean-colour baseline)", "GradientShap (mean-colour baseline)")
_KTH_ROWS = [
    ("CheXNet DenseNet-121", (0.1313, 0.2537, 0.2713, 0.2583)),
    ("a second DenseNet-121", (0.2068, 0.2791, 0.4245, 0.4131)),
]


def kth_box_shares() -> pd.DataFrame:
    """KTH's mean box share per (model, method), long format: model, method, kth_share, source."""
    rows = [
        (model, method, value, "KTH")
        for model, values in _KTH_ROWS
        for method, value in zip(_KTH_METHODS, values, strict=True)
    ]
    return pd.DataFrame(rows, columns=["model", "method", "kth_share", "source"])


_CX8_TABLE4 = {  # T(IoBB): (Acc. per finding, AFP per finding)
    0.1: ((0.7277, 0.9931, 0.7124, 0.7886, 0.4352, 0.1645, 0.7500, 0.4591),
          (0.8323, 0.3506, 0.7998, 0.5589, 0.6423, 0.6047, 0.9055, 0.4776)),
    0.25: ((0.5500, 0.9794, 0.5424, 0.5772, 0.2823, 0.0506, 0.5583, 0.3469),
           (0.9167, 0.4553, 0.8598, 0.6077, 0.6707, 0.6158, 0.9614, 0.5000)),
    0.5: ((0.2833, 0.8767, 0.3333, 0.4227, 0.1411, 0.0126, 0.3833, 0.1836),
          (1.0203, 0.5630, 0.9268, 0.6585, 0.6941, 0.6189, 1.0132, 0.5285)),
    0.75: ((0.1666, 0.7260, 0.2418, 0.3252, 0.1176, 0.0126, 0.2583, 0.1020),
           (1.0619, 0.6616, 0.9603, 0.6921, 0.7043, 0.6199, 1.0569, 0.5396)),
    0.9: ((0.1333, 0.6849, 0.2091, 0.2520, 0.0588, 0.0126, 0.2416, 0.0816),
          (1.0752, 0.7226, 0.9797, 0.7124, 0.7144, 0.6199, 1.0732, 0.5437)),
}


def chestxray8_localization() -> pd.DataFrame:
    """ChestX-ray8 Table 4, long format: finding, T, acc, afp, source."""
    rows = [
        (finding, t, acc, afp, "ChestX-ray8 Table 4")
        for t, (accs, afps) in _CX8_TABLE4.items()
        for finding, acc, afp in zip(_CX8_FINDINGS, accs, afps, strict=True)
    ]
    return pd.DataFrame(rows, columns=["finding", "T", "acc", "afp", "source"])

"""Chapter 1: weakly supervised localisation on ILSVRC val.

"paper" = Selvaraju et al., Grad-CAM (ICCV 2017 / IJCV 2019); "KTH" = the DD2412 reproduction,
recomputed from its stored result files.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["localization_errors"]

_LOCALIZATION_COLUMNS = ["model", "method", "cls_top1", "cls_top5", "loc_top1", "loc_top5", "source"]
_LOCALIZATION_ROWS = [
    ("VGG-16", "Grad-CAM", 30.38, 10.89, 56.51, 46.41, "paper Table 1"),
    ("VGG-16", "Backprop", 30.38, 10.89, 61.12, 51.46, "paper Table 1"),
    ("AlexNet", "Grad-CAM", 44.2, 20.8, 68.3, 56.6, "paper Table 1"),
    ("GoogLeNet", "Grad-CAM", 31.9, 11.3, 60.09, 49.34, "paper Table 1"),
    ("VGG-16", "Grad-CAM", 30.94, 10.87, 55.82, 44.82, "KTH"),
    ("AlexNet", "Grad-CAM", 44.58, 21.69, 68.04, 56.18, "KTH"),
    ("GoogLeNet", "Grad-CAM", 32.46, 11.82, 56.89, 45.44, "KTH"),
]


def localization_errors() -> pd.DataFrame:
    """Weakly supervised localisation on ILSVRC val, errors in % (paper Table 1 and KTH)."""
    return pd.DataFrame(_LOCALIZATION_ROWS, columns=_LOCALIZATION_COLUMNS)

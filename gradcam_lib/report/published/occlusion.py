"""Chapter 3: faithfulness.

"paper" = Selvaraju et al., Grad-CAM, Table 2 (rank correlation with occlusion maps, 2510 PASCAL
VOC 2007 val images); "KTH" = the DD2412 reproduction (120 ILSVRC images; its ranks were
``np.argsort`` indices, so its values are not rank correlations); Grad-CAM++ = Chattopadhyay et al.
2018 Table 1 (VGG-16, ILSVRC2012 val); Score-CAM = Wang et al. 2020 (VGG-16, 2000 ILSVRC val
images); RISE = Petsiuk et al. 2018 (ResNet-50, ImageNet val).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["confidence_metrics", "deletion_insertion", "rank_correlations"]


def rank_correlations() -> pd.DataFrame:
    """Mean Spearman rank correlation of each method's map with the occlusion map (sd for KTH)."""
    return pd.DataFrame(
        [
            ("Grad-CAM", 0.254, None, "paper Table 2"),
            ("Guided Grad-CAM", 0.261, None, "paper Table 2"),
            ("Guided Backprop", 0.168, None, "paper Table 2"),
            ("c-MWP", 0.220, None, "paper Table 2"),
            ("CAM", 0.208, None, "paper Table 2"),
            ("Grad-CAM", 0.0505, 0.128, "KTH (argsort, invalid)"),
            ("Guided Grad-CAM", 0.0526, 0.129, "KTH (argsort, invalid)"),
            ("Guided Backprop", 0.0095, 0.124, "KTH (argsort, invalid)"),
        ],
        columns=["method", "mean", "sd", "source"],
    )


def confidence_metrics() -> pd.DataFrame:
    """Average Drop % (lower is better) and % Increase in Confidence (higher is better) of E = L * I."""
    return pd.DataFrame(
        [
            ("Grad-CAM", 46.56, 13.42, "Grad-CAM++ Table 1 (VGG-16)"),
            ("Grad-CAM++", 36.84, 17.05, "Grad-CAM++ Table 1 (VGG-16)"),
            ("Grad-CAM", 47.8, 19.6, "Score-CAM (VGG-16)"),
            ("Grad-CAM++", 45.5, 18.9, "Score-CAM (VGG-16)"),
        ],
        columns=["method", "average_drop", "increase_in_confidence", "source"],
    )


def deletion_insertion() -> pd.DataFrame:
    """Deletion AUC (lower is better) and insertion AUC (higher is better)."""
    return pd.DataFrame(
        [
            ("Grad-CAM", 0.089, 0.357, "Score-CAM (VGG-16)"),
            ("Grad-CAM", 0.1232, 0.6766, "RISE (ResNet-50)"),
        ],
        columns=["method", "deletion_auc", "insertion_auc", "source"],
    )

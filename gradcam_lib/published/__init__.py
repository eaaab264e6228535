"""Published numbers that the chapters print beside their own, one module per chapter, each table
with its source. "paper" = Selvaraju et al., Grad-CAM (ICCV 2017 / IJCV 2019); "KTH" = the DD2412
reproduction, recomputed from its stored result files."""

from gradcam_lib.published.chestxray import chestxray8_localization, kth_box_shares
from gradcam_lib.published.localization import localization_errors
from gradcam_lib.published.user_study import class_discrimination, trust_counts, trust_means

__all__ = [
    "chestxray8_localization",
    "class_discrimination",
    "kth_box_shares",
    "localization_errors",
    "trust_counts",
    "trust_means",
]

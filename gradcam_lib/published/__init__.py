"""Published numbers that the chapters print beside their own, one module per chapter, each table
with its source. "paper" = Selvaraju et al., Grad-CAM (ICCV 2017 / IJCV 2019); "KTH" = the DD2412
reproduction, recomputed from its stored result files (../shared/reference in the project notes)."""

from gradcam_lib.published.localization import localization_errors

__all__ = ["localization_errors"]

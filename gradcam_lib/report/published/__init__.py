"""Published numbers that the chapters print beside their own, one module per chapter, each table
with its source. "paper" = Selvaraju et al., Grad-CAM (ICCV 2017 / IJCV 2019); "KTH" = the DD2412
reproduction, recomputed from its stored result files."""

from gradcam_lib.report.published.adversarial import kth_adversarial_examples, kth_eps_in_pixels
from gradcam_lib.report.published.chestxray import chestxray8_localization, kth_box_shares
from gradcam_lib.report.published.fidelity import kth_fidelity_contrastivity
from gradcam_lib.report.published.localization import localization_errors
from gradcam_lib.report.published.occlusion import confidence_metrics, deletion_insertion, rank_correlations
from gradcam_lib.report.published.pointing import paper_pointing, torchray_pointing
from gradcam_lib.report.published.sensitivity import kth_sensitivity
from gradcam_lib.report.published.user_study import class_discrimination, trust_counts, trust_means

__all__ = [
    "chestxray8_localization",
    "class_discrimination",
    "confidence_metrics",
    "deletion_insertion",
    "kth_adversarial_examples",
    "kth_box_shares",
    "kth_eps_in_pixels",
    "kth_fidelity_contrastivity",
    "kth_sensitivity",
    "localization_errors",
    "paper_pointing",
    "rank_correlations",
    "torchray_pointing",
    "trust_counts",
    "trust_means",
]

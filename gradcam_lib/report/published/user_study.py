"""Chapter 4: the trust user study.

"paper" = Selvaraju et al., Grad-CAM (ICCV 2017 / IJCV 2019), Sec. 5.2 "Evaluating Trust": 54 AMT
workers compared explanations of VGG-16 and AlexNet on PASCAL VOC images that both classify
correctly, on a scale of -2..+2 where + means the more accurate model (VGG-16) was judged more
reasonable. Only the two means were published: no spread, no number of images or answers per
worker, and the paper does not say whether the same workers rated both methods.

"KTH" = the DD2412 reproduction: a Google Form, 36 respondents, 13 ILSVRC images, 468 answers per
method on the same -2..+2 scale; the answer counts below were recomputed from its stored responses.
468 = 36 x 13: every respondent answered every image under both methods (a design paired by rater
and image), but the counts are pooled, so neither the pairing nor the clustering can be measured.
Its image set was chosen with VGG-16-BN predictions while the maps came from plain VGG-16.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["ANSWER_SCALE", "class_discrimination", "trust_counts", "trust_means"]

ANSWER_SCALE: tuple[int, ...] = (-2, -1, 0, 1, 2)

_MEAN_COLUMNS = ["source", "method", "mean", "sd", "raters", "images", "answers"]
_MEAN_ROWS = [
    ("paper", "Guided Backprop", 1.00, None, 54, None, None),
    ("paper", "Guided Grad-CAM", 1.27, None, 54, None, None),
    ("KTH", "Guided Backprop", 0.4359, 1.2850, 36, 13, 468),
    ("KTH", "Guided Grad-CAM", 0.2714, 1.3731, 36, 13, 468),
]

# KTH: number of answers -2, -1, 0, +1, +2 per method (+ = VGG-16 judged more reasonable).
_KTH_COUNTS = {
    "Guided Backprop": (55, 47, 121, 129, 116),
    "Guided Grad-CAM": (61, 89, 102, 94, 122),
}


def trust_means() -> pd.DataFrame:
    """Published means (and sd where known) of the -2..+2 trust score, paper Sec. 5.2 and KTH.

    The sd is the sample sd (ddof=1) of KTH's answers; the paper published no spread."""
    return pd.DataFrame(_MEAN_ROWS, columns=_MEAN_COLUMNS).astype({"sd": float, "images": "Int64", "answers": "Int64"})


def trust_counts() -> pd.DataFrame:
    """KTH's answer counts, long format: ``source, method, answer (-2..2), count``."""
    rows = [("KTH", method, answer, count) for method, counts in _KTH_COUNTS.items()
            for answer, count in zip(ANSWER_SCALE, counts, strict=True)]
    return pd.DataFrame(rows, columns=["source", "method", "answer", "count"])


def class_discrimination() -> pd.DataFrame:
    """Paper Sec. 5.1: share of correct answers when raters named the class shown by an explanation
    (VOC images with two categories). KTH did not repeat this study."""
    return pd.DataFrame(
        [("paper", "Guided Backprop", 44.44), ("paper", "Guided Grad-CAM", 61.23)],
        columns=["source", "method", "accuracy_pct"],
    )

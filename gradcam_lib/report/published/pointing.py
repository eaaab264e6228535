"""Chapter 2: the pointing game.

"paper" = Selvaraju et al., Grad-CAM (ICCV 2017 / IJCV 2019), Sec. 4.3; "KTH" = the DD2412
reproduction, recomputed from its stored result files; TorchRay = Fong et al.'s benchmark
(facebookresearch/TorchRay, docs/pointing.csv): accuracy = mean over classes, tolerance 15 px.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["paper_pointing", "torchray_pointing"]

_TORCHRAY_COLUMNS = ["method", "dataset", "model", "acc_classes", "difficult_classes", "source"]
_TORCHRAY = {  # method: VOC07 VGG16, VOC07 RN50, COCO14 VGG16, COCO14 RN50 as (all, difficult)
    "centre": [(69.6, 42.4), (69.6, 42.4), (27.8, 19.5), (27.8, 19.5)],
    "backprop": [(76.3, 56.9), (72.3, 56.8), (37.7, 31.4), (35.0, 29.4)],
    "guided_backprop": [(75.9, 53.0), (77.2, 59.4), (39.1, 31.4), (42.1, 35.3)],
    "gradcam": [(86.6, 74.0), (90.4, 82.3), (54.2, 49.0), (57.3, 52.3)],
    "rise": [(86.9, 75.1), (86.4, 78.8), (50.8, 45.3), (54.7, 50.0)],
    "extremal_perturbation": [(88.0, 76.1), (88.9, 78.7), (51.5, 45.9), (56.5, 51.5)],
}
_SETTINGS = [
    ("VOC07 test", "VGG-16"),
    ("VOC07 test", "ResNet-50"),
    ("COCO14 val", "VGG-16"),
    ("COCO14 val", "ResNet-50"),
]


def torchray_pointing() -> pd.DataFrame:
    """TorchRay's pointing-game table (mean class accuracy in %, all / difficult subset); method
    keys are those of :data:`gradcam_lib.methods.HEATMAP_METHODS` plus ``centre``."""
    rows = [
        (method, dataset, model, all_, difficult, "TorchRay")
        for method, values in _TORCHRAY.items()
        for (dataset, model), (all_, difficult) in zip(_SETTINGS, values, strict=True)
    ]
    return pd.DataFrame(rows, columns=_TORCHRAY_COLUMNS)


def paper_pointing() -> pd.DataFrame:
    """Pointing accuracy in % with the rejection rule over the top-5 guesses (paper Sec. 4.3), and
    KTH's accuracy / "recall" at a raw map-maximum threshold of 0.5 (ILSVRC val, no tolerance)."""
    return pd.DataFrame(
        [
            ("Grad-CAM", "COCO", "GoogLeNet (COCO fine-tuned)", None, 70.58, "paper Sec. 4.3"),
            ("c-MWP", "COCO", "GoogLeNet (COCO fine-tuned)", None, 60.30, "paper Sec. 4.3"),
            ("Grad-CAM", "ILSVRC val", "VGG-16", 86.42, 82.57, "KTH (tau = 0.5 raw)"),
            ("Grad-CAM", "ILSVRC val", "GoogLeNet", 90.42, 76.69, "KTH (tau = 0.5 raw)"),
        ],
        columns=["method", "dataset", "model", "accuracy", "rejection_accuracy", "source"],
    )

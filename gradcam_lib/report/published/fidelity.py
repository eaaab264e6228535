"""Chapter 7: fidelity and contrastivity (KTH's experiment; the paper has none). KTH numbers,
recomputed from its stored result files: MNIST small CNN and a CIFAR-10 GoogLeNet; maps binarised
above the p-th percentile of their positive values, p in {1, 10}."""

from __future__ import annotations

import pandas as pd

__all__ = ["kth_fidelity_contrastivity"]

# (dataset, method) -> (fidelity p=1, contrastivity p=1, fidelity p=10, contrastivity p=10)
_VALUES = {
    ("MNIST", "Grad-CAM"): (0.501, 0.647, 0.470, 0.700),
    ("MNIST", "SHAP"): (0.916, 0.671, 0.916, 0.696),
    ("MNIST", "Integrated Gradients"): (0.929, 0.663, 0.929, 0.698),
    ("CIFAR-10", "Grad-CAM"): (0.782, 0.887, 0.770, 0.911),
    ("CIFAR-10", "SHAP"): (0.802, 0.694, 0.798, 0.720),
    ("CIFAR-10", "Integrated Gradients"): (0.762, 0.729, 0.758, 0.754),
}


def kth_fidelity_contrastivity() -> pd.DataFrame:
    """Long format: dataset, method, percentile, fidelity, contrastivity, source."""
    rows = [
        (dataset, method, p, values[2 * i], values[2 * i + 1], "KTH")
        for (dataset, method), values in _VALUES.items()
        for i, p in enumerate((1, 10))
    ]
    return pd.DataFrame(rows, columns=["dataset", "method", "percentile", "fidelity", "contrastivity", "source"])

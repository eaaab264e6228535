"""Chapter 9's presentation: intervals over images of the similarity measures of the sanity checks
(:mod:`gradcam_lib.experiments.sanity`), the curves of Adebayo et al.'s Fig. 2 and their map grid.

A randomised map that is constant (an all-zero Grad-CAM: every channel weight negative) has no
ranking and no edges: its rank and HOG measures are NaN in the rows and are scored 0 here (it kept
nothing of the original), and the tables count such maps (``constant``). Where the trained model's
own map is constant (an all-zero Grad-CAM of the explained class), there is nothing to compare: the
measure stays NaN and the image is left out (``n`` counts the images that have the measure).
Measures are rounded to
10 decimals first, so that a method that is exactly unchanged (every value 1 up to floating-point
noise) gets the interval [1, 1] rather than a failed bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from gradcam_lib.metrics.similarity import MEASURES
from gradcam_lib.report import viz
from gradcam_lib.stats import mean_ci, paired_difference

__all__ = [
    "MEASURE_NAMES",
    "curves_figure",
    "interval_table",
    "maps_figure",
    "paired_to",
    "scored",
    "stage_labels",
    "wide",
]

MEASURE_NAMES = {"spearman": "Spearman", "spearman_abs": "Spearman |.|", "ssim": "SSIM", "hog": "HOG"}


def scored(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the NaN rank and HOG measures of constant randomised maps set to 0."""
    constant = rows["constant"] == 1.0
    filled = {m: rows[m].mask(constant & rows[m].isna(), 0.0) for m in ("spearman", "spearman_abs", "hog")}
    return rows.assign(**filled).round({m: 10 for m in MEASURES})


def stage_labels(rows: pd.DataFrame) -> dict[int, str]:
    """``{stage: "L. layer"}`` in stage order (1 = the logits' layer)."""
    pairs = rows[["stage", "layer"]].drop_duplicates().sort_values("stage")
    return {int(s): f"{int(s)}. {name}" for s, name in pairs.itertuples(index=False)}


def interval_table(rows: pd.DataFrame, by: Sequence[str], measures: Sequence[str] = MEASURES,
                   confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per group of ``by`` and measure: mean over images, BCa bootstrap interval, the images that
    have the measure (``n``) and the constant randomised maps among the group's rows.

    Returns:
        Long table ``(*by, measure, mean, low, high, n, constant)``.
    """
    table = []
    for keys, group in scored(rows).groupby(list(by), sort=False):
        for measure in measures:
            values = group[measure].to_numpy(np.float64)
            mean, low, high = mean_ci(values, confidence, seed)
            table.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True)),
                          "measure": measure, "mean": mean, "low": low, "high": high,
                          "n": int(np.isfinite(values).sum()), "constant": int(group["constant"].sum())})
    return pd.DataFrame(table)


def wide(table: pd.DataFrame, index: str, columns: str, labels: Mapping[str, str] | None = None,
         column_labels: Mapping[object, str] | None = None, digits: int = 2) -> pd.DataFrame:
    """``mean [low, high]`` cells of :func:`interval_table`, ``index`` down, ``columns`` across."""
    text = table.assign(cell=[f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                              for m, lo, hi in table[["mean", "low", "high"]].itertuples(index=False)])
    grid = text.pivot(index=index, columns=columns, values="cell")
    grid = grid.loc[list(dict.fromkeys(table[index]))][list(dict.fromkeys(table[columns]))]
    grid = grid.rename(index=dict(labels or {}), columns={k: v for k, v in (column_labels or {}).items()})
    return grid.rename_axis(index=None, columns=None)


def paired_to(rows: pd.DataFrame, method: str, reference: str, measure: str, stage: int | None = None,
              confidence: float = 0.95, seed: int = 0):
    """Paired bootstrap over images of ``measure(method) - measure(reference)`` (at ``stage``)."""
    data = scored(rows if stage is None else rows[rows["stage"] == stage])
    table = data.pivot_table(index="image_id", columns="method", values=measure)
    return paired_difference(table[method].to_numpy(), table[reference].to_numpy(), confidence=confidence, seed=seed)


def curves_figure(rows: pd.DataFrame, labels: Mapping[str, str], measures: Sequence[str] = MEASURES) -> Figure:
    """Adebayo et al.'s Fig. 2: mean similarity to the trained model's map (over images) against the
    randomised stage, one line per method; rows: the tests, columns: the measures."""
    data = scored(rows)
    tests = list(dict.fromkeys(data["test"]))
    names = stage_labels(data)
    fig, axes = plt.subplots(len(tests), len(measures), figsize=(3.6 * len(measures), 3.4 * len(tests)),
                             squeeze=False, sharex=True, sharey=True)
    means = data.groupby(["test", "method", "stage"])[list(measures)].mean()
    for r, test in enumerate(tests):
        for c, measure in enumerate(measures):
            ax = axes[r, c]
            for method in dict.fromkeys(data["method"]):
                curve = means.loc[(test, method)][measure]
                ax.plot(curve.index, curve.to_numpy(), marker=".", label=labels.get(method, method))
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"{test}: {MEASURE_NAMES.get(measure, measure)}", fontsize=9)
            ax.set_xticks(list(names), list(names.values()), rotation=90, fontsize=6)
    axes[0, 0].set_ylabel("similarity to the trained model's map")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def maps_figure(series: Mapping[int, Mapping[str, torch.Tensor]], picture: np.ndarray, index: int,
                labels: Mapping[str, str], column_titles: Mapping[int, str]) -> Figure:
    """Adebayo et al.'s map grid for one image (``picture``, ``(H, W, 3)`` in [0, 1], shown top
    left): rows are methods, columns the trained model (``series[0]``) and the model randomised up
    to each stage of ``series``; the absolute map from its minimum to its 99th percentile per panel
    (their visualisation: a few large gradients would leave the rest black)."""
    depths, methods = list(series), list(series[0])
    fig, axes = viz.figure_grid(len(methods), len(depths) + 1, cell=1.4)
    axes[0, 0].imshow(picture)
    for r, method in enumerate(methods):
        for c, depth in enumerate(depths, start=1):
            ax = axes[r, c]
            heat = series[depth][method][index].abs().numpy()
            low, high = heat.min(), np.percentile(heat, 99)
            ax.imshow((heat - low) / (high - low) if high > low else np.zeros_like(heat), cmap="gray", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(column_titles.get(depth, str(depth)), fontsize=7)
        label = axes[r, 1]
        label.set_axis_on()
        label.set_xticks([])
        label.set_yticks([])
        label.set_ylabel(labels.get(method, method), fontsize=8)
    fig.tight_layout()
    return fig

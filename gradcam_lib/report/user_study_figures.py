"""Chapter 4's figures: the stimuli with the answer key written on them, the published answers and
intervals (:class:`~gradcam_lib.report.user_study.KthCounts`), and the power curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from gradcam_lib.metrics import study_power
from gradcam_lib.metrics.agreement import STUDY_METHODS
from gradcam_lib.report.user_study import KthCounts, Stimulus

__all__ = ["power_figure", "published_figure", "stimuli_figure"]


def stimuli_figure(items: Sequence[Stimulus], models: Sequence[str], methods: Sequence[str] = tuple(STUDY_METHODS)
                   ) -> Figure:
    """One row per study image: the picture, then each method's explanation by each model (in
    ``models`` order), titled with the method and the model -- the answer key, not for raters."""
    columns = [(model, method) for method in methods for model in models]
    fig, axes = plt.subplots(len(items), 1 + len(columns), figsize=(1.6 * (1 + len(columns)), 1.75 * len(items)),
                             squeeze=False)
    for row, item in zip(axes, items, strict=True):
        row[0].imshow(item.picture)
        row[0].set_title(f"{item.image_id}: {item.class_name}", fontsize=8)
        for ax, (model, method) in zip(row[1:], columns, strict=True):
            ax.imshow(item.maps[model, method])
            ax.set_title(f"{STUDY_METHODS[method]}\n{model}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def published_figure(counts: pd.DataFrame, kth: KthCounts, iccs: Sequence[float], level: float = 0.95) -> Figure:
    """Left: KTH's answer shares per method; middle: the paper's means and KTH's with 95 % intervals
    over raters at icc 0 and 1; right: KTH's Guided Grad-CAM - Guided Backprop interval against rho,
    one band per icc of ``iccs``, with the paper's difference."""
    s = kth.summary
    mean_ggc, mean_gb = s.loc["Guided Grad-CAM", "mean"], s.loc["Guided Backprop", "mean"]
    sd_ggc, sd_gb = s.loc["Guided Grad-CAM", "sd"], s.loc["Guided Backprop", "sd"]
    paper_difference = kth.paper_means["Guided Grad-CAM"] - kth.paper_means["Guided Backprop"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 3.9), gridspec_kw={"width_ratios": [1.3, 1, 1.3]})
    shares = counts.assign(share=counts["count"] / counts.groupby("method")["count"].transform("sum"))
    sns.barplot(data=shares, x="answer", y="share", hue="method", ax=left)
    left.set_title("KTH: answers (+ = VGG-16 judged more reasonable)", fontsize=10)
    left.set_xlabel("answer")
    left.set_ylabel(f"share of {kth.raters * kth.images} answers")
    order = ["Guided Backprop", "Guided Grad-CAM"]
    y = np.arange(len(order))
    middle.scatter(kth.paper_means[order], y - 0.2, marker="D", color="C3", label="paper (no interval)")
    for shift, icc, color in ((0.0, 0.0, "C0"), (0.2, 1.0, "C2")):
        found = [kth.intervals[m, icc] for m in order]
        middle.errorbar([f["estimate"] for f in found], y + shift, fmt="o", capsize=3, color=color,
                        xerr=np.array([[f["estimate"] - f["low"], f["high"] - f["estimate"]] for f in found]).T,
                        label=f"KTH, icc = {icc:g} (n_eff = {found[0]['n_eff']:.0f})")
    middle.set_yticks(y, order)
    middle.axvline(0, color="grey", linestyle=":")
    middle.set_ylim(-1.4, 1.5)
    middle.set_xlabel("mean score (-2..+2)")
    middle.set_title(f"means (KTH: 95 % CI over {kth.raters} raters)", fontsize=10)
    middle.legend(fontsize=7, loc="lower center")
    rho_grid = np.linspace(0, 0.95, 96).tolist()
    for icc, color in zip(iccs, plt.cm.viridis(np.linspace(0, 0.9, len(iccs))), strict=True):
        band = study_power.difference_sensitivity(mean_ggc, mean_gb, sd_ggc, sd_gb, kth.raters, kth.images, rho_grid,
                                                  [icc], level, True)
        right.fill_between(band["rho"], band["low"], band["high"], color=color, alpha=0.12)
        right.plot(band["rho"], band["high"], color=color, label=f"icc = {icc:g}")
        right.plot(band["rho"], band["low"], color=color)
    right.axhline(0, color="black", linewidth=0.8)
    right.axhline(mean_ggc - mean_gb, color="grey", linestyle="--", label="KTH estimate")
    right.axhline(paper_difference, color="C3", linestyle=":", label="paper's difference")
    right.set_xlabel("rho: correlation of a rater's two mean scores")
    right.set_ylabel("Guided Grad-CAM - Guided Backprop")
    right.set_title("KTH's difference: 95 % CI over raters", fontsize=10)
    right.set_ylim(-0.9, 0.8)
    right.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    return fig


def power_figure(delta: float, sd_first: float, sd_second: float, rhos: Sequence[float], iccs: Sequence[float],
                 images: int, target_power: float = 0.8, alpha: float = 0.05) -> sns.FacetGrid:
    """The paired t-test's power against the number of raters (10 to 1000, log scale), one panel per
    icc, one line per rho; KTH's 36 and the paper's 54 raters marked."""
    grid = np.unique(np.geomspace(10, 1000, 60).astype(int)).tolist()
    curves = study_power.power_curve(grid, delta, sd_first, sd_second, rhos, iccs, images, alpha)
    curves["panel"] = curves["icc"].map(lambda icc: f"icc = 1 ({images} answers worth one)" if icc == 1
                                        else f"icc = {icc}, {images} images per rater")
    plot = sns.relplot(data=curves, x="raters", y="power", hue="rho", col="panel", kind="line", height=3.3,
                       aspect=1.1, palette="viridis", facet_kws={"sharex": True})
    for ax in plot.axes.flat:
        ax.set_xscale("log")
        ax.axhline(target_power, color="grey", linestyle=":")
        for n, label, align in ((36, "KTH ", "right"), (54, " paper", "left")):
            ax.axvline(n, color="black", linewidth=0.8, linestyle="--")
            ax.text(n, 0.02, label, fontsize=8, ha=align)
    plot.set_titles("{col_name}", size=9)
    return plot

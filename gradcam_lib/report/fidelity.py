"""Chapter 7's presentation: summaries of the rows of
:class:`~gradcam_lib.experiments.fidelity.FidelityExperiment` (means with bootstrap intervals, the
images being the independent units), the paired tests (paired bootstrap and Fisher's sign-flip
randomisation test), the tables under KTH's and Pope et al.'s (CVPR 2019, Sec. 4.3) definitions
and the chapter's figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from scipy import stats

from gradcam_lib.datasets import build_dataset
from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.mnist import CIFAR10_CLASSES, Split, as_samples, load_cifar10
from gradcam_lib.models import ModelEntry, load_model
from gradcam_lib.models.mnist import accuracy, seeded_small_cnn, small_entry, train_classifier
from gradcam_lib.report import viz
from gradcam_lib.stats import PairedDifference, mcnemar, mean_ci, paired_difference

__all__ = [
    "METRICS",
    "binarisation_table",
    "convergence_table",
    "evidence",
    "load_run",
    "mask_size_figure",
    "masks_figure",
    "paired_tests",
    "pope_table",
    "shown",
    "sign_flip_p",
    "summary_table",
]


METRICS: tuple[str, ...] = (
    "fidelity", "fidelity_uniform", "fidelity_support",
    "accuracy_drop", "accuracy_drop_uniform", "accuracy_drop_support",
    "contrastivity", "contrastivity_pair",
)


def summary_table(rows: pd.DataFrame, by: tuple[str, ...] = ("dataset", "model", "method", "rule", "level"),
                  level: float = 0.95, columns: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Means over images with bootstrap CIs (:func:`gradcam_lib.stats.mean_ci`, the images being
    the independent units) of ``columns``: ``<column>``, ``<column>_lo``, ``<column>_hi``;
    ``kept_%`` and ``kept_support_%`` are the mean mask sizes."""
    out = []
    for key, group in rows.groupby(list(by), sort=False):
        row = dict(zip(by, key, strict=True))
        row["images"] = group["image"].nunique()
        for column in columns:
            mean, low, high = mean_ci(group[column], level)
            row[column], row[f"{column}_lo"], row[f"{column}_hi"] = mean, low, high
        row["kept_%"] = 100 * float(group["kept"].astype(np.float64).mean())
        row["kept_support_%"] = 100 * float(group["kept_support"].astype(np.float64).mean())
        out.append(row)
    return pd.DataFrame(out)


def sign_flip_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_resamples: int = 9999,
                seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of ``mean(a - b) = 0`` (Fisher's
    randomisation test; ``scipy.stats.permutation_test`` with ``permutation_type="samples"``):
    exact, over all 2^n sign assignments, when 2^n <= ``n_resamples``, else seeded Monte Carlo.
    It needs no large-sample approximation, so it stays valid on the 7 photographs, where a
    bootstrap interval is too narrow. Pairs with a NaN are left out; no non-zero difference: 1."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if not len(x) or np.all(x == y):
        return 1.0
    result = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                                    vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)


# --------------------------------------------------------------------------------------------
# The chapter's runs
# --------------------------------------------------------------------------------------------


def load_run(model: str, dataset: str, n: int, n_background: int, mnist: tuple[Split, Split],
             device: str = "cpu", seed: int = 0, cifar_root: str | None = None, cifar_epochs: int = 30
             ) -> tuple[ModelEntry, list[Sample], torch.Tensor, torch.Tensor]:
    """``(entry, samples, images on device, SHAP background on device)`` of a run: the first ``n``
    held-out MNIST digits of ``mnist = (train, test)`` with training digits as background; the
    embedded photographs (their ImageNet labels) with generated composite images as background
    (seed ``seed + 1``); CIFAR-10 test images with a KTH-style CNN trained here (seeded), its test
    accuracy printed."""
    if dataset == "mnist":
        train, test = mnist
        entry = load_model(model, device)
        samples = as_samples(test.head(n), "mnist")
        background = train.images[:n_background]
    elif dataset == "cifar10":
        if cifar_root is None:
            raise ValueError("dataset 'cifar10' needs cifar_root")
        cifar = load_cifar10(cifar_root, train=True)
        net = train_classifier(seeded_small_cnn(3, 32, seed), cifar, epochs=cifar_epochs, seed=seed, device=device)
        print(f"CIFAR-10 CNN: test accuracy {accuracy(net, load_cifar10(cifar_root, train=False)):.3f}")
        entry = small_entry(model, net, CIFAR10_CLASSES, 3, 32)
        samples = as_samples(load_cifar10(cifar_root, train=False, limit=n), "cifar10")
        background = cifar.images[:n_background]
    else:
        entry = load_model(model, device)
        samples = list(cast(Iterable[Sample], build_dataset(dataset, entry.transform, n, None, seed)))[:n]
        composites = cast(Iterable[Sample], build_dataset("composite", entry.transform, n_background, None, seed + 1))
        background = torch.stack([s.image for s in composites])
    images = torch.stack([s.image for s in samples]).to(device)
    return entry, samples, images, background.to(device)


# --------------------------------------------------------------------------------------------
# The chapter's tables
# --------------------------------------------------------------------------------------------

BASELINES: dict[str, str] = {"mnist": "0 = black", "cifar10": "0 = black", "photos": "0 = mean colour"}
"""What IG's all-zero baseline is, per data set (the zero of the model's input space)."""


def convergence_table(rows: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """Integrated Gradients' completeness gaps per (dataset, model), from the ``Pope`` rows (one per
    image): step count, largest and median gap of the explained class (%), share under
    ``tolerance``, and the median over images of the largest gap of the other classes (%)."""
    ig_rows = rows[(rows["method"] == "ig") & (rows["rule"] == "Pope")]
    return pd.DataFrame([{
        "dataset": dataset, "model": model, "baseline": BASELINES.get(dataset, "0 in input space"),
        "steps": int(group["ig_steps"].iloc[0]), "maps": len(group),
        "explained: max gap %": 100 * group["ig_gap"].max(), "explained: median gap %": 100 * group["ig_gap"].median(),
        "explained: share < 5 %": (group["ig_gap"] < tolerance).mean(),
        "other classes: median of max gap %": 100 * group["ig_gap_other_max"].median(),
    } for (dataset, model), group in ig_rows.groupby(["dataset", "model"], sort=False)])


def _with_ci(frame: pd.DataFrame, column: str) -> pd.Series:
    """``mean [low, high]`` cells of ``column`` of a :func:`summary_table`."""
    return frame.apply(lambda r: f"{r[column]:.3f} [{r[column + '_lo']:.3f}, {r[column + '_hi']:.3f}]", axis=1)


def binarisation_table(table: pd.DataFrame, rule: str, columns: Mapping[str, str],
                       names: Mapping[str, str]) -> pd.DataFrame:
    """The :func:`summary_table` rows of one binarisation ``rule`` (``KTH``: level ``p``; ``Pope``:
    ``t``), ``columns`` (summary column -> shown name) as ``mean [low, high]``, with the mean mask
    sizes; methods by their ``names``."""
    part = table[table["rule"] == rule]
    out = part[["dataset", "method", "level", "images"]].assign(method=part["method"].map(names))
    for column, name in columns.items():
        out[name] = _with_ci(part, column)
    out["kept %"] = part["kept_%"].round(1)
    out["kept of support %"] = part["kept_support_%"].round(1)
    return out.rename(columns={"level": "p" if rule == "KTH" else "t"}).reset_index(drop=True)


def pope_table(table: pd.DataFrame, rows: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """Pope et al.'s fidelity (accuracy drop) and contrastivity (top-1 against top-2) with their
    nulls, the accuracy before the occlusion and McNemar's exact test of the hits before against
    the hits after, on the same images."""
    out = binarisation_table(table, "Pope", {"accuracy_drop": "fidelity (Pope)",
                                             "accuracy_drop_uniform": "null: uniform",
                                             "accuracy_drop_support": "null: support",
                                             "contrastivity_pair": "contrastivity (Pope)"}, names)
    pope_rows = rows[rows["rule"] == "Pope"]
    pope = table[table["rule"] == "Pope"]
    out["accuracy before"] = [
        pope_rows[(pope_rows["dataset"] == d) & (pope_rows["method"] == m)]["hit_before"].mean().round(3)
        for d, m in zip(pope["dataset"], pope["method"], strict=True)]
    out["McNemar p"] = [f"{mcnemar(g['hit_before'].astype(bool), g['hit_after'].astype(bool)).p_value:.2g}"
                        for _, g in pope_rows.groupby(["dataset", "model", "method"], sort=False)]
    return out


Key = tuple[Any, ...]
"""``(dataset, rule, level, kind, method, other)``: kind ``null`` (other: ``uniform`` / ``support``),
``fidelity`` or ``contrastivity`` (other: ``gradcam``)."""


def paired_tests(rows: pd.DataFrame, methods: Sequence[str], rules: Sequence[tuple[str, float]],
                 names: Mapping[str, str], seed: int = 0
                 ) -> tuple[dict[Key, tuple[PairedDifference, float]], pd.DataFrame]:
    """Per data set and binarisation: each map against its two nulls, and each input-space method
    against Grad-CAM on fidelity and contrastivity (KTH's or Pope's, by the rule), paired by image:
    a paired bootstrap (:func:`~gradcam_lib.stats.paired_difference`) and :func:`sign_flip_p`.

    Returns:
        ``(compared, listing)``: ``compared[key] = (difference, sign-flip p)`` (:data:`Key`), and
        the listing table (``shown``: the interval excludes 0 and p < 0.05).
    """
    compared: dict[Key, tuple[PairedDifference, float]] = {}
    listing = []
    for dataset in rows["dataset"].unique():
        for rule, level in rules:
            part = rows[(rows["dataset"] == dataset) & (rows["rule"] == rule) & (rows["level"] == level)]

            def column(method: str, name: str, part: pd.DataFrame = part) -> np.ndarray:
                return part[part["method"] == method].sort_values("image")[name].to_numpy()

            fid, con = ("fidelity", "contrastivity") if rule == "KTH" else ("accuracy_drop", "contrastivity_pair")
            tests = [(("null", m, null), f"{names[m][:20]}: map - {null} null", (m, fid), (m, f"{fid}_{null}"))
                     for m in methods for null in ("uniform", "support")]
            tests += [(("fidelity", m, "gradcam"), f"{fid}: {names[m][:20]} - Grad-CAM", (m, fid), ("gradcam", fid))
                      for m in methods if m != "gradcam" and "gradcam" in methods]
            tests += [(("contrastivity", m, "gradcam"), f"{con}: {names[m][:20]} - Grad-CAM", (m, con),
                       ("gradcam", con)) for m in methods if m != "gradcam" and "gradcam" in methods]
            for key, name, a, b in tests:
                left, right = column(*a), column(*b)
                d, p = paired_difference(left, right, seed=seed), sign_flip_p(left, right, seed=seed)
                compared[(dataset, rule, level, *key)] = (d, p)
                listing.append({"dataset": dataset, "rule": f"{rule} {level:g}", "difference": name,
                                "mean [95 % CI]": f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]", "n": d.n,
                                "sign-flip p": f"{p:.2g}", "shown": d.excludes_zero and p < 0.05})
    return compared, pd.DataFrame(listing)


def shown(compared: Mapping[Key, tuple[PairedDifference, float]], key: Key, sign: int = 1) -> bool:
    """The difference of ``key`` is shown with ``sign``: its interval excludes 0, sign-flip p < 0.05
    and ``sign * mean > 0``."""
    d, p = compared[key]
    return bool(d.excludes_zero and p < 0.05 and sign * d.mean > 0)


def evidence(compared: Mapping[Key, tuple[PairedDifference, float]], *keys: Key) -> str:
    """The differences and p-values of ``keys``, for a claim's evidence."""
    return "; ".join(f"{k[3]} {k[4]} {k[5]} {k[1]} {k[2]:g}: {compared[k][0]}, p={compared[k][1]:.2g}" for k in keys)


# --------------------------------------------------------------------------------------------
# The chapter's figures
# --------------------------------------------------------------------------------------------


def masks_figure(panels: Sequence[tuple[Any, Any, Any, str, Any, Any]], names: Mapping[str, str]) -> plt.Figure:
    """One row per ``(entry, images, top classes, method, maps, masks)`` panel: per image its map
    over the picture and the picture with the mask removed."""
    fig, axes = viz.figure_grid(len(panels), 6, cell=1.8)
    for row_axes, (entry, few, top, method, maps, masks) in zip(axes, panels, strict=False):
        for i in range(len(few)):
            picture = entry.transform.to_display(few[i])
            viz.show_overlay(row_axes[2 * i], picture, maps[i].clamp(min=0),
                             f"{names[method][:20]}\n{entry.class_names[top[i]][:18]}")
            row_axes[2 * i + 1].imshow(picture * (~masks[i]).float().numpy()[..., None])
            row_axes[2 * i + 1].set_title(f"removed: {100 * masks[i].float().mean():.0f} %", fontsize=9)
    fig.tight_layout()
    return fig


def mask_size_figure(rows: pd.DataFrame, percentile: float, names: Mapping[str, str]) -> sns.FacetGrid:
    """KTH's fidelity at ``percentile`` of the map's mask and of the two nulls per image, against the
    share of the support that the mask removes."""
    long = rows[(rows["rule"] == "KTH") & (rows["level"] == float(percentile))].melt(
        id_vars=["dataset", "method", "kept_support"], value_vars=["fidelity", "fidelity_uniform", "fidelity_support"],
        var_name="mask", value_name="drop")
    long["method"] = long["method"].map(names)
    long["mask"] = long["mask"].map({"fidelity": "map", "fidelity_uniform": "null: uniform",
                                     "fidelity_support": "null: support"})
    grid = sns.relplot(data=long, x="kept_support", y="drop", hue="method", style="mask", col="dataset", height=3.2,
                       aspect=1.2)
    grid.set_axis_labels("share of the support removed", "p(y|x) - p(y|x')")
    return grid

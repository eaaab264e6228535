"""Chapter 2's tables and figures, from the rows of
:class:`~gradcam_lib.experiments.pointing.PointingExperiment`.

Accuracy (TorchRay's mean over classes of the per-class hit rate, and over pairs; the difficult
subset) with cluster-bootstrap intervals over the independent units (:func:`pair_clusters`);
paired comparisons that count a difference as shown only when the cluster interval and McNemar's
exact test agree (:func:`verdict`); the paper's rejection rule over the top-k guesses (Sec. 4.3:
:func:`rejection_outcomes`, :func:`rejection_at`, :func:`rejection_curve`) and its threshold chosen
on a held-out split (:func:`calibrate_tau`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from scipy import stats as scipy_stats
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.composite import source_objects
from gradcam_lib.metrics.pointing import (
    centre_point,
    class_accuracy_ci,
    max_point,
    paired_class_accuracy_difference,
    subset_difference,
)
from gradcam_lib.models import ModelEntry
from gradcam_lib.report import viz
from gradcam_lib.stats import McNemar, PairedDifference, cluster_bootstrap_ci, mcnemar, paired_difference

__all__ = [
    "RULES",
    "accuracy_with_intervals",
    "beside_published",
    "calibrate_tau",
    "comparison_tables",
    "decided",
    "pair_clusters",
    "pair_evidence",
    "pointing_accuracy",
    "pointing_figure",
    "rejection_at",
    "rejection_curve",
    "rejection_curves_figure",
    "rejection_outcomes",
    "rejection_splits",
    "rejection_tables",
    "verdict",
]


# --------------------------------------------------------------------------------------------
# Accuracy, the rejection rule and its threshold, from rows
# --------------------------------------------------------------------------------------------


def pair_clusters(image_ids: Sequence[str], labels: Sequence[int], dataset: Dataset) -> np.ndarray:
    """The independent unit behind each (image, class) pair: the source object of the pasted crop
    for a :class:`~gradcam_lib.datasets.composite.CompositeDataset` (``source_of``: composites
    share a handful of crops), the image otherwise (pairs of one image share it)."""
    sources = source_objects(dataset, image_ids, labels)
    return np.asarray([str(i) for i in image_ids] if sources is None else sources, dtype=object)


def pointing_accuracy(rows: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Pointing accuracy in % over the ``kind == "gt"`` rows, for all pairs and the difficult ones.

    Columns per group: ``acc_pairs`` (hits over all (image, class) pairs), ``acc_classes`` (mean
    over classes of each class's accuracy -- TorchRay's number), the same two on the difficult
    subset, and the counts of pairs and classes behind them.
    """
    gt = rows[rows["kind"] == "gt"]
    by = list(by)

    def summary(frame: pd.DataFrame) -> pd.Series:
        hard = frame[frame["difficult"]]
        per_class = frame.groupby("label")["hit"].mean()
        hard_class = hard.groupby("label")["hit"].mean()
        return pd.Series(
            {
                "acc_pairs": 100 * frame["hit"].mean(),
                "acc_classes": 100 * per_class.mean(),
                "difficult_pairs": 100 * hard["hit"].mean() if len(hard) else np.nan,
                "difficult_classes": 100 * hard_class.mean() if len(hard) else np.nan,
                "pairs": len(frame),
                "difficult_n": len(hard),
                "classes": frame["label"].nunique(),
            }
        )

    table = gt.groupby(by, sort=False)[["hit", "label", "difficult"]].apply(summary).reset_index()
    return table.astype({"pairs": int, "difficult_n": int, "classes": int})


def rejection_outcomes(rows: pd.DataFrame, tau: float) -> np.ndarray:
    """Per ``kind == "topk"`` row (in order), is the guess right under the rejection rule at ``tau``?
    Accepted (``peak >= tau``) and its point hits, or rejected and its class absent (paper Sec. 4.3).
    ``tau = -inf`` accepts every guess, ``tau = inf`` rejects every guess."""
    top = rows[rows["kind"] == "topk"]
    accepted = top["peak"].to_numpy(np.float64) >= tau
    return (accepted & top["hit"].to_numpy(bool)) | (~accepted & ~top["present"].to_numpy(bool))


def rejection_at(rows: pd.DataFrame, tau: float) -> dict[str, float]:
    """The rejection rule over ``kind == "topk"`` rows of one method at threshold ``tau``.

    A guess is accepted when ``peak >= tau``. ``accuracy`` = the paper's number: (accepted hits +
    correctly rejected absent classes) / guesses (:func:`rejection_outcomes`). ``precision`` =
    accepted hits / accepted guesses (1 when nothing is accepted). ``recall`` = accepted hits /
    guesses whose class is present.
    """
    top = rows[rows["kind"] == "topk"]
    accepted = top["peak"].to_numpy(np.float64) >= tau
    hit = top["hit"].to_numpy(bool)
    present = top["present"].to_numpy(bool)
    true_accept = (accepted & hit).sum()
    return {
        "tau": float(tau),
        "accuracy": 100 * rejection_outcomes(rows, tau).sum() / max(len(top), 1),
        "precision": 100 * true_accept / accepted.sum() if accepted.any() else 100.0,
        "recall": 100 * true_accept / max(present.sum(), 1),
        "accepted": 100 * accepted.mean() if len(top) else np.nan,
    }


def _counts_at(top: pd.DataFrame, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per threshold of ``taus``, over the top-k rows ``top``: guesses rejected (``peak < tau``),
    accepted hits and correctly rejected absent classes -- :func:`rejection_at`'s counts, by sorting once."""
    order = np.argsort(top["peak"].to_numpy(np.float64), kind="stable")
    rejected = np.searchsorted(top["peak"].to_numpy(np.float64)[order], taus, side="left")
    hits = np.concatenate([[0], np.cumsum(top["hit"].to_numpy(bool)[order])])
    absent = np.concatenate([[0], np.cumsum(~top["present"].to_numpy(bool)[order])])
    return rejected, hits[-1] - hits[rejected], absent[rejected]


def rejection_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`rejection_at` for every method at every distinct map maximum (plus one threshold
    above all of them), i.e. every point where the outcome can change; ``quantile`` is the share of
    that method's guesses below ``tau``, a scale comparable across methods."""
    frames = []
    for method, group in rows[rows["kind"] == "topk"].groupby("method", sort=False):
        peaks = np.sort(group["peak"].astype(np.float64).unique())
        taus = np.append(peaks, np.nextafter(peaks[-1], np.inf))
        rejected, true_accept, right_reject = _counts_at(group, taus)
        n, accepted = len(group), len(group) - rejected
        frames.append(pd.DataFrame({
            "tau": taus, "accuracy": 100 * (true_accept + right_reject) / n,
            "precision": np.where(accepted > 0, 100 * true_accept / np.maximum(accepted, 1), 100.0),
            "recall": 100 * true_accept / max(int(group["present"].sum()), 1), "accepted": 100 * accepted / n,
            "quantile": rejected / n, "method": method}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def calibrate_tau(rows: pd.DataFrame) -> float:
    """The rejection threshold that maximises the paper's accuracy on ``rows`` (``kind == "topk"``
    rows of one method), meant to be chosen on a calibration split and applied to another.

    The accuracy only changes at the distinct map maxima ``p_1 < ... < p_n``: it is constant for
    ``tau`` in ``(-inf, p_1]``, ``(p_(i-1), p_i]`` and ``(p_n, inf)``. Of the maximising intervals,
    the lowest is chosen (ties: accept more) and its midpoint returned -- ``-inf`` for "accept
    every guess", ``inf`` for "reject every guess".
    """
    top = rows[rows["kind"] == "topk"]
    if not len(top):
        raise ValueError("no top-k rows to calibrate on")
    peaks = np.sort(top["peak"].astype(np.float64).unique())
    # candidate i accepts exactly the guesses with peak >= peaks[i]; i = n rejects everything
    lows = np.concatenate([[-np.inf], peaks])
    highs = np.concatenate([peaks, [np.inf]])
    _, true_accept, right_reject = _counts_at(top, np.append(peaks, np.inf))
    best = int(np.argmax(true_accept + right_reject))  # first maximum: the lowest interval
    low, high = lows[best], highs[best]
    if np.isinf(low) or np.isinf(high):
        return float(low if np.isinf(low) else high)
    return float((low + high) / 2)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def verdict(diff: PairedDifference, p_value: float, pair_difference: float, a: str, b: str) -> str:
    """'shown' needs the cluster interval to exclude 0 and the exact test p < 0.05, in the same direction."""
    if diff.excludes_zero and p_value < 0.05 and np.sign(diff.mean) == np.sign(pair_difference):
        return f"{a} higher" if diff.mean > 0 else f"{b} higher"
    return "no difference shown"


def decided(diff: PairedDifference, test: McNemar) -> str:
    """:func:`verdict` of a paired comparison of A and B."""
    return verdict(diff, test.p_value, test.difference, "A", "B")


def pair_evidence(diff: PairedDifference, test: McNemar) -> str:
    """A paired comparison as a claim's evidence."""
    return f"class accuracy {diff} points; pairs {test}"


def _with_intervals(group: pd.DataFrame, seed: int) -> pd.Series:
    hits, labels, clusters = group["hit"].to_numpy(bool), group["label"].to_numpy(), group["cluster"].to_numpy()
    hard = group["difficult"].to_numpy(bool)
    accuracy, low, high = class_accuracy_ci(hits, labels, clusters, seed=seed)
    difficult = class_accuracy_ci(hits[hard], labels[hard], clusters[hard], seed=seed) if hard.any() else (np.nan,) * 3
    pairs, pairs_low, pairs_high = cluster_bootstrap_ci(hits.astype(float), clusters, seed=seed)
    return pd.Series({"acc_classes": accuracy, "low": low, "high": high, "difficult": difficult[0],
                      "difficult_low": difficult[1], "difficult_high": difficult[2], "acc_pairs": 100 * pairs,
                      "pairs_low": 100 * pairs_low, "pairs_high": 100 * pairs_high, "pairs": len(group),
                      "difficult_n": int(hard.sum()), "classes": group["label"].nunique(),
                      "clusters": group["cluster"].nunique()})


def accuracy_with_intervals(gt: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per (dataset, model, method) of the ``kind == "gt"`` rows with their ``cluster`` column: mean
    class accuracy, its difficult-subset value and the pair accuracy, each with its 95 % cluster
    bootstrap interval, and the counts of pairs, classes and clusters behind them."""
    grouped = gt.groupby(["dataset", "model", "method"], sort=False)[list(gt.columns)]
    return grouped.apply(lambda group: _with_intervals(group, seed)).reset_index()


def beside_published(ours: pd.DataFrame, theirs: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """:func:`accuracy_with_intervals` rows above published ones (both with a ``source`` column),
    methods by display name, counts as text (``-`` where a source gives none)."""
    table = pd.concat([ours, theirs], ignore_index=True)
    table["method"] = table["method"].map(lambda m: names.get(m, m.replace("_", " ")))
    counts = ["pairs", "difficult_n", "classes", "clusters"]
    table[counts] = table[counts].map(lambda n: "-" if pd.isna(n) else str(int(n)))
    columns = ["dataset", "model", "method", "acc_classes", "low", "high", "difficult", "difficult_low",
               "difficult_high", "acc_pairs", "pairs_low", "pairs_high", *counts, "source"]
    return table[columns]


def comparison_tables(
    gt: pd.DataFrame, comparisons: Sequence[tuple[str, str]], names: Mapping[str, str], seed: int = 0
) -> tuple[dict[tuple[str, str, str], tuple[PairedDifference, McNemar]],
           dict[tuple[str, str], tuple[PairedDifference, float]], pd.DataFrame, pd.DataFrame]:
    """Paired method comparisons (A - B in class-accuracy points, paired cluster interval, McNemar)
    for each data set, and each method's difficult pairs against the rest (cluster interval, Fisher's
    exact test on the 2 x 2 table). Returns ``(paired, gaps, comparison table, gap table)``."""
    paired: dict[tuple[str, str, str], tuple[PairedDifference, McNemar]] = {}
    gaps: dict[tuple[str, str], tuple[PairedDifference, float]] = {}
    comparison_rows, gap_rows = [], []
    for name, group in gt.groupby("dataset", sort=False):
        wide = (group.pivot(index=["image_id", "label", "cluster"], columns="method", values="hit")
                .astype(bool).reset_index())
        for a, b in comparisons:
            if a not in wide or b not in wide:
                continue
            diff = paired_class_accuracy_difference(wide[a], wide[b], wide["label"], wide["cluster"], seed=seed)
            test = mcnemar(wide[a], wide[b])
            paired[name, a, b] = (diff, test)
            comparison_rows.append({"dataset": name, "A": names[a], "B": names[b], "A - B": diff.mean, "low": diff.low,
                                    "high": diff.high, "only A": test.only_a, "only B": test.only_b,
                                    "McNemar p": test.p_value,
                                    "verdict": verdict(diff, test.p_value, test.difference, "A", "B")})
        for method, pairs in group.groupby("method", sort=False):
            hard = pairs["difficult"].to_numpy(bool)
            if hard.any() and not hard.all():
                hit = pairs["hit"].to_numpy(bool)
                gap = subset_difference(hit, hard, pairs["cluster"].to_numpy(), seed=seed)
                fisher = scipy_stats.fisher_exact([[(hit & hard).sum(), (~hit & hard).sum()],
                                                   [(hit & ~hard).sum(), (~hit & ~hard).sum()]]).pvalue
                gaps[name, method] = (gap, fisher)
                gap_rows.append({"dataset": name, "method": names[method], "difficult": 100 * hit[hard].mean(),
                                 "rest": 100 * hit[~hard].mean(), "difficult - rest": gap.mean, "low": gap.low,
                                 "high": gap.high, "Fisher p": fisher, "difficult pairs": int(hard.sum()),
                                 "other pairs": int((~hard).sum()),
                                 "verdict": verdict(gap, fisher, gap.mean, "difficult", "rest")})
    return paired, gaps, pd.DataFrame(comparison_rows), pd.DataFrame(gap_rows)


def rejection_splits(
    rows: pd.DataFrame, calibration_rows: Mapping[str, pd.DataFrame], datasets: Sequence[str], calibration_seed: int
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """``(test, calibration)`` top-k rows per data set: the held-out split's rows where there is one
    (``calibration_rows``), else a seeded random half of the images calibrates (own generator)."""
    tests_top, calibration_top = {}, {}
    for name in datasets:
        top = rows[(rows["dataset"] == name) & (rows["kind"] == "topk")]
        if name in calibration_rows:
            held_out = calibration_rows[name]
            calibration_top[name], tests_top[name] = held_out[held_out["kind"] == "topk"], top
        else:
            ids = np.sort(top["image_id"].unique())
            held = set(np.random.default_rng(calibration_seed).choice(ids, size=len(ids) // 2, replace=False))
            calibration_top[name], tests_top[name] = top[top["image_id"].isin(held)], top[~top["image_id"].isin(held)]
    return tests_top, calibration_top


RULES = {"accept all": -np.inf, "reject all": np.inf}
"""The two baselines of the rejection rule."""


def rejection_tables(
    tests_top: Mapping[str, pd.DataFrame], calibration_top: Mapping[str, pd.DataFrame], names: Mapping[str, str],
    kth_threshold: float, seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, ...], Any]]:
    """The rejection rule on each test split with tau calibrated on its calibration split
    (:func:`calibrate_tau`), KTH's raw tau and the two baselines, with image-cluster intervals, and
    the calibrated rule tested against both baselines on the same guesses. Returns ``(rules table,
    tests table, outcomes)``; ``outcomes[name, method, rule]`` are the per-guess outcomes and
    ``outcomes[name, method, "vs " + baseline]`` the ``(difference, McNemar)`` of a test."""
    rejection_rows, rejection_tests = [], []
    outcomes: dict[tuple[str, ...], Any] = {}
    for name, top in tests_top.items():
        for method, group in top.groupby("method", sort=False):
            tau = calibrate_tau(calibration_top[name][calibration_top[name]["method"] == method])
            rules = {**RULES, f"KTH tau = {kth_threshold}": kth_threshold, "calibrated tau": tau}
            clusters = group["image_id"].to_numpy()
            for rule, threshold in rules.items():
                right = rejection_outcomes(group, threshold)
                outcomes[name, method, rule] = right
                share, low, high = cluster_bootstrap_ci(right.astype(float), clusters, seed=seed)
                rejection_rows.append({"dataset": name, "method": names[method], "rule": rule, "tau": threshold,
                                       "rejected %": 100 * np.mean(group["peak"].to_numpy() < threshold),
                                       "accuracy": 100 * share, "low": 100 * low, "high": 100 * high,
                                       "guesses": len(group), "images": group["image_id"].nunique()})
            for baseline in RULES:
                a, b = outcomes[name, method, "calibrated tau"], outcomes[name, method, baseline]
                share_diff = paired_difference(a.astype(float), b.astype(float), clusters=clusters, seed=seed)
                diff = PairedDifference(100 * share_diff.mean, 100 * share_diff.low, 100 * share_diff.high,
                                        share_diff.n)  # in points
                test = mcnemar(a, b)
                outcomes[name, method, "vs " + baseline] = (diff, test)
                rejection_tests.append({"dataset": name, "method": names[method], "A": "calibrated tau", "B": baseline,
                                        "A - B": diff.mean, "low": diff.low, "high": diff.high,
                                        "only A": test.only_a, "only B": test.only_b, "McNemar p": test.p_value,
                                        "verdict": verdict(diff, test.p_value, test.difference, "A", "B")})
    return pd.DataFrame(rejection_rows), pd.DataFrame(rejection_tests), outcomes


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def pointing_figure(
    entry: ModelEntry, pairs: Sequence[tuple[Sample, int]], maps: Mapping[str, torch.Tensor],
    names: Mapping[str, str], hits: pd.Series,
) -> Figure:
    """One row per (sample, class) pair, one column per method's map (``maps[method][row]``): the
    class's boxes in green, the maximum point as a cross (white: a hit in ``hits``, indexed by
    ``(image_id, method, label)``; red: a miss) and the centre baseline's point in yellow."""
    methods = list(maps)
    fig, axes = viz.figure_grid(len(pairs), len(methods), cell=2.3)
    for r, (sample, label) in enumerate(pairs):
        picture = entry.transform.to_display(sample.image)
        for c, method in enumerate(methods):
            ax = axes[r, c]
            viz.show_overlay(ax, picture, maps[method][r], f"{names[method]}" if r == 0 else "")
            for box in sample.boxes_of(label).tolist():
                viz.draw_box(ax, box, "lime", entry.class_names[label] if c == 0 else "")
            point = max_point(maps[method][r])
            if point is not None:
                hit = bool(hits.get((sample.image_id, method, label), False))
                ax.plot(*point, marker="x", markersize=10, mew=3, color="white" if hit else "red")
            ax.plot(*centre_point(*picture.shape[:2]), marker="o", markersize=4, color="yellow")
    fig.tight_layout()
    return fig


def rejection_curves_figure(
    tests_top: Mapping[str, pd.DataFrame], names: Mapping[str, str], kth_threshold: float
) -> Figure | None:
    """Precision / recall and the paper's accuracy over tau (:func:`rejection_curve`) on the test
    splits, KTH's raw tau as stars; None without top-k rows."""
    curves = pd.concat([rejection_curve(top).assign(dataset=name) for name, top in tests_top.items() if len(top)],
                       ignore_index=True)
    if not len(curves):
        return None
    curves["method"] = curves["method"].map(names)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.lineplot(data=curves, x="recall", y="precision", hue="method", style="dataset", ax=left,
                 drawstyle="steps-post", estimator=None, sort=False)
    left.set(xlabel="recall (%)", ylabel="precision (%)", title="precision / recall over tau (test split)")
    sns.lineplot(data=curves, x="quantile", y="accuracy", hue="method", style="dataset", ax=right, estimator=None,
                 sort=False, legend=False)
    right.set(xlabel="share of top-5 guesses rejected", ylabel="accuracy with rejection (%)",
              title="the paper's accuracy over tau (test split)")
    for top in tests_top.values():
        for _, group in top.groupby("method"):
            at = rejection_at(group, kth_threshold)
            left.plot(at["recall"], at["precision"], marker="*", markersize=12, color="black")
    right.text(0.02, 0.02, f"stars (left): KTH's tau = {kth_threshold} on the raw map maximum",
               transform=right.transAxes, fontsize=8)
    fig.tight_layout()
    return fig

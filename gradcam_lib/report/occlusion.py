"""Chapter 3's presentation: per-image measures, intervals and paired tests over the rows of
:class:`~gradcam_lib.experiments.occlusion.OcclusionExperiment`, the chapter's tables beside the
published ones (:mod:`gradcam_lib.report.published.occlusion`) and its figures.

Measures: rank correlation with occlusion (Grad-CAM paper Table 2), Average Drop % and % Increase
in Confidence (Grad-CAM++ Sec. 6.1), deletion / insertion AUC (RISE Sec. 4.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from gradcam_lib.metrics.confidence import confidence_drop, confidence_increased
from gradcam_lib.metrics.occlusion import rank_correlation
from gradcam_lib.report import viz
from gradcam_lib.report.published import occlusion as published
from gradcam_lib.stats import cluster_bootstrap_ci, mcnemar, mean_ci, paired_difference, wilson_ci

__all__ = [
    "MEASURES",
    "causal_comparisons",
    "causal_table",
    "curves_figure",
    "curves_of",
    "example_figure",
    "independent_units",
    "method_intervals",
    "paired_comparison",
    "per_image_measures",
    "prepared_rows",
    "rank_comparisons",
    "rank_figure",
    "rank_table",
    "span",
    "summaries",
]


def curves_of(rows: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Long table ``(image_id, method, fraction, probability)`` of the ``deletion`` or ``insertion``
    curves stored by :class:`~gradcam_lib.experiments.occlusion.OcclusionExperiment`."""
    columns = [c for c in rows.columns if c.startswith(f"{kind}_") and c.removeprefix(f"{kind}_").isdigit()]
    long = rows.dropna(subset=columns).melt(id_vars=["image_id", "method"], value_vars=columns, var_name="step",
                                            value_name="probability")
    steps = long["step"].str.removeprefix(f"{kind}_").astype(int)
    return long.assign(fraction=steps / (len(columns) - 1)).drop(columns="step")


def independent_units(dataset: Any, image_ids: Sequence[str], targets: Sequence[int]) -> list[str]:
    """The independent unit behind each (image, explained class): for a
    :class:`~gradcam_lib.datasets.CompositeDataset` (or a ``Subset`` of one) the source object of
    the explained class (:meth:`~gradcam_lib.datasets.CompositeDataset.source_of`), or -- when the
    top-1 class is none of the pasted objects' -- the source of the first object pasted; for any
    other data set the image itself. Composites that paste the same crop are one cluster for
    :func:`gradcam_lib.stats.cluster_bootstrap_ci`."""
    from gradcam_lib.datasets import CompositeDataset

    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    if not isinstance(base, CompositeDataset):
        return [str(image_id) for image_id in image_ids]
    units = []
    for image_id, target in zip(image_ids, targets, strict=False):
        try:
            units.append(base.source_of(image_id, int(target)))
        except KeyError:
            index = int(str(image_id).rsplit("-", 1)[1])
            units.append(next(iter(base.sources(index).values())))
    return units


def per_image_measures(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` of :class:`~gradcam_lib.experiments.occlusion.OcclusionExperiment` with the per-image
    terms of Grad-CAM++'s measures added: ``drop`` (:func:`confidence_drop`, %) and ``increase``
    (1.0 where O > Y, 0.0 where not, NaN where the method was not in ``causal_methods``)."""
    out = rows.copy()
    have = out["y"].notna() if "y" in out else pd.Series(False, index=out.index)
    out["drop"] = np.nan
    out["increase"] = np.nan
    if have.any():
        y, o = torch.tensor(out.loc[have, "y"].to_numpy()), torch.tensor(out.loc[have, "o"].to_numpy())
        out.loc[have, "drop"] = confidence_drop(y, o).numpy()
        out.loc[have, "increase"] = confidence_increased(y, o).double().numpy()
    return out


MEASURES: dict[str, str] = {
    "rank_correlation": "rank correlation with occlusion",
    "drop": "Average Drop %",
    "increase": "% Increase in Confidence",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
    "road_morf": "ROAD MoRF",
    "road_lerf": "ROAD LeRF",
    "road_combined": "ROAD combined",
}


def method_intervals(
    rows: pd.DataFrame, units: Mapping[str, str] | None = None, measures: Sequence[str] = tuple(MEASURES),
    confidence: float = 0.95, seed: int = 0,
) -> pd.DataFrame:
    """Mean of each measure per method with a ``confidence`` interval over independent units.

    ``rows``: :func:`per_image_measures` output. ``units``: image id -> unit
    (:func:`independent_units`); where two images share a unit, whole units are resampled
    (:func:`~gradcam_lib.stats.cluster_bootstrap_ci`, percentile); where every image is its own
    unit (or ``units`` is None), a BCa bootstrap of the mean (:func:`~gradcam_lib.stats.mean_ci`)
    and, for the share ``increase``, Wilson's interval. ``increase`` is reported in %, like the
    paper. NaN values (a constant map; a method without the measure) are left out.

    Returns:
        Long table ``(method, measure, mean, low, high, n, units, interval)``.
    """
    table = []
    for method, group in rows.groupby("method", sort=False):
        for measure in measures:
            if measure not in group:
                continue
            values = group[measure].to_numpy(dtype=np.float64)
            keep = ~np.isnan(values)
            if not keep.any():
                continue
            ids = group["image_id"].astype(str).to_numpy()[keep]
            groups = np.array([units[i] for i in ids] if units is not None else ids, dtype=object)
            values = values[keep]
            clustered = len(set(groups)) < len(groups)
            scale = 100.0 if measure == "increase" else 1.0
            if clustered:
                mean, low, high = cluster_bootstrap_ci(values, groups, confidence, seed=seed)
                kind = "cluster bootstrap"
            elif measure == "increase":
                mean, low, high = wilson_ci(values.astype(bool), confidence)
                kind = "Wilson"
            else:
                mean, low, high = mean_ci(values, confidence, seed)
                kind = "BCa bootstrap"
            table.append({"method": method, "measure": measure, "mean": scale * mean, "low": scale * low,
                          "high": scale * high, "n": int(keep.sum()), "units": len(set(groups)), "interval": kind})
    return pd.DataFrame(table, columns=["method", "measure", "mean", "low", "high", "n", "units", "interval"])


def paired_comparison(
    rows: pd.DataFrame, method_a: str, method_b: str, measure: str, units: Mapping[str, str] | None = None,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """``measure`` of ``method_a`` minus ``method_b`` on the same images (paired by image id).

    A paired bootstrap of the mean difference (:func:`~gradcam_lib.stats.paired_difference`; by
    whole units where images share one); for the hit / miss ``increase``, McNemar's exact test on
    independent images and the clustered paired bootstrap of the difference of shares otherwise.
    ``increase`` differences are in percentage points.

    Returns:
        ``{a, b, measure, mean, low, high, n, shown, evidence}``; ``shown`` is True when the
        difference is established at ``confidence`` (interval excludes 0, or McNemar
        p < 1 - confidence); ``low`` / ``high`` are NaN for McNemar.
    """
    wide = rows[rows["method"].isin([method_a, method_b])].pivot_table(
        index="image_id", columns="method", values=measure, aggfunc="first", dropna=False)
    if method_a not in wide or method_b not in wide:
        raise KeyError(f"{measure!r} is missing for {method_a!r} or {method_b!r}")
    wide = wide[[method_a, method_b]].dropna()
    ids = wide.index.astype(str).to_numpy()
    groups = np.array([units[i] for i in ids] if units is not None else ids, dtype=object)
    clustered = len(set(groups)) < len(groups)
    a, b = wide[method_a].to_numpy(np.float64), wide[method_b].to_numpy(np.float64)
    result: dict[str, Any] = {"a": method_a, "b": method_b, "measure": measure, "n": len(ids)}
    if measure == "increase" and not clustered:
        test = mcnemar(a.astype(bool), b.astype(bool))
        result.update(mean=100 * test.difference, low=np.nan, high=np.nan, shown=test.p_value < 1 - confidence,
                      evidence=str(test))
        return result
    scale = 100.0 if measure == "increase" else 1.0
    diff = paired_difference(a, b, groups if clustered else None, confidence, seed)
    result.update(mean=scale * diff.mean, low=scale * diff.low, high=scale * diff.high, shown=diff.excludes_zero,
                  evidence=f"{scale * diff.mean:+.3g} [{scale * diff.low:+.3g}, {scale * diff.high:+.3g}], "
                           f"{'cluster' if clustered else 'paired'} bootstrap, n = {diff.n}"
                           + (f" images in {len(set(groups))} units" if clustered else ""))
    return result


# --------------------------------------------------------------------------------------------
# The chapter's tables
# --------------------------------------------------------------------------------------------


def rank_table(correlated: pd.DataFrame, intervals: pd.DataFrame, names: Mapping[str, str],
               source: str) -> pd.DataFrame:
    """This run's rank correlation per method (mean, interval, sd, images, undefined maps, KTH's
    argsort mean) above the published ones (:func:`published.rank_correlations`); ``intervals``:
    :func:`method_intervals` of ``rank_correlation`` and ``kth_argsort``."""
    ours = intervals[intervals["measure"] == "rank_correlation"].set_index("method")
    argsort = intervals[intervals["measure"] == "kth_argsort"].set_index("method")
    per_method = {m: correlated[correlated["method"] == m]["rank_correlation"] for m in ours.index}
    summary = pd.DataFrame({
        "method": [names[m] for m in ours.index], "mean": ours["mean"].values, "low": ours["low"].values,
        "high": ours["high"].values,
        "sd": [per_method[m].std(ddof=1) for m in ours.index],
        "images": ours["n"].values, "undefined": [int(per_method[m].isna().sum()) for m in ours.index],
        "kth_argsort": argsort.loc[ours.index, "mean"].values,
        "source": source})
    table = pd.concat([summary, published.rank_correlations()], ignore_index=True)
    table[["images", "undefined"]] = table[["images", "undefined"]].map(lambda n: "-" if pd.isna(n) else str(int(n)))
    return table


def _verdicts(tests: pd.DataFrame) -> np.ndarray:
    return np.where(tests["shown"], "difference shown", "no difference shown")


def rank_comparisons(correlated: pd.DataFrame, pairs: Sequence[tuple[str, str]], methods: Sequence[str],
                     names: Mapping[str, str], units: Mapping[str, str] | None, confidence: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """:func:`paired_comparison` of the rank correlation for each ``(a, b)`` of ``pairs`` whose
    methods are both in ``methods``, with a ``difference`` label and a ``verdict``."""
    ran = set(methods)
    tests = pd.DataFrame([paired_comparison(correlated, a, b, "rank_correlation", units, confidence, seed)
                          for a, b in pairs if {a, b} <= ran])
    return tests.assign(difference=[f"{names[a]} - {names[b]}" for a, b in zip(tests["a"], tests["b"], strict=True)],
                        verdict=_verdicts(tests))


def causal_table(causal: pd.DataFrame, intervals: pd.DataFrame, names: Mapping[str, str], source: str,
                 measures: Sequence[str], published_rows: bool = True) -> pd.DataFrame:
    """Average Drop, Increase in Confidence, deletion and insertion AUC (or any of :data:`MEASURES`)
    per method as ``mean [low, high]`` cells (``intervals``: :func:`method_intervals`), above the
    published values (Grad-CAM++ / Score-CAM, RISE; none with ``published_rows=False``), columns
    named by :data:`MEASURES`."""
    cells: dict[str, dict[str, str]] = {m: {} for m in causal["method"].unique()}
    for r in intervals.itertuples():
        digits = 1 if r.measure in ("drop", "increase") else 3
        cells[str(r.method)][str(r.measure)] = f"{r.mean:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"
        cells[str(r.method)]["images"] = str(r.n)
    ours = pd.DataFrame([{"method": names[m], **v, "source": source} for m, v in cells.items()])
    theirs = pd.concat([published.confidence_metrics(), published.deletion_insertion()], ignore_index=True)
    theirs = theirs.rename(columns={"average_drop": "drop", "increase_in_confidence": "increase"})
    table = (pd.concat([ours, theirs.astype({c: object for c in theirs.columns})], ignore_index=True)
             if published_rows else ours)
    return table[["method", *measures, "images", "source"]].rename(columns=MEASURES)


def causal_comparisons(causal: pd.DataFrame, a: str, b: str, measures: Sequence[str], units: Mapping[str, str] | None,
                 confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """:func:`paired_comparison` of ``a`` minus ``b`` on each of ``measures``, indexed by measure,
    with a ``verdict``."""
    tests = pd.DataFrame([paired_comparison(causal, a, b, m, units, confidence, seed)
                          for m in measures]).set_index("measure", drop=False)
    return tests.assign(verdict=_verdicts(tests))


def prepared_rows(rows: pd.DataFrame, dataset: Any) -> tuple[pd.DataFrame, dict[str, str]]:
    """:func:`per_image_measures` of one run's ``rows`` and each image's independent unit
    (:func:`independent_units` of its explained class): ``(rows, {image_id: unit})``."""
    rows = per_image_measures(rows)
    first = rows.drop_duplicates("image_id")
    units = independent_units(dataset, first["image_id"].tolist(), first["target"].tolist())
    return rows, dict(zip(first["image_id"].astype(str), units, strict=True))


def summaries(rows: pd.DataFrame, units: Mapping[str, str], names: Mapping[str, str], source: str,
              pairs: Sequence[tuple[str, str]], methods: Sequence[str], measures: Sequence[str],
              causal_pair: tuple[str, str] = ("gradcam_pp", "gradcam"), confidence: float = 0.95,
              seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table of one run (:func:`prepared_rows` output): ``correlated`` (rows with a rank
    correlation), ``intervals`` (:func:`method_intervals` of it), ``rank_table``, ``rank_tests``
    (:func:`rank_comparisons` of ``pairs``); ``causal`` (rows with Y / O), ``causal_intervals`` of
    ``measures``, ``causal_table`` and ``causal_tests`` (:func:`causal_comparisons` of
    ``causal_pair``; empty when a method of it did not run)."""
    out: dict[str, pd.DataFrame] = {"correlated": rows.dropna(subset=["kth_argsort"])}
    out["intervals"] = method_intervals(out["correlated"], units, ["rank_correlation", "kth_argsort"], confidence,
                                        seed)
    out["rank_table"] = rank_table(out["correlated"], out["intervals"], names, source)
    out["rank_tests"] = rank_comparisons(out["correlated"], pairs, methods, names, units, confidence, seed)
    out["causal"] = rows.dropna(subset=["y"]) if "y" in rows else rows.iloc[:0]
    out["causal_intervals"] = method_intervals(out["causal"], units, measures, confidence, seed)
    out["causal_table"] = causal_table(out["causal"], out["causal_intervals"], names, source, measures)
    ran = set(out["causal"]["method"])
    out["causal_tests"] = (causal_comparisons(out["causal"], *causal_pair, measures, units, confidence, seed)
                           if set(causal_pair) <= ran else pd.DataFrame())
    return out


# --------------------------------------------------------------------------------------------
# The chapter's figures
# --------------------------------------------------------------------------------------------


def rank_figure(correlated: pd.DataFrame, names: Mapping[str, str]) -> plt.Figure:
    """Per-image rank correlation per method (box and dots), the paper's Table 2 means as diamonds."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    per_image = correlated.assign(method=correlated["method"].map(names))
    sns.boxplot(data=per_image, x="rank_correlation", y="method", color="lightgrey", showfliers=False, ax=ax)
    sns.stripplot(data=per_image, x="rank_correlation", y="method", color="black", size=5, ax=ax)
    paper = published.rank_correlations().query("source == 'paper Table 2'").set_index("method")["mean"]
    for y, label in enumerate(per_image["method"].unique()):
        if label in paper:
            ax.plot(paper[label], y, marker="D", color="tab:red", markersize=8,
                    label="paper Table 2" if y == 0 else None)
    ax.axvline(0, color="grey", linestyle=":")
    ax.set(xlabel="Spearman rank correlation with the occlusion map (per image)", ylabel="")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def example_figure(picture: np.ndarray, title: str, occlusion: torch.Tensor, heats: Mapping[str, torch.Tensor],
                   names: Mapping[str, str], patch: int, stride: int, size: int) -> plt.Figure:
    """One image, its occlusion map and each method's map (``heats``), titled with the map's
    :func:`rank_correlation` with the occlusion map."""
    fig, axes = viz.figure_grid(1, 2 + len(heats), cell=2.4)
    axes[0, 0].imshow(picture)
    axes[0, 0].set_title(title, fontsize=9)
    viz.show_overlay(axes[0, 1], picture, occlusion.clamp(min=0), f"occlusion ({patch} px, stride {stride})")
    for ax, (method, heat) in zip(axes[0, 2:], heats.items(), strict=False):
        viz.show_overlay(ax, picture, heat, f"{names[method]}: {rank_correlation(heat, occlusion, size):+.2f}")
    fig.tight_layout()
    return fig


def curves_figure(causal: pd.DataFrame, names: Mapping[str, str]) -> sns.FacetGrid:
    """Mean deletion and insertion curves per method (:func:`curves_of`)."""
    curves = pd.concat([curves_of(causal, kind).assign(curve=kind) for kind in ("deletion", "insertion")])
    curves["method"] = curves["method"].map(names)
    grid = sns.relplot(data=curves, x="fraction", y="probability", hue="method", col="curve", kind="line",
                       marker="o", errorbar=None, height=3.0, aspect=1.3)
    grid.set_axis_labels("share of pixels removed / inserted", "p(class), mean over images")
    return grid


def span(row: Mapping[str, Any]) -> str:
    """``mean [low, high]`` of an interval row, 3 decimals (for a claim's evidence)."""
    return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"

"""Chapter 1's tables and figures, from the rows of
:class:`~gradcam_lib.experiments.localization.LocalizationExperiment`.

Errors are the CLS-LOC devkit's (``eval_clsloc.m``): 100 x (1 - the mean per-image score), with 95 %
intervals -- Wilson over independent images, a cluster bootstrap over source objects for the
composites (:func:`error_interval`); box accuracies and MaxBoxAcc (Choe et al., CVPR 2020) from the
per-threshold IoU curves (:func:`iou_curves`); a threshold is picked on a calibration split
(:func:`pick_threshold`) and reported on the test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.composite import source_objects
from gradcam_lib.methods import method as registered
from gradcam_lib.metrics.localization import CRITERIA
from gradcam_lib.metrics.max_box_acc import MAX_BOX_ACC_V2_IOUS, max_box_acc_ci
from gradcam_lib.models import ModelEntry
from gradcam_lib.report import viz
from gradcam_lib.stats import McNemar, PairedDifference, cluster_bootstrap_ci, mcnemar, paired_difference, wilson_ci

__all__ = [
    "accuracy",
    "at_threshold",
    "box_accuracy_table",
    "boxes_figure",
    "class_maps_figure",
    "classification_table",
    "clusters_of",
    "error_interval",
    "error_table",
    "errors_with_intervals",
    "evidence",
    "geometry_table",
    "iou_curves",
    "methods_figure",
    "paired_test",
    "per_image_runs",
    "pick_threshold",
    "run_rows",
    "same_outcomes",
    "shown_lower",
    "threshold_curves_figure",
    "versus_table",
    "with_interval",
]


Run = tuple[str, str, str]
"""``(data set, model, method)``."""


# --------------------------------------------------------------------------------------------
# Selecting rows
# --------------------------------------------------------------------------------------------


def run_rows(frame: pd.DataFrame, name: str, model: str, method: str) -> pd.DataFrame:
    """The rows of one (data set, model, method) run."""
    return frame[(frame["dataset"] == name) & (frame["model"] == model) & (frame["method"] == method)]


def at_threshold(frame: pd.DataFrame, value: float) -> pd.DataFrame:
    """One row per image (indexed by image id) at one threshold."""
    return frame[np.isclose(frame["threshold"], value)].drop_duplicates("image_id").set_index("image_id")


def clusters_of(dataset: Dataset, image_ids: Sequence[str], gt_classes: Sequence[int]) -> list[str] | None:
    """The source object of each composite's first ground-truth class (composites that paste the same
    crop are not independent); None for data sets of independent images."""
    return source_objects(dataset, image_ids, gt_classes)


def per_image_runs(
    rows: pd.DataFrame, benchmarks: Mapping[str, Sequence[Sequence[str]]],
    data: Mapping[tuple[str, str], Dataset], threshold: float,
) -> tuple[dict[Run, pd.DataFrame], dict[Run, list[str] | None]]:
    """For every data set of ``benchmarks`` (data set -> its ``(model, method)`` runs) and each of
    its runs: the rows at ``threshold`` (:func:`at_threshold`) and their clusters
    (:func:`clusters_of`; ``data`` maps (model, data set) to the data set)."""
    per_image: dict[Run, pd.DataFrame] = {}
    clusters: dict[Run, list[str] | None] = {}
    for name, runs in benchmarks.items():
        for model, method in runs:
            frame = at_threshold(run_rows(rows, name, model, method), threshold)
            per_image[name, model, method] = frame
            clusters[name, model, method] = clusters_of(data[model, name], frame.index, frame["gt_class"])
    return per_image, clusters


def same_outcomes(a: pd.DataFrame, b: pd.DataFrame,
                  columns: Sequence[str] = ("loc_top1", "loc_top5", "loc_gt_known")) -> pd.Series:
    """Per image of ``a`` (two runs' :func:`per_image_runs` frames): True where ``b`` has the same
    localisation outcomes in ``columns``."""
    return (a[list(columns)] == b.loc[a.index, list(columns)]).all(axis=1)


def iou_curves(rows: pd.DataFrame, column: str = "gt_iou") -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image ids, thresholds, ious (N, T))`` of one run's rows, for
    :func:`~gradcam_lib.metrics.max_box_acc.max_box_acc_from_ious`; images in their first-seen order."""
    table = rows.pivot_table(index="image_id", columns="threshold", values=column, aggfunc="first", sort=False)
    return list(table.index), table.columns.to_numpy(dtype=np.float64), table.to_numpy(dtype=np.float64)


def pick_threshold(rows: pd.DataFrame, criterion: str = "loc_gt_known") -> float:
    """The threshold with the highest mean ``criterion`` over ``rows`` (one run, one data set:
    the *calibration* split); ties go to the smallest threshold."""
    means = rows.groupby("threshold")[criterion].mean()
    return float(means.index[np.flatnonzero(means.to_numpy() == means.max())[0]])


# --------------------------------------------------------------------------------------------
# Errors and their intervals
# --------------------------------------------------------------------------------------------


def error_interval(
    correct: Sequence[float] | np.ndarray, clusters: Sequence[object] | None = None, seed: int = 0
) -> tuple[float, float, float]:
    """``(error %, low %, high %)`` of per-image scores in [0, 1] (1 = right): a cluster bootstrap
    over ``clusters`` when the images are not independent (:func:`~gradcam_lib.stats.cluster_bootstrap_ci`),
    else :func:`~gradcam_lib.stats.wilson_ci` over the images."""
    if clusters is None:
        mean, low, high = wilson_ci(correct)
    else:
        mean, low, high = cluster_bootstrap_ci(correct, clusters, seed=seed)
    return 100 * (1 - mean), 100 * (1 - high), 100 * (1 - low)


def with_interval(scores: pd.Series, clusters: Sequence[object] | None) -> str:
    """``"error [low, high]"`` in % (:func:`error_interval`)."""
    error, low, high = error_interval(scores.to_numpy(dtype=float), clusters)
    return f"{error:.1f} [{low:.1f}, {high:.1f}]"


def accuracy(value: tuple[float, float, float]) -> str:
    """``"accuracy [low, high]"`` in % of a share with its interval."""
    return f"{100 * value[0]:.1f} [{100 * value[1]:.1f}, {100 * value[2]:.1f}]"


def error_table(rows: pd.DataFrame, threshold: float = 0.15) -> pd.DataFrame:
    """Errors in % (100 - mean score over images; the devkit's error) per (dataset, model,
    method) at one threshold, with the number of images behind each row."""
    at = rows[np.isclose(rows["threshold"], threshold)]
    grouped = at.groupby(["dataset", "model", "method"], sort=False)
    criteria = [c for c in CRITERIA if c in at.columns]
    table = 100.0 * (1.0 - grouped[criteria].mean())
    table["images"] = grouped["image_id"].nunique()
    return table.reset_index()


def errors_with_intervals(
    per_image: Mapping[Run, pd.DataFrame], clusters: Mapping[Run, list[str] | None]
) -> pd.DataFrame:
    """Localisation errors (loc top-1, top-5, GT-known) with 95 % intervals, one row per run."""
    columns = [("loc_top1", "loc top-1"), ("loc_top5", "loc top-5"), ("loc_gt_known", "GT-known")]
    return pd.DataFrame(
        [
            {"data set": name, "model": model, "method": registered(method).label, "images": len(frame),
             **{label: with_interval(frame[column], clusters[name, model, method]) for column, label in columns}}
            for (name, model, method), frame in per_image.items()
        ]
    )


def classification_table(
    per_image: Mapping[Run, pd.DataFrame], clusters: Mapping[Run, list[str] | None], runs: Sequence[Sequence[str]]
) -> pd.DataFrame:
    """Classification errors (top-1, top-5) with 95 % intervals, one row per (data set, model): they
    depend on the model only (every method boxes the same top-5 guesses), so each model's first run."""
    return pd.DataFrame(
        [
            {"data set": name, "model": model, "images": len(frame),
             "cls top-1": with_interval(frame["cls_top1"], clusters[name, model, method]),
             "cls top-5": with_interval(frame["cls_top5"], clusters[name, model, method])}
            for (name, model, method), frame in per_image.items()
            if method == next(m for r, m in runs if r == model)
        ]
    )


def _accuracy_of_error(error: tuple[float, float, float]) -> str:
    """:func:`accuracy` of an :func:`error_interval` (its bounds swap)."""
    return accuracy((1 - error[0] / 100, 1 - error[2] / 100, 1 - error[1] / 100))


def box_accuracy_table(
    rows: pd.DataFrame, per_image: Mapping[Run, pd.DataFrame], clusters: Mapping[Run, list[str] | None],
    picked: Mapping[tuple[str, str], float],
) -> pd.DataFrame:
    """GT-known box accuracy at the fixed threshold and at the one ``picked`` on the calibration
    split, and MaxBoxAcc V1 / V2 with intervals that re-take the maximum in every resample."""
    table = []
    for (name, model, method), frame in per_image.items():
        run = run_rows(rows, name, model, method)
        source = dict(zip(frame.index, clusters[name, model, method] or frame.index, strict=True))
        ids, _, v1 = iou_curves(run, "gt_iou")
        _, _, v2 = iou_curves(run, "gt_iou_any")
        groups = [source[i] for i in ids]
        at_pick = at_threshold(run, picked[model, method])
        error15 = error_interval(frame["loc_gt_known"].to_numpy(float), clusters[name, model, method])
        error_pick = error_interval(at_pick["loc_gt_known"].to_numpy(float), clusters[name, model, method])
        table.append({
            "data set": name, "run": f"{model} / {registered(method).label}",
            "at 15 %": _accuracy_of_error(error15),
            "picked on calibration": f"{picked[model, method]:.2f}",
            "at the picked threshold": _accuracy_of_error(error_pick),
            "MaxBoxAcc V1": accuracy(max_box_acc_ci(v1, (0.5,), groups)),
            "MaxBoxAccV2": accuracy(max_box_acc_ci(v2, MAX_BOX_ACC_V2_IOUS, groups)),
        })
    return pd.DataFrame(table)


def geometry_table(
    geometry_rows: Mapping[str, pd.DataFrame], at15: Mapping[str, pd.DataFrame],
    groups: Mapping[str, list[str] | None],
) -> pd.DataFrame:
    """Per geometry: GT-known error at the fixed threshold (rows ``at15``) and MaxBoxAcc V1."""
    return pd.DataFrame(
        [
            {"geometry": shape, "images": len(frame),
             "GT-known error at 15 %": with_interval(frame["loc_gt_known"], groups[shape]),
             "MaxBoxAcc V1": accuracy(max_box_acc_ci(iou_curves(geometry_rows[shape], "gt_iou")[2], (0.5,),
                                                     groups[shape] or list(frame.index)))}
            for shape, frame in at15.items()
        ]
    )


# --------------------------------------------------------------------------------------------
# Paired comparisons for the claims
# --------------------------------------------------------------------------------------------


def paired_test(
    a: pd.DataFrame, b: pd.DataFrame, column: str, groups: Mapping[str, str] | None
) -> tuple[McNemar, PairedDifference | None]:
    """McNemar exact on the images both have (hit = score > 0) and, when ``groups`` (image id ->
    source object) is given, the cluster bootstrap of the per-image error difference a - b."""
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    test = mcnemar(a[column] > 0, b[column] > 0)
    if groups is None:
        return test, None
    difference = paired_difference(1 - a[column].to_numpy(float), 1 - b[column].to_numpy(float),
                                   [groups[i] for i in common])
    return test, difference


def versus_table(per_image: Mapping[Run, pd.DataFrame], clusters: Mapping[Run, list[str] | None],
                 benchmarks: Mapping[str, Sequence[Sequence[str]]], names: Mapping[str, str],
                 reference: str = "gradcam", column: str = "loc_gt_known") -> pd.DataFrame:
    """Every run of each data set against the same model's ``reference`` run on the same images:
    the error in ``column`` (%, with its interval) and the paired test (:func:`paired_test`, the
    reference's source objects as clusters)."""
    table = []
    for name, runs in benchmarks.items():
        for model, method in runs:
            base = (name, model, reference)
            if method == reference or base not in per_image:
                continue
            groups = clusters[base]
            sources = None if groups is None else dict(zip(per_image[base].index, groups, strict=True))
            test, difference = paired_test(per_image[name, model, method], per_image[base], column, sources)
            table.append({"dataset": name, "model": model, "method": names.get(method, method),
                          f"{column} error %": with_interval(per_image[name, model, method][column],
                                                             clusters[name, model, method]),
                          f"{names.get(reference, reference)} %": with_interval(per_image[base][column], groups),
                          "only it right": test.only_a, "only reference right": test.only_b,
                          "McNemar p": test.p_value,
                          "error difference, points": "" if difference is None else
                          f"{100 * difference.mean:+.1f} [{100 * difference.low:+.1f}, {100 * difference.high:+.1f}]"})
    return pd.DataFrame(table)


def shown_lower(test: McNemar, difference: PairedDifference | None) -> bool:
    """a's error is lower than b's: McNemar p < 0.05 in a's favour and, where clustered, the interval
    of the error difference below 0."""
    return test.difference > 0 and test.p_value < 0.05 and (difference is None or difference.high < 0)


def evidence(test: McNemar, difference: PairedDifference | None) -> str:
    """The test and, where clustered, the interval, as a claim's evidence."""
    return str(test) + ("" if difference is None else f"; error difference {difference} (cluster bootstrap by source)")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def methods_figure(
    entry: ModelEntry, samples: Sequence[Sample], top1: torch.Tensor, cams: torch.Tensor, guided: torch.Tensor,
    guided_cams: torch.Tensor,
) -> Figure:
    """One row per sample: the picture with its ground-truth boxes, Grad-CAM, Guided Backprop and
    Guided Grad-CAM of its top-1 class."""
    fig, axes = viz.figure_grid(len(samples), 4, cell=2.2)
    for row, sample in enumerate(samples):
        picture = entry.transform.to_display(sample.image)
        axes[row, 0].imshow(picture)
        for box, label in zip(sample.boxes.tolist(), sample.box_labels.tolist(), strict=True):
            viz.draw_box(axes[row, 0], box, "lime", entry.class_names[label])
        axes[row, 0].set_title(sample.image_id, fontsize=9)
        viz.show_overlay(axes[row, 1], picture, cams[row], f"Grad-CAM: {entry.class_names[top1[row]]}")
        viz.show_guided(axes[row, 2], guided[row], "Guided Backprop")
        viz.show_guided(axes[row, 3], guided_cams[row], "Guided Grad-CAM")
    fig.tight_layout()
    return fig


def class_maps_figure(entry: ModelEntry, sample: Sample, classes: Sequence[int], maps: torch.Tensor) -> Figure:
    """The picture and each class's map (``maps[i]`` of ``classes[i]``) with that class's boxes."""
    picture = entry.transform.to_display(sample.image)
    fig, axes = viz.figure_grid(1, len(classes) + 1, cell=3.0)
    axes[0, 0].imshow(picture)
    axes[0, 0].set_title(sample.image_id, fontsize=9)
    for column, (label, heat) in enumerate(zip(classes, maps, strict=False), start=1):
        viz.show_overlay(axes[0, column], picture, heat, f"Grad-CAM for '{entry.class_names[label]}'")
        for box in sample.boxes_of(label).tolist():
            viz.draw_box(axes[0, column], box, "lime")
    fig.tight_layout()
    return fig


def boxes_figure(entry: ModelEntry, shown: pd.DataFrame, lookup: Mapping[str, Sample]) -> Figure:
    """Up to 8 of a run's rows (one threshold): ground truth in green, the top-1 box cyan when it
    localises one of the image's classes (CLS-LOC rule), red when not."""
    fig, axes = viz.figure_grid(2, 4, cell=2.6)
    for ax, (_, row) in zip(axes.flat, shown.iterrows(), strict=False):
        sample = lookup.get(row["image_id"])
        if sample is None:
            continue
        ax.imshow(entry.transform.to_display(sample.image))
        for box in sample.boxes.tolist():
            viz.draw_box(ax, box, "lime")
        if not np.isnan(row["xmin"]):
            viz.draw_box(ax, row[["xmin", "ymin", "xmax", "ymax"]].tolist(), "cyan" if row["loc_top1"] > 0 else "red",
                         entry.class_names[int(row["top1_class"])])
        ax.set_title(sample.image_id, fontsize=8)
    fig.tight_layout()
    return fig


def threshold_curves_figure(
    rows: pd.DataFrame, calibration_rows: pd.DataFrame, threshold: float, picked: Mapping[tuple[str, str], float]
) -> Any:
    """GT-known and loc top-1 error against the threshold, per run, one panel per split (test data
    sets and the calibration split); dotted: ``threshold``, dashed: each run's ``picked`` one.
    Returns seaborn's ``FacetGrid``."""
    curves = pd.concat([rows.assign(split="test"), calibration_rows.assign(split="calibration")], ignore_index=True)
    keys = ["split", "dataset", "model", "method", "threshold"]
    curve = (curves.groupby(keys)[["loc_gt_known", "loc_top1"]].mean()
             .rsub(1).mul(100).reset_index()
             .melt(id_vars=keys, var_name="criterion", value_name="error (%)")
             .dropna())
    curve["criterion"] = curve["criterion"].map({"loc_gt_known": "GT-known", "loc_top1": "loc top-1"})
    curve["run"] = curve["model"] + " / " + curve["method"].map(lambda key: registered(key).label)
    curve["panel"] = curve["dataset"].str.replace("-calibration", "") + " (" + curve["split"] + ")"
    palette = dict(zip(curve["run"].unique(), sns.color_palette(n_colors=curve["run"].nunique()), strict=True))
    grid = sns.relplot(data=curve, x="threshold", y="error (%)", hue="run", style="criterion", col="panel",
                       kind="line", palette=palette, height=3.0, aspect=1.1)
    grid.set_titles("{col_name}")
    for panel, ax in grid.axes_dict.items():
        ax.axvline(threshold, color="grey", linestyle=":")
        shown = set(curve.loc[curve["panel"] == panel, "run"])
        for (model, method), value in picked.items():
            run = f"{model} / {registered(method).label}"
            if run in shown:
                ax.axvline(value, color=palette[run], linestyle="--", linewidth=0.8)
    return grid

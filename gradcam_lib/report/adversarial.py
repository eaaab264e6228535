"""Chapter 8's report: intervals over images or photographs, paired comparisons of settings, the
tables and the figures, all from the rows of
:class:`~gradcam_lib.experiments.adversarial.AdversarialExperiment`.

A successful attack after which the true-class map vanished is *counted* (``vanished``) and left
out of the means of the map comparisons (:data:`MAP_COLUMNS`), whose number of images is ``n``.
Intervals are over images or -- when the rows carry a ``cluster`` column (the photograph an attacked
object comes from, since the composite benchmark pastes crops of the same few photographs) --
account for the clusters: means by a bootstrap over whole clusters, shares by Wilson's interval on
Kish's effective sample size. Settings are compared on the same images only (paired:
:func:`compare_settings`), never by pooling settings as if they were independent samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gradcam_lib.attacks.adversarial import ATTACKS, AttackOutcome, AttackSpec
from gradcam_lib.datasets.base import Sample
from gradcam_lib.methods import HEATMAP_METHODS
from gradcam_lib.metrics.pointing import max_point
from gradcam_lib.report import viz
from gradcam_lib.stats import (
    MIN_UNITS,
    McNemar,
    PairedDifference,
    mcnemar,
    mean_interval,
    paired_difference,
    share_interval,
)

__all__ = [
    "SHORT", "Comparison", "attack_table", "baseline_table", "ci", "clean_pointing", "compare_settings",
    "eps_figure", "examples_figure", "labelled", "maps_table", "paired_comparisons",
    "paired_outcomes", "paired_table", "success_table",
]

NOT_ATTACKED = "none"
# Comparisons of the true-class map before / after: undefined for a vanished map, which is counted.
MAP_COLUMNS = ("rank_corr", "box_iou", "points_after_true")
BINARY_COLUMNS = ("success", "vanished", "points_before", "points_after_true", "points_new")
SHORT = {"gradcam": "CAM", "guided_backprop": "GBP"}
SETTING = ["model", "attack", "mode", "eps"]


# -- paired comparisons ----------------------------------------------------------------------


def _successful_maps(frame: pd.DataFrame) -> pd.DataFrame:
    """Attack rows with the map comparisons NaN where the true-class map vanished (counted instead)."""
    frame = frame.copy()
    frame.loc[frame["vanished"].eq(1.0), list(MAP_COLUMNS)] = float("nan")
    return frame


def _clusters(frame: pd.DataFrame) -> np.ndarray | None:
    return frame["cluster"].to_numpy(dtype=object) if "cluster" in frame else None


def _select(rows: pd.DataFrame, where: Mapping[str, object]) -> pd.DataFrame:
    """Rows whose every ``column == value`` of ``where`` (floats by ``np.isclose``: eps is read back
    from a CSV)."""
    mask = np.ones(len(rows), dtype=bool)
    for column, value in where.items():
        if isinstance(value, float):
            mask &= np.isclose(rows[column].astype(float).to_numpy(), value, rtol=1e-9, atol=1e-12)
        else:
            mask &= (rows[column] == value).to_numpy()
    return rows[mask]


def paired_outcomes(
    rows: pd.DataFrame, column: str, a: Mapping[str, object], b: Mapping[str, object], column_b: str | None = None
) -> pd.DataFrame:
    """One row per image that has a value of ``column`` under selection ``a`` and of ``column_b``
    (default ``column``) under ``b`` (e.g. ``{"attack": "pgd", "mode": "untargeted", "eps": 1 / 255,
    "method": "gradcam"}`` against the same at 8 / 255): columns ``image_id``, ``a``, ``b``,
    ``cluster`` (the image when the rows have none). Map comparisons of vanished maps are left out,
    as are images without a value under one side (a failed attack, a constant map)."""
    attacked = _successful_maps(rows[rows["attack"] != NOT_ATTACKED])
    sides = []
    for name, where, col in (("a", a, column), ("b", b, column_b or column)):
        part = _select(attacked, where)
        if part["image_id"].duplicated().any():
            raise ValueError(f"selection {dict(where)} holds several rows per image; add the keys that make it one")
        units = part["cluster"] if "cluster" in part else part["image_id"]
        sides.append(pd.DataFrame({"image_id": part["image_id"].to_numpy(), name: part[col].astype(float).to_numpy(),
                                   f"cluster_{name}": units.to_numpy()}))
    both = sides[0].merge(sides[1], on="image_id").dropna(subset=["a", "b"])
    return pd.DataFrame({"image_id": both["image_id"], "a": both["a"], "b": both["b"],
                         "cluster": both["cluster_a"]}).reset_index(drop=True)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two settings (or methods) on the same images: the paired bootstrap of
    the mean difference a - b (over clusters when the rows have them) and, for hit / miss columns,
    McNemar's exact test over the images."""

    column: str
    difference: PairedDifference
    mcnemar: McNemar | None = None

    @property
    def shown(self) -> bool:
        """The bootstrap interval excludes 0 and, for hit / miss columns, McNemar's exact p < 0.05."""
        return self.difference.excludes_zero and (self.mcnemar is None or self.mcnemar.p_value < 0.05)

    def __str__(self) -> str:
        text = f"a - b = {self.difference}"
        return text if self.mcnemar is None else f"{text}; {self.mcnemar}"


def compare_settings(rows: pd.DataFrame, column: str, a: Mapping[str, object], b: Mapping[str, object],
                     column_b: str | None = None, seed: int = 0) -> Comparison:
    """:func:`paired_outcomes` of ``column`` under ``a`` vs ``column_b`` under ``b``:
    :func:`gradcam_lib.stats.paired_difference` over the images' clusters and, for hit / miss
    columns, :func:`gradcam_lib.stats.mcnemar`. Fewer than :data:`MIN_UNITS` units: no interval."""
    pairs = paired_outcomes(rows, column, a, b, column_b)
    clusters = pairs["cluster"].to_numpy(dtype=object) if "cluster" in rows else None
    if pairs["cluster"].nunique() >= MIN_UNITS:
        difference = paired_difference(pairs["a"], pairs["b"], clusters=clusters, seed=seed)
    else:
        mean = float((pairs["a"] - pairs["b"]).mean()) if len(pairs) else float("nan")
        difference = PairedDifference(mean, float("nan"), float("nan"), len(pairs))
    binary = column in BINARY_COLUMNS and (column_b or column) in BINARY_COLUMNS
    test = mcnemar(pairs["a"] > 0.5, pairs["b"] > 0.5) if binary else None
    return Comparison(column if column_b is None else f"{column} - {column_b}", difference, test)


def _side(attack: str, mode: str, eps: float, method: str = "gradcam") -> dict[str, object]:
    return {"attack": attack, "mode": mode, "eps": eps / 255, "method": method}


def paired_comparisons(rows: pd.DataFrame, models: Sequence[str], attacks: Sequence[str], modes: Sequence[str],
                       epsilons: Sequence[int], methods: Sequence[str]) -> dict[tuple[str, str, str], Comparison]:
    """Every comparison the chapter's discussion makes, ``(model, question, setting) -> Comparison``
    (eps in grey levels)."""
    out = {}
    lo, hi = min(epsilons), max(epsilons)
    for model in models:
        r = rows[rows["model"] == model]
        for eps in epsilons:
            if "pgd" in attacks and "fgsm" in attacks and "untargeted" in modes:
                out[model, "success: PGD - FGSM", f"untargeted {eps}/255"] = compare_settings(
                    r, "success", _side("pgd", "untargeted", eps), _side("fgsm", "untargeted", eps))
            if "pgd" in attacks and "untargeted" in modes and "targeted" in modes:
                out[model, "success: untargeted - targeted", f"PGD {eps}/255"] = compare_settings(
                    r, "success", _side("pgd", "untargeted", eps), _side("pgd", "targeted", eps))
        for attack in attacks:
            for mode in modes:
                if len(epsilons) > 1:
                    out[model, f"CAM rho: {lo}/255 - {hi}/255", f"{ATTACKS[attack]} {mode}"] = compare_settings(
                        r, "rank_corr", _side(attack, mode, lo), _side(attack, mode, hi))
                for eps in epsilons:
                    where = f"{ATTACKS[attack]} {mode} {eps}/255"
                    if "guided_backprop" in methods and "gradcam" in methods:
                        for column, name in (("rank_corr", "rho"), ("box_iou", "IoU")):
                            out[model, f"{name}: GBP - CAM", where] = compare_settings(
                                r, column, _side(attack, mode, eps, "guided_backprop"), _side(attack, mode, eps))
                    out[model, "CAM points: new class - clean", where] = compare_settings(
                        r, "points_new", _side(attack, mode, eps), _side(attack, mode, eps), column_b="points_before")
        if "pgd" in attacks and "fgsm" in attacks and "untargeted" in modes:
            out[model, "CAM rho: PGD - FGSM", f"untargeted {hi}/255"] = compare_settings(
                r, "rank_corr", _side("pgd", "untargeted", hi), _side("fgsm", "untargeted", hi))
    return out


# -- tables ----------------------------------------------------------------------------------


def attack_table(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (model, attack, mode, eps, method), with 95 % intervals over that setting's
    images (shares: :func:`share_interval`; means: :func:`mean_interval`; over clusters when the
    rows have a ``cluster`` column): ``images``, ``units``, ``successes``, ``success_pct`` (``_low``,
    ``_high``); ``vanished`` (a count); ``n``, the other successful attacks, over which ``rank_corr``,
    ``box_iou`` (``_low`` / ``_high``) and ``points_after_true`` (%) are averaged; and over all
    successful attacks, in %, ``points_before`` and ``points_new`` (``_low`` / ``_high``)."""
    attacked = rows[rows["attack"] != NOT_ATTACKED].copy()
    attacked["success"] = attacked["success"].astype(bool)
    if "cluster" not in attacked:
        attacked["cluster"] = attacked["image_id"]
    keys = ["model", "attack", "mode", "eps", "method"]
    records = []
    for key, group in attacked.groupby(keys, sort=False):
        clusters = group["cluster"].to_numpy(dtype=object) if "cluster" in rows else None
        share, low, high = share_interval(group["success"].astype(float), clusters, confidence)
        record = dict(zip(keys, key, strict=True))
        record.update(images=group["image_id"].nunique(), units=group["cluster"].nunique(),
                      successes=int(group["success"].sum()),
                      success_pct=100 * share, success_low=100 * low, success_high=100 * high)
        won = _successful_maps(group[group["success"]])
        won_clusters = won["cluster"].to_numpy(dtype=object) if "cluster" in rows else None
        record["vanished"] = int(won["vanished"].eq(1.0).sum())
        record["n"] = int((won["explained"].astype(bool) & ~won["vanished"].eq(1.0)).sum()) if len(won) else 0
        for column in ("rank_corr", "box_iou"):
            mean, low, high = mean_interval(won[column].astype(float), won_clusters, confidence)
            record.update({column: mean, f"{column}_low": low, f"{column}_high": high})
        for column in ("points_before", "points_after_true", "points_new"):
            values = won[column].astype(float)
            record[column] = 100 * values.mean() if values.notna().any() else float("nan")
        share, low, high = share_interval(won["points_new"].astype(float), won_clusters, confidence)
        record.update(points_new_low=100 * low, points_new_high=100 * high)
        records.append(record)
    return pd.DataFrame(records)


def clean_pointing(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (model, method): the attacked images and how often (%) the clean true-class map points at
    the object, with its interval (:func:`share_interval`, over clusters when the rows have them)."""
    clean = rows[(rows["attack"] == NOT_ATTACKED) & rows["attacked"].astype(bool)]
    records = []
    for (model, method), group in clean.groupby(["model", "method"], sort=False):
        share, low, high = share_interval(group["points_before"].astype(float), _clusters(group), confidence)
        records.append({"model": model, "method": method, "images": group["image_id"].nunique(),
                        "points_before": 100 * share, "points_before_low": 100 * low, "points_before_high": 100 * high})
    return pd.DataFrame(records)


def ci(mean: float, low: float, high: float, digits: int = 2) -> str:
    """'mean [low, high]'; the mean alone where there is no interval, '-' where there is no mean."""
    if pd.isna(mean):
        return "-"
    if pd.isna(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """Attack names as printed (FGSM, PGD) and eps in grey levels ('4/255')."""
    return frame.assign(attack=frame["attack"].map(ATTACKS),
                        eps=(frame["eps"] * 255).round().astype(int).astype(str) + "/255")


def _cis(frame: pd.DataFrame, columns: Sequence[str], digits: int = 2) -> list[str]:
    return [ci(float(mean), float(low), float(high), digits) for mean, low, high in frame[list(columns)].to_numpy()]


def success_table(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per setting (one method's rows of :func:`attack_table`): images, photos, successes, success %."""
    success = labelled(table[table["method"] == method])
    success["success % [95 % CI]"] = _cis(success, ["success_pct", "success_low", "success_high"], 0)
    columns = [*SETTING, "images", "units", "successes", "success % [95 % CI]"]
    return success[columns].rename(columns={"units": "photos"})


def maps_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting and method: successes, vanished, n, rho, IoU, after->obj %, new->obj %, clean->obj %."""
    maps = labelled(table)
    maps = maps.assign(method=maps["method"].map(lambda m: SHORT.get(m, m)),
                       rho=_cis(maps, ["rank_corr", "rank_corr_low", "rank_corr_high"]),
                       IoU=_cis(maps, ["box_iou", "box_iou_low", "box_iou_high"]),
                       **{"after->obj %": maps["points_after_true"].round(0),
                          "new->obj % [95 % CI]": _cis(maps, ["points_new", "points_new_low", "points_new_high"], 0),
                          "clean->obj %": maps["points_before"].round(0)})
    return maps[[*SETTING, "method", "successes", "vanished", "n", "rho", "IoU", "after->obj %", "new->obj % [95 % CI]",
                 "clean->obj %"]]


def baseline_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`clean_pointing` with the methods' names and 'points at object % [95 % CI]'."""
    baseline = clean_pointing(rows).assign(method=lambda t: t["method"].map(HEATMAP_METHODS))
    baseline["points at object % [95 % CI]"] = _cis(baseline, ["points_before", "points_before_low",
                                                               "points_before_high"], 0)
    return baseline[["model", "method", "images", "points at object % [95 % CI]"]]


def paired_table(comparisons: Mapping[tuple[str, str, str], Comparison]) -> pd.DataFrame:
    """One line per comparison with images behind it: n, a - b [95 % CI], McNemar p, shown."""
    return pd.DataFrame([
        {"model": model, "comparison": question, "setting": where, "n": c.difference.n,
         "a - b [95 % CI]": ci(c.difference.mean, c.difference.low, c.difference.high),
         "McNemar p": "-" if c.mcnemar is None else f"{c.mcnemar.p_value:.3g}", "shown": c.shown}
        for (model, question, where), c in comparisons.items() if c.difference.n > 0])


# -- figures ---------------------------------------------------------------------------------

PANELS = {"success_pct": "attack success (%)", "rank_corr": "rank correlation, true class",
          "box_iou": "box IoU, true class", "points_new": "new class points at object (%)"}
STYLES = {("fgsm", "untargeted"): "C0", ("fgsm", "targeted"): "C1", ("pgd", "untargeted"): "C2",
          ("pgd", "targeted"): "C3"}
MARKERS = {"gradcam": "o", "guided_backprop": "s"}


def eps_figure(table: pd.DataFrame, models: Sequence[str], methods: Sequence[str], epsilons: Sequence[int]) -> Figure:
    """Success, rho, IoU and new-class pointing against eps with their intervals, one row per model
    (a setting's points shifted slightly so that their bars do not overlap)."""
    fig, axes = plt.subplots(len(models), len(PANELS), figsize=(4.2 * len(PANELS), 3.4 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        t = table[table["model"] == model]
        for ax, (column, label) in zip(axes[row], PANELS.items(), strict=True):
            success = column == "success_pct"
            low, high = ("success_low", "success_high") if success else (f"{column}_low", f"{column}_high")
            shown_methods = methods[:1] if success else methods
            for k, ((attack, mode), part) in enumerate(t.groupby(["attack", "mode"], sort=False)):
                for j, method in enumerate(shown_methods):
                    line = part[part["method"] == method].sort_values("eps")
                    x = line["eps"].to_numpy() * 255 * 2 ** (0.06 * (2 * k + j - 3))
                    y = line[column].to_numpy(dtype=float)
                    err = np.abs(np.vstack([y - line[low].to_numpy(dtype=float), line[high].to_numpy(dtype=float) - y]))
                    name = f"{ATTACKS[attack]} {mode}" + ("" if success else f", {SHORT.get(method, method)}")
                    ax.errorbar(x, y, yerr=np.nan_to_num(err), color=STYLES.get((attack, mode)),
                                marker=MARKERS.get(method, "o"), linestyle="-" if j == 0 else "--", markersize=4,
                                capsize=2, linewidth=1, label=name)
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
            ax.set(xticks=list(epsilons), xticklabels=[f"{e}/255" for e in epsilons], xlabel="eps", ylabel=label)
        axes[row, 0].set_title(f"{model}: {int(t['images'].max())} attacked images", fontsize=9, loc="left")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.tight_layout()
    return fig


def _show_map(ax: Axes, picture: np.ndarray, heat: torch.Tensor, title: str, method: str, boxes: list) -> None:
    """Grad-CAM as an overlay, other maps in grey (white = the 99th percentile); boxes, max point."""
    values = heat.numpy()
    if method == "gradcam":
        viz.show_overlay(ax, picture, values, title)
    else:
        ax.imshow(values / max(np.percentile(values, 99), 1e-12), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    for box in boxes:
        viz.draw_box(ax, box, "lime")
    point = max_point(values)
    if point is not None:
        ax.plot(*point, "wx", markersize=8, markeredgewidth=2)
    else:
        ax.set_title(title + " (all zero)", fontsize=8)


def examples_figure(examples: Sequence[tuple[AttackSpec, AttackOutcome, int]], candidates: Sequence[Sample],
                    truth: torch.Tensor, names: Sequence[str], methods: Sequence[str]) -> Figure:
    """One row per ``(spec, outcome, image index)``: the image and the true class's box, the
    perturbation amplified, then per method the true class's map before / after and the new class's."""
    fig, axes = viz.figure_grid(max(len(examples), 1), 2 + 3 * len(methods), cell=1.9)
    for row, (spec, out, i) in enumerate(examples):
        sample = candidates[i]
        boxes = sample.boxes_of(int(truth[i])).tolist()
        picture = out.pixels[i].permute(1, 2, 0).numpy()
        axes[row, 0].imshow(picture)
        for box in boxes:
            viz.draw_box(axes[row, 0], box, "lime")
        axes[row, 0].set_title(f"{sample.image_id}\n{ATTACKS[spec.attack]} {spec.mode} {round(spec.eps * 255)}/255",
                               fontsize=8)
        delta = (out.adversarial[i] - out.pixels[i]) / (2 * spec.eps) + 0.5
        axes[row, 1].imshow(delta.clamp(0, 1).permute(1, 2, 0).numpy())
        goal = f"\ntarget {names[int(out.target[i])]}" if spec.targeted else ""
        axes[row, 1].set_title(f"perturbation x{1 / (2 * spec.eps):.0f}{goal}", fontsize=8)
        adversarial = out.adversarial[i].permute(1, 2, 0).numpy()
        true_name, new_name = names[int(truth[i])], names[int(out.new_class[i])]
        for m, method in enumerate(methods):
            before, after_true, after_new = out.maps[method][i]
            label = SHORT.get(method, method)
            _show_map(axes[row, 2 + 3 * m], picture, before, f"{label} {true_name}\nbefore", method, boxes)
            _show_map(axes[row, 3 + 3 * m], adversarial, after_true, f"{label} {true_name}\nafter", method, boxes)
            _show_map(axes[row, 4 + 3 * m], adversarial, after_new, f"{label} {new_name}\nafter (new)", method, boxes)
    fig.tight_layout()
    return fig

"""Chapter 5's tables from result rows (:class:`gradcam_lib.experiments.chest_xray.ChestXrayExperiment`):
KTH's box share per finding beside its published means, ChestX-ray8's accuracy and AFP per T(IoBB),
the headline numbers with intervals that resample whole images (the independent units: an image's
boxes share the image and the model's state on it; :func:`gradcam_lib.stats.cluster_bootstrap_ci`),
IG's convergence, and paired comparisons of methods on the same boxes (a paired bootstrap of the
difference with images resampled, McNemar's exact test for hit / miss). The figures are in
:mod:`gradcam_lib.report.chest_xray_figures`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradcam_lib.datasets.chestxray import FINDINGS
from gradcam_lib.metrics.chestxray import IG_TOLERANCE, IOBB_THRESHOLDS
from gradcam_lib.report.published.chestxray import kth_box_shares
from gradcam_lib.stats import McNemar, PairedDifference, cluster_bootstrap_ci, mcnemar, paired_difference

__all__ = ["BOX_UNIT", "at_threshold", "box_size_table", "finding_map_table", "format_headline", "headline_table",
           "ig_convergence_table", "iobb_table", "kth_main_table", "kth_table", "paired_afp", "paired_hits",
           "paired_share", "paired_units", "redraw_comparison", "redraw_table"]


def _with_overall(rows: pd.DataFrame, by: list[str], summarise: Callable[[pd.DataFrame], pd.Series]) -> pd.DataFrame:
    """``summarise`` per (by + finding) and per ``by`` over all findings ("overall")."""
    per = rows.groupby([*by, "finding"], sort=True).apply(summarise, include_groups=False).reset_index()
    overall = rows.groupby(by, sort=True).apply(summarise, include_groups=False).reset_index().assign(finding="overall")
    return pd.concat([per, overall], ignore_index=True)


def kth_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean KTH share per (method, finding) and overall (means over boxes, as KTH's over 984),
    beside its chance level (mean box fraction) and the number of boxes."""
    def summarise(group: pd.DataFrame) -> pd.Series:
        return pd.Series({"kth_share": group["kth_share"].mean(), "chance": group["chance"].mean(),
                          "boxes": len(group)})

    table = _with_overall(rows, ["method"], summarise)
    table["boxes"] = table["boxes"].astype(int)
    return table


def iobb_table(rows: pd.DataFrame, thresholds: Sequence[float] = IOBB_THRESHOLDS) -> pd.DataFrame:
    """ChestX-ray8's accuracy (share of boxes localised) and AFP (false boxes per (image, finding)
    map) at each T(IoBB), per (method, finding) and overall; long format."""
    def summarise(group: pd.DataFrame) -> pd.Series:
        maps = group.drop_duplicates("map")
        values = {}
        for t in thresholds:
            values[f"acc@{t}"] = group[f"hit@{t}"].astype(bool).mean()
            values[f"afp@{t}"] = maps[f"fp@{t}"].mean()
        values["boxes"] = len(group)
        return pd.Series(values)

    wide = _with_overall(rows.assign(map=rows["image_id"] + "/" + rows["finding"]), ["method"], summarise)
    long = []
    for t in thresholds:
        long.append(wide[["method", "finding", "boxes"]].assign(T=t, acc=wide[f"acc@{t}"], afp=wide[f"afp@{t}"]))
    table = pd.concat(long, ignore_index=True)
    table["boxes"] = table["boxes"].astype(int)
    return table


#: A box is identified by its image, its finding and its index among that finding's boxes.
BOX_UNIT = ["image_id", "finding", "box"]


def paired_units(rows: pd.DataFrame, value: str, methods: Sequence[str], finding: str | None = None) -> pd.DataFrame:
    """``value`` of each method on the same boxes: index :data:`BOX_UNIT`, one column per method
    (in ``methods`` order), only boxes that every method scored; ``finding`` keeps one finding.

    Raises:
        KeyError: a method has no rows.
    """
    subset = rows if finding is None else rows[rows["finding"] == finding]
    missing = [m for m in methods if m not in set(subset["method"])]
    if missing:
        raise KeyError(f"no rows for {missing}")
    wide = subset[subset["method"].isin(list(methods))].pivot_table(index=BOX_UNIT, columns="method", values=value,
                                                                    aggfunc="first")
    return wide[list(methods)].dropna()


def headline_table(rows: pd.DataFrame, threshold: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Per method, over all boxes: KTH's mean box share and ChestX-ray8's accuracy at T(IoBB) =
    ``threshold``, each with a 95 % interval that resamples whole *images* (the independent units:
    an image's boxes share the image and the model's state on it; :func:`cluster_bootstrap_ci`);
    the chance share (mean box fraction); AFP per (image, finding) map with its interval over
    images; boxes, maps and images counted."""
    out = []
    for method, group in rows.groupby("method", sort=False):
        share = cluster_bootstrap_ci(group["kth_share"].to_numpy(float), group["image_id"].to_numpy(), seed=seed)
        hits = cluster_bootstrap_ci(group[f"hit@{threshold}"].astype(bool).to_numpy(float),
                                    group["image_id"].to_numpy(), seed=seed)
        maps = group.drop_duplicates(["image_id", "finding"])
        afp = cluster_bootstrap_ci(maps[f"fp@{threshold}"].to_numpy(float), maps["image_id"].to_numpy(), seed=seed)
        out.append({"method": method, "box share": share[0], "share low": share[1], "share high": share[2],
                    "chance": group["chance"].mean(), f"acc@{threshold}": hits[0], "acc low": hits[1],
                    "acc high": hits[2], f"afp@{threshold}": afp[0], "afp low": afp[1], "afp high": afp[2],
                    "boxes": len(group), "maps": len(maps), "images": group["image_id"].nunique()})
    return pd.DataFrame(out)


def ig_convergence_table(rows: pd.DataFrame, tolerance: float = IG_TOLERANCE) -> pd.DataFrame:
    """Per IG method, over its (image, finding) maps: how many maps, the steps used (count per
    step value), the largest and the median completeness gap, and how many maps are under
    ``tolerance`` (Sundararajan et al.'s 5 %)."""
    out = []
    for method, group in rows[rows["ig_gap"].notna()].groupby("method", sort=False):
        maps = group.drop_duplicates(["image_id", "finding"])
        steps = maps["ig_steps"].astype(int).value_counts().sort_index()
        out.append({"method": method, "maps": len(maps),
                    "steps used": ", ".join(f"{s}: {n}" for s, n in steps.items()),
                    "max gap": maps["ig_gap"].max(), "median gap": maps["ig_gap"].median(),
                    f"maps under {tolerance:.0%}": int((maps["ig_gap"] < tolerance).sum())})
    return pd.DataFrame(out)


def paired_share(rows: pd.DataFrame, a: str, b: str | None = None, finding: str | None = None,
                 seed: int = 0) -> PairedDifference:
    """Mean of (box share of ``a``) - (box share of ``b``) on the same boxes, with a paired
    bootstrap interval that resamples whole images; ``b=None`` compares ``a`` with chance (each
    box's own share of the image)."""
    if b is None:
        wide = paired_units(rows, "kth_share", [a], finding)
        other = paired_units(rows, "chance", [a], finding)[a]
    else:
        wide = paired_units(rows, "kth_share", [a, b], finding)
        other = wide[b]
    clusters = wide.index.get_level_values("image_id").to_numpy()
    return paired_difference(wide[a].to_numpy(), other.loc[wide.index].to_numpy(), clusters=clusters, seed=seed)


def paired_hits(rows: pd.DataFrame, a: str, b: str, threshold: float = 0.5, finding: str | None = None) -> McNemar:
    """McNemar's exact test of ``a``'s and ``b``'s ChestX-ray8 hits at T(IoBB) = ``threshold``
    on the same boxes (each box is a unit; on the stand-in, one box per (image, finding))."""
    wide = paired_units(rows, f"hit@{threshold}", [a, b], finding).astype(bool)
    return mcnemar(wide[a].to_numpy(), wide[b].to_numpy())


def paired_afp(rows: pd.DataFrame, a: str, b: str, threshold: float = 0.5, seed: int = 0) -> PairedDifference:
    """Mean difference of false boxes per (image, finding) map at T(IoBB) = ``threshold``,
    ``a`` - ``b``, on the same maps, with a paired bootstrap that resamples whole images."""
    maps = rows[rows["box"] == 0]
    wide = paired_units(maps, f"fp@{threshold}", [a, b]).astype(float)
    clusters = wide.index.get_level_values("image_id").to_numpy()
    return paired_difference(wide[a].to_numpy(), wide[b].to_numpy(), clusters=clusters, seed=seed)


def finding_map_table(class_names: Sequence[str], present: Sequence[str], index: Callable[[str], int]
                      ) -> pd.DataFrame:
    """Which output of the model is which finding: ``index(finding)`` (the model's own class list,
    :func:`gradcam_lib.models.xray.finding_index`), its name there and the ChestX-ray8 position."""
    mapping = pd.DataFrame({"finding": list(present), "model output": [index(f) for f in present]})
    mapping["model's name for it"] = [class_names[i] for i in mapping["model output"]]
    mapping["ChestX-ray8 position"] = [FINDINGS.index(f) for f in present]
    return mapping


def kth_main_table(kth: pd.DataFrame, labels: Mapping[str, str], model: str, source: str
                   ) -> tuple[pd.DataFrame, list[str], dict[str, int]]:
    """:func:`kth_table` as one row per method (columns: the findings in ChestX-ray8 order, then
    ``overall``), a chance row, and KTH's published rows below (:func:`kth_box_shares`).

    Returns:
        ``(table, finding order with "overall", boxes per finding)``.
    """
    order = [f for f in FINDINGS if f in set(kth["finding"])] + ["overall"]
    first = kth[kth["method"] == kth["method"].iloc[0]].set_index("finding")
    ours = kth.pivot(index="method", columns="finding", values="kth_share")[order].reindex(list(labels.values()))
    chance = first["chance"][order].rename("chance (box share)")
    ours = pd.concat([ours, chance.to_frame().T]).assign(model=model, source=source)
    published = kth_box_shares().rename(columns={"kth_share": "overall"})
    table = pd.concat([ours.rename_axis("method").reset_index(), published], ignore_index=True)
    return table[["source", "model", "method", *order]], order, first["boxes"][order].to_dict()


def format_headline(head: pd.DataFrame) -> pd.DataFrame:
    """:func:`headline_table` (indexed by method) as text: each value with its 95 % interval."""
    interval = lambda m, lo, hi: f"{m:.3f} [{lo:.3f}, {hi:.3f}]"  # noqa: E731
    return pd.DataFrame({
        "box share [95% CI]": [interval(*r) for r in head[["box share", "share low", "share high"]].to_numpy()],
        "chance": head["chance"].round(3),
        "acc@0.5 [95% CI]": [interval(*r) for r in head[["acc@0.5", "acc low", "acc high"]].to_numpy()],
        "AFP@0.5 [95% CI]": [interval(*r) for r in head[["afp@0.5", "afp low", "afp high"]].to_numpy()],
    }, index=head.index)


def redraw_comparison(rows: pd.DataFrame, seed: int, gradient_shap: str, ig: str, cams: Sequence[str],
                      bootstrap_seed: int = 0) -> dict[str, Any]:
    """One draw of GradientShap's random points (``seed``): its overall box share and its paired
    differences with IG and with each CAM (labels ``cams``: Grad-CAM, Grad-CAM++)."""
    return {"seed": seed, "GradientShap box share": rows.loc[rows["method"] == gradient_shap, "kth_share"].mean(),
            "IG - GradientShap": paired_share(rows, ig, gradient_shap, seed=bootstrap_seed),
            **{f"GradientShap - {c}": paired_share(rows, gradient_shap, c, seed=bootstrap_seed) for c in cams}}


def redraw_table(redraws: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`redraw_comparison` of every draw, indexed by seed, the differences as text."""
    table = pd.DataFrame(list(redraws)).set_index("seed")
    return table.map(lambda v: v if isinstance(v, float) else f"{v.mean:+.3f} [{v.low:+.3f}, {v.high:+.3f}]").round(3)


def at_threshold(table: pd.DataFrame, value: str, order: Sequence[str], threshold: float = 0.5) -> pd.DataFrame:
    """``value`` (``acc`` or ``afp``) of a long :func:`iobb_table` (or ChestX-ray8's Table 4) at
    T(IoBB) = ``threshold``: one row per method, one column per finding of ``order``."""
    return (table[np.isclose(table["T"], threshold)].pivot(index="method", columns="finding", values=value)
            .reindex(columns=list(order)))


def box_size_table(rows: pd.DataFrame, cams: Sequence[str], pixel_level: Sequence[str], findings: Sequence[str]
                   ) -> pd.DataFrame:
    """Per finding: the finding's box area, the CAMs' top-15 % pixels, and the ratio of the smallest
    generated box to the finding's box (minimum over the CAMs' maps, median over the pixel-level)."""
    first = rows.drop_duplicates(["image_id", "finding", "box"])
    sizes = rows.assign(ratio=rows["smallest_pred_area"] / rows["box_area"])
    return pd.concat({
        "finding's box (px)": first.groupby("finding")["box_area"].mean(),
        **{f"{m}: top-15 % pixels": sizes[sizes.method == m].groupby("finding")["kth_pixels"].mean() for m in cams},
        **{f"{m}: min ratio": sizes[sizes.method == m].groupby("finding")["ratio"].min() for m in cams},
        **{f"{m}: median ratio": sizes[sizes.method == m].groupby("finding")["ratio"].median() for m in pixel_level},
    }, axis=1).reindex(list(findings)).T

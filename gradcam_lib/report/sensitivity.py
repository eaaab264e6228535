"""Chapter 6's report: the per-run table of success rates and map read-outs, the solver comparison,
the equal-budget comparison, the random-pixel tests' table and the figures, from the rows of
:class:`~gradcam_lib.experiments.sensitivity.SensitivityExperiment`."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import stats

from gradcam_lib.attacks.one_pixel import OnePixelResult, paint_pixels
from gradcam_lib.metrics.sensitivity import RandomPixelTest
from gradcam_lib.models import ModelEntry
from gradcam_lib.report import viz
from gradcam_lib.stats import mean_ci, wilson_ci

__all__ = [
    "examples_figure",
    "null_table",
    "ranks_figure",
    "run_name",
    "same_budget_table",
    "sensitivity_table",
    "solver_table",
    "value_tables",
    "with_run_names",
]

Maps = tuple[torch.Tensor, torch.Tensor]


def run_name(model: str, dataset: str, popsize: int, maxiter: int) -> str:
    """'model / dataset / popsize x maxiter'."""
    return f"{model} / {dataset} / {popsize} x {maxiter}"


def with_run_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``run`` column (:func:`run_name` of its model, dataset and budget) first."""
    names = [run_name(*key) for key in zip(frame["model"], frame["dataset"], frame["popsize"], frame["maxiter"],
                                           strict=True)]
    out = frame.copy()
    out.insert(0, "run", names)
    return out


def sensitivity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, popsize, maxiter): images attempted, successes, success rate (%) with
    its Wilson 95 % interval over images, mean queries, and over the successful attacks the
    Grad-CAM value at the attacked pixel before / after (mean with its bootstrap 95 % interval over
    attacked images, sd, min, max: KTH's statistics), its mean percentile rank within the map beside
    the random-pixel null, and the share (%) of attacks where it is exactly zero (Wilson interval)
    beside a random pixel's chance of a zero (the maps' mean share of zero pixels)."""
    out = []
    keys = ["dataset", "model", "popsize", "maxiter"]
    for key, group in rows.groupby(keys, sort=False):
        hit = group[group["success"].astype(bool)]
        share, low, high = wilson_ci(group["success"].astype(bool).to_numpy())
        row = {**dict(zip(keys, key, strict=True)), "attempted": len(group), "successes": len(hit),
               "success_%": 100 * share, "success_low": 100 * low, "success_high": 100 * high,
               "queries": group["queries"].mean()}
        for when in ("before", "after"):
            values = hit[f"{when}_value"].to_numpy(dtype=float)
            mean, mean_low, mean_high = mean_ci(values)
            zero, zero_low, zero_high = wilson_ci(values == 0)
            row.update({f"{when}_mean": mean, f"{when}_mean_low": mean_low, f"{when}_mean_high": mean_high,
                        f"{when}_sd": values.std() if len(values) else np.nan,
                        f"{when}_min": values.min() if len(values) else np.nan,
                        f"{when}_max": values.max() if len(values) else np.nan,
                        f"{when}_pct": hit[f"{when}_percentile"].mean(),
                        f"{when}_null_pct": hit[f"{when}_null_percentile"].mean(),
                        f"{when}_zero_%": 100 * zero, f"{when}_zero_low": 100 * zero_low,
                        f"{when}_zero_high": 100 * zero_high,
                        f"{when}_zero_null_%": 100 * hit[f"{when}_zero_share"].mean()})
        out.append(row)
    return pd.DataFrame(out)


def solver_table(results: Mapping[str, OnePixelResult], budget: str) -> pd.DataFrame:
    """Per solver: images, successes and the success rate (%) with its Wilson 95 % interval."""
    return pd.DataFrame([
        {"solver": name, "budget": budget, "images": len(r.success), "successes": int(r.success.sum()),
         **dict(zip(("success_%", "low", "high"), (100 * v for v in wilson_ci(r.success.numpy())), strict=True))}
        for name, r in results.items()])


def same_budget_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every two runs on different data sets with the same budget: their success rates, the
    difference and Fisher's exact p (independent samples)."""
    pairs = []
    for (_, a), (_, b) in itertools.combinations(table.iterrows(), 2):
        if a["dataset"] != b["dataset"] and (a["popsize"], a["maxiter"]) == (b["popsize"], b["maxiter"]):
            _, p_value = stats.fisher_exact([[a["successes"], a["attempted"] - a["successes"]],
                                             [b["successes"], b["attempted"] - b["successes"]]])
            pairs.append({"run A": a["run"], "run B": b["run"], "success A %": a["success_%"],
                          "success B %": b["success_%"], "A - B": a["success_%"] - b["success_%"], "Fisher p": p_value})
    return pd.DataFrame(pairs)


def value_tables(table: pd.DataFrame, min_units: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """KTH's statistics of the value at the attacked pixel (no interval below ``min_units``
    successes) and the zero shares beside a random pixel's."""
    columns = ["run", "successes"] + [f"{w}_{s}" for w in ("before", "after")
                                      for s in ("mean", "mean_low", "mean_high", "sd", "min", "max")]
    values = table[columns].copy()
    few = values["successes"] < min_units
    values.loc[few, ["before_mean_low", "before_mean_high", "after_mean_low", "after_mean_high"]] = np.nan
    zero_columns = ["run", "successes"] + [f"{w}_{s}" for w in ("before", "after")
                                           for s in ("zero_%", "zero_low", "zero_high", "zero_null_%")]
    return values, table[zero_columns]


def null_table(tests: Mapping[tuple[str, str, str], RandomPixelTest], min_units: int) -> pd.DataFrame:
    """One line per (run, map) of the rank and zero tests (``(run, when, kind) -> test``); neither
    interval nor p below ``min_units`` attacks."""
    frame = pd.DataFrame([
        {"run": name, "map": when, "n": rank.n, "rank": rank.observed, "random pixel": rank.null,
         "difference": rank.difference, "low": rank.low, "high": rank.high, "p": rank.p_value,
         "zero at pixel %": 100 * zero.observed, "random zero %": 100 * zero.null, "zero p": zero.p_value}
        for (name, when, kind), rank in tests.items() if kind == "rank"
        for zero in [tests[name, when, "zero"]]])
    frame.loc[frame["n"] < min_units, ["low", "high", "p", "zero p"]] = np.nan
    return frame


def examples_figure(maps_by_run: Mapping[str, tuple[pd.DataFrame, torch.Tensor, Maps]],
                    entries: Mapping[str, ModelEntry], per_run: int = 2) -> Figure | None:
    """The first ``per_run`` successful attacks of each run: the attacked pixel circled on the map of
    the original class (left) and of the new class on the attacked image (right), with the value at
    the pixel and its rank (the map's random-pixel null in brackets)."""
    shown = [(name, k) for name, (hit, _, _) in maps_by_run.items() for k in range(min(per_run, len(hit)))]
    if not shown:
        return None
    fig, axes = viz.figure_grid(len(shown), 2, cell=2.4)
    for row_axes, (name, k) in zip(axes, shown, strict=True):
        hit, images, (before, after) = maps_by_run[name]
        row = hit.iloc[k]
        entry = entries[row["model"]]
        x, y = torch.tensor([row["x"]]), torch.tensor([row["y"]])
        colour = torch.tensor([[row[f"colour_{c}"] for c in range(images.shape[1])]], dtype=torch.float32)
        attacked = paint_pixels(images[k : k + 1], x, y, colour, entry.transform.mean, entry.transform.std)
        for ax, picture, heat, cls, when in ((row_axes[0], images[k : k + 1], before[k], row["class_before"], "before"),
                                             (row_axes[1], attacked, after[k], row["class_after"], "after")):
            viz.show_overlay(ax, entry.transform.to_display(picture[0]), heat,
                             f"{row['model']} ({row['popsize']} x {row['maxiter']}): {entry.class_names[int(cls)]}\n"
                             f"{when}: {row[f'{when}_value']:.3g} "
                             f"(rank {row[f'{when}_percentile']:.0f} [{row[f'{when}_null_percentile']:.0f}])")
            ax.scatter([row["x"]], [row["y"]], s=120, facecolors="none", edgecolors="white", linewidths=1.5)
    fig.tight_layout()
    return fig


def ranks_figure(hits: Mapping[str, pd.DataFrame], seed: int = 0) -> Figure | None:
    """Each attacked image's rank (dots) beside its own map's random-pixel null (grey bars), per run
    (``name -> successful rows``) and map; vertical jitter from a generator seeded with ``seed``."""
    if not hits:
        return None
    jitter = np.random.default_rng(seed)
    labels: Sequence[str] = [f"{name} / {when}" for name in hits for when in ("before", "after")]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1))
    for level, label in enumerate(labels):
        name, when = label.rsplit(" / ", 1)
        hit = hits[name]
        offsets = level + jitter.uniform(-0.18, 0.18, len(hit))
        ax.scatter(hit[f"{when}_null_percentile"], offsets, marker="|", color="0.6", s=60)
        ax.scatter(hit[f"{when}_percentile"], offsets, color="C0" if when == "before" else "C1", s=14)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlim(-2, 102)
    ax.set_xlabel("percentile rank of the attacked pixel (dots) / random-pixel null (bars)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig

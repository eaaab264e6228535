"""Chapter 5's figures: ChestX-ray8's localisation accuracy against T(IoBB) beside its Table 4, and
example maps with the ground-truth box and the boxes ChestX-ray8's generator draws from each map
(:func:`gradcam_lib.metrics.chestxray.map_to_boxes`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.chestxray import FINDINGS
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.metrics.chestxray import map_to_boxes
from gradcam_lib.report import viz
from gradcam_lib.report.published.chestxray import chestxray8_localization

__all__ = ["accuracy_figure", "examples_figure"]


def accuracy_figure(iobb: pd.DataFrame, labels: Sequence[str], findings: Sequence[str]) -> sns.FacetGrid:
    """Accuracy against T(IoBB), one panel per finding, one line per method (``labels`` order) of a
    long :func:`gradcam_lib.report.chest_xray.iobb_table`; ChestX-ray8's Table 4 dashed in black."""
    plot = iobb[iobb["finding"] != "overall"]
    grid = sns.relplot(data=plot, x="T", y="acc", hue="method", hue_order=list(labels), style="method",
                       style_order=list(labels), markers=True, dashes=False, col="finding", col_order=list(findings),
                       kind="line", height=2.8, aspect=0.9, alpha=0.8)
    reference = chestxray8_localization()
    for finding, ax in grid.axes_dict.items():
        ref = reference[reference["finding"] == finding]
        (line,) = ax.plot(ref["T"], ref["acc"], "k--", marker="s", label="ChestX-ray8 Table 4")
        ax.set_ylim(-0.03, 1.03)
    grid.set_axis_labels("T(IoBB)", "localisation accuracy")
    grid.axes.flat[0].legend(handles=[line], fontsize=7, loc="center left")
    return grid


def examples_figure(examples: Sequence[tuple[Sample, str]], maps: Mapping[str, torch.Tensor],
                    labels: Mapping[str, str], transform: ImageTransform) -> Figure:
    """One row per (sample, finding) of ``examples``: the image with the finding's boxes (green),
    then each method's map (``maps[method]``: ``(len(examples), H, W)``) with its positive part on
    top, the finding's boxes and up to 20 boxes the generator drew (red; the title counts them)."""
    fig, axes = viz.figure_grid(len(examples), len(maps) + 1, cell=2.0)
    for column, (method, method_maps) in enumerate(maps.items(), start=1):
        for row, (sample, finding) in enumerate(examples):
            picture = transform.to_display(sample.image)
            boxes = sample.boxes_of(FINDINGS.index(finding)).tolist()
            if column == 1:
                axes[row, 0].imshow(picture)
                axes[row, 0].set_title(f"{finding}", fontsize=9)
                for box in boxes:
                    viz.draw_box(axes[row, 0], box, "lime")
            predicted = map_to_boxes(method_maps[row])
            title = labels[method].replace(" (", "\n(")
            viz.show_overlay(axes[row, column], picture, method_maps[row].clamp(min=0),
                             f"{title}\n{len(predicted)} boxes")
            for box in predicted[:20]:
                viz.draw_box(axes[row, column], box, "red")
            for box in boxes:
                viz.draw_box(axes[row, column], box, "lime")
    fig.tight_layout()
    return fig

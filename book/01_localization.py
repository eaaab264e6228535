# %% [markdown]
# # 1. Weakly supervised localisation
#
# Grad-CAM is never trained to draw boxes, yet its maps can localise objects
# {cite}`selvaraju2017gradcam`. The paper's protocol (Sec. 4.1), which this chapter implements in
# `gradcam_lib.localization`:
#
# 1. resize the **whole image to the network's input size** (the paper's code:
#    `image.scale(img, 224, 224)`, no centre crop, so no ground-truth box is cut) and predict the
#    top-5 classes;
# 2. for each, compute the Grad-CAM map at the last rectified feature map, binarise it at **15 % of
#    its maximum**, and take the bounding box of the **largest 8-connected segment** (by pixels);
# 3. score with the ILSVRC CLS-LOC devkit, `eval_clsloc.m` {cite}`russakovsky2015imagenet`: a guess
#    is right for a ground-truth class when it has that class and its box has **IoU >= 0.5** with
#    one of that class's boxes (fixed; the relaxed threshold for small boxes belongs to the
#    detection devkit and is only an option here, `tiny_box_rule`). Top-5: one of the five guesses is
#    right. An image with several ground-truth classes scores the **mean over its classes**
#    (the devkit's `e./n`; the composite images below hold up to three classes), and the devkit's
#    1 762 blacklisted validation images are skipped when its blacklist file is given (`blacklist`).
#
# Boxes go through exactly the same geometry as the pixels (the KTH project scaled boxes
# anisotropically while the image kept its aspect ratio). `geometry: "crop"` switches to
# torchvision's resize-256 / centre-crop-224 instead; both profiles use the paper's whole-image
# resize, so that no box is cut and the chapter measures the paper's setting (EfficientNet-Lite was
# trained with crops, so its classification errors on non-square photographs are not its published
# ones). The "Backprop" baseline boxes the map max_c |dy/dx| {cite}`simonyan2014deep` in the same
# way.
#
# Beside the paper's fixed 15 % we report **MaxBoxAcc** {cite}`choe2020wsol`: the
# ground-truth-class map's box accuracy at the best of the thresholds 0.00, 0.01, ..., 0.99 (V1:
# IoU >= 0.5, largest segment; V2: the mean over IoU 0.3 / 0.5 / 0.7, best of all segments). A
# threshold that the chapter *picks* is picked on a held-out **calibration split** -- composites of
# another seed (`seed + 1000`) here, the first `calibration_images` validation images for ILSVRC --
# and then reported on the test split.

# %% tags=["parameters", "remove-cell"]
# Parameters (papermill overrides these; see book/params/<profile>/01_localization.yaml)
profile = "default"
runs = [["efficientnet_lite0", "gradcam"], ["efficientnet_lite0", "backprop"], ["efficientnet_lite2", "gradcam"]]
datasets = ["composite", "photos"]  # test data sets: "composite" | "photos" | "ilsvrc"
n_images = 160  # per test data set (photos: all of them)
batch_size = 16
device = "cpu"
data_root = None  # ILSVRC2012 val folder (or CSV index) for "ilsvrc"
blacklist = None  # ILSVRC: the devkit's ILSVRC2013_clsloc_validation_blacklist.txt; its images are skipped
geometry = "resize"  # "resize": whole image to the input size (the paper's code); "crop": resize + centre crop
seed = 0
threshold = 0.15  # the paper's binarisation threshold (fraction of each map's maximum)
calibration = "composite"  # where a threshold is picked: "composite" (seed + calibration_seed_offset) or
                           # "ilsvrc" (the first calibration_images val images; the test images follow them)
calibration_images = 160
calibration_seed_offset = 1000
geometry_check_images = 160  # test images scored in the other geometry too (figure model, Grad-CAM)
tiny_box_rule = False  # True: the DET devkit's relaxed IoU for small boxes (not the CLS-LOC rule)
num_workers = 0
channels_last = False  # GPU fast path: channels-last memory format
bf16 = False  # GPU fast path: bfloat16 autocast (maps within a few % of fp32; see tests/test_acceleration.py)
figure_model = "efficientnet_lite0"
results_dir = "../results"

# %% tags=["injected-parameters", "hide-input"]
# Parameters
profile = "default"
runs = [["efficientnet_lite0", "gradcam"], ["efficientnet_lite0", "backprop"], ["efficientnet_lite2", "gradcam"]]
datasets = ["composite", "photos"]
n_images = 160
batch_size = 16
device = "cpu"
data_root = None
blacklist = None
geometry = "resize"
seed = 0
calibration = "composite"
calibration_images = 160
calibration_seed_offset = 1000
geometry_check_images = 160
tiny_box_rule = False
num_workers = 0
figure_model = "efficientnet_lite0"
channels_last = False
bf16 = False


# %% tags=["hide-input"]
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch

from gradcam_lib.datasets import build_dataset
from gradcam_lib.localization import MAX_BOX_ACC_V2_IOUS, THRESHOLD_GRID, error_interval, evaluate_localization, iou_curves, max_box_acc_ci, pick_threshold
from gradcam_lib.methods import HEATMAP_METHODS, grad_cam, guided_backprop, guided_grad_cam
from gradcam_lib.models import load_model
from gradcam_lib.report import published, viz
from gradcam_lib.report.claims import Claims
from gradcam_lib.stats import mcnemar, paired_difference

thresholds = sorted(set(THRESHOLD_GRID) | {threshold})  # 0.00, 0.01, ..., 0.99 (Choe et al. 2020)
out_dir = Path(results_dir) / profile / "01_localization"
entries = {name: load_model(name, device) for name in dict.fromkeys([model for model, _ in runs] + [figure_model])}
transforms = {name: entry.transform.with_geometry(geometry) for name, entry in entries.items()}
test_start = calibration_images if calibration == "ilsvrc" else 0  # ILSVRC: the test part follows the held-out part
data = {(model, name): build_dataset(name, transforms[model], n_images, data_root, seed, blacklist=blacklist,
                                     start=test_start if name == "ilsvrc" else 0)
        for model in entries for name in datasets}
calibration_data = {model: build_dataset(calibration, transforms[model], calibration_images, data_root,
                                         seed + calibration_seed_offset, blacklist=blacklist)
                    for model in entries}
splits = [(f"{name} (test)", data[figure_model, name]) for name in datasets]
splits.append((f"{calibration} (calibration)", calibration_data[figure_model]))
for label, dataset in splits:
    if hasattr(dataset, "skipped"):
        print(f"{label}: {len(dataset.skipped)} of {len(dataset) + len(dataset.skipped)} val images are on the devkit's "
              f"blacklist and skipped ({len(dataset)} left)")
if not any(hasattr(dataset, "skipped") for _, dataset in splits):
    print("no ILSVRC images in this profile: the devkit's blacklist does not apply (0 images skipped)")

# %% [markdown]
# ## Run
#
# One pass per (model, method, data set), every map boxed at all 100 thresholds at once (one
# union-find sweep per map). Per-image rows go to `results/<profile>/01_localization/` after every
# batch, so an interrupted run resumes where it stopped. The calibration split maps only the
# ground-truth class.

# %% tags=["remove-stderr", "hide-input"]
rows = pd.concat(
    [
        evaluate_localization(entries[model], data[model, name], name, out_dir, method, thresholds,
                              batch_size, device, num_workers, tiny_box_rule, channels_last, bf16)
        for model, method in runs
        for name in datasets
    ],
    ignore_index=True,
)
# the calibration split only needs the ground-truth class's map (top_k=0)
calibration_rows = pd.concat(
    [
        evaluate_localization(entries[model], calibration_data[model], f"{calibration}-calibration", out_dir, method,
                              thresholds, batch_size, device, num_workers, tiny_box_rule, channels_last, bf16, top_k=0)
        for model, method in runs
    ],
    ignore_index=True,
)


# %% [markdown]
# ## Errors beside the published numbers
#
# Errors in % (lower is better) at the paper's 15 % threshold, with 95 % intervals. The composite
# benchmark's 160 images paste 8 object crops from 7 photographs, so they are not independent: its
# intervals resample whole source objects (the crop of each image's first ground-truth class,
# cluster bootstrap); the photographs' are Wilson intervals over their seven images. `GT-known`
# boxes the map of the image's first ground-truth class whatever the prediction (the "GT-known"
# localisation of {cite}`zhou2016cam`): it separates localisation from classification, which the
# CLS-LOC errors mix (a wrong class is a localisation error too). The published rows are
# VGG-16 / AlexNet / GoogLeNet on the 50 000 ILSVRC2012 validation images; ours, in the default
# profile, are EfficientNet-Lite on the generated composites and the embedded photographs, so **the
# two tables measure different things**: the comparisons to read are between methods and models
# within one run.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
def run_rows(frame: pd.DataFrame, name: str, model: str, method: str) -> pd.DataFrame:
    return frame[(frame["dataset"] == name) & (frame["model"] == model) & (frame["method"] == method)]


def at_threshold(frame: pd.DataFrame, value: float) -> pd.DataFrame:
    """One row per image (indexed by image id) at one threshold."""
    return frame[np.isclose(frame["threshold"], value)].drop_duplicates("image_id").set_index("image_id")


def clusters_of(dataset, image_ids, gt_classes) -> list[str] | None:
    """The source object of each composite's first ground-truth class (composites that paste the same
    crop are not independent); None for data sets of independent images."""
    if not hasattr(dataset, "source_of"):
        return None
    return [dataset.source_of(image_id, int(label)) for image_id, label in zip(image_ids, gt_classes)]


def with_interval(scores: pd.Series, clusters: list[str] | None) -> str:
    error, low, high = error_interval(scores.to_numpy(dtype=float), clusters)
    return f"{error:.1f} [{low:.1f}, {high:.1f}]"


per_image, clusters = {}, {}
for name in datasets:
    for model, method in runs:
        frame = at_threshold(run_rows(rows, name, model, method), threshold)
        per_image[name, model, method] = frame
        clusters[name, model, method] = clusters_of(data[model, name], frame.index, frame["gt_class"])
errors = pd.DataFrame(
    [
        {"data set": name, "model": model, "method": HEATMAP_METHODS[method], "images": len(frame),
         **{label: with_interval(frame[column], clusters[name, model, method])
            for column, label in [("loc_top1", "loc top-1"), ("loc_top5", "loc top-5"), ("loc_gt_known", "GT-known")]}}
        for (name, model, method), frame in per_image.items()
    ]
)
errors

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
# classification errors depend on the model only (every method boxes the same top-5 guesses)
for name in datasets:
    counts = per_image[(name, *runs[0])]["classes"].value_counts().sort_index()
    print(f"{name}: images by number of ground-truth classes: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
classification = pd.DataFrame(
    [
        {"data set": name, "model": model, "images": len(frame),
         "cls top-1": with_interval(frame["cls_top1"], clusters[name, model, method]),
         "cls top-5": with_interval(frame["cls_top5"], clusters[name, model, method])}
        for (name, model, method), frame in per_image.items()
        if method == next(m for r, m in runs if r == model)
    ]
)
classification

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
published.localization_errors()  # ILSVRC2012 val, 15 % threshold, errors in % (no intervals published)

# %% [markdown]
# ## Box accuracy: fixed, calibrated and best threshold
#
# GT-known box accuracy in % (higher is better; 100 minus the GT-known error) at the paper's 15 %,
# at the threshold picked on the calibration split (the one with the highest GT-known accuracy
# there; ties to the smaller), and MaxBoxAcc V1 / V2 {cite}`choe2020wsol`. MaxBoxAcc takes the
# best threshold on the test images themselves: it measures how well the maps *can* be boxed, not
# what a fixed protocol delivers, and is an upper bound on the other two columns. Its intervals
# resample images (composites: source objects) and re-take the maximum in every resample.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
picked = {(model, method): pick_threshold(calibration_rows[(calibration_rows["model"] == model)
                                                           & (calibration_rows["method"] == method)])
          for model, method in runs}


def accuracy(value: tuple[float, float, float]) -> str:
    return f"{100 * value[0]:.1f} [{100 * value[1]:.1f}, {100 * value[2]:.1f}]"


box_accuracy = []
for (name, model, method), frame in per_image.items():
    run = run_rows(rows, name, model, method)
    source = dict(zip(frame.index, clusters[name, model, method] or frame.index))
    ids, _, v1 = iou_curves(run, "gt_iou")
    _, _, v2 = iou_curves(run, "gt_iou_any")
    groups = [source[i] for i in ids]
    at_pick = at_threshold(run, picked[model, method])
    error15 = error_interval(frame["loc_gt_known"].to_numpy(float), clusters[name, model, method])
    error_pick = error_interval(at_pick["loc_gt_known"].to_numpy(float), clusters[name, model, method])
    box_accuracy.append({
        "data set": name, "run": f"{model} / {HEATMAP_METHODS[method]}",
        "at 15 %": accuracy(tuple(1 - e / 100 for e in (error15[0], error15[2], error15[1]))),
        "picked on calibration": f"{picked[model, method]:.2f}",
        "at the picked threshold": accuracy(tuple(1 - e / 100 for e in (error_pick[0], error_pick[2], error_pick[1]))),
        "MaxBoxAcc V1": accuracy(max_box_acc_ci(v1, (0.5,), groups)),
        "MaxBoxAccV2": accuracy(max_box_acc_ci(v2, MAX_BOX_ACC_V2_IOUS, groups)),
    })
box_accuracy = pd.DataFrame(box_accuracy)
box_accuracy

# %% [markdown]
# ## The geometry: whole-image resize against the centre crop
#
# The same test images in the other geometry, for the figure model's Grad-CAM (ground-truth class
# only): GT-known error at 15 % and the best threshold on these images (MaxBoxAcc V1). The paper's
# whole-image resize keeps every box whole but distorts non-square images; torchvision's resize-256 /
# crop-224 keeps the aspect ratio, cuts the borders -- on the composites, their empty 1/16 margin, so
# that the objects fill a larger share of the input -- and can cut ground-truth boxes (on ILSVRC).

# %% tags=["remove-stderr", "hide-input"]
check_name = datasets[0]
other = "crop" if geometry == "resize" else "resize"
geometry_rows = {}
for shape in (geometry, other):
    if shape == geometry and (check_name, figure_model, "gradcam") in per_image:
        run = run_rows(rows, check_name, figure_model, "gradcam")
        geometry_rows[shape] = run[run["image_id"].isin(run["image_id"].unique()[:geometry_check_images])]
        continue
    dataset = build_dataset(check_name, entries[figure_model].transform.with_geometry(shape), geometry_check_images,
                            data_root, seed, blacklist=blacklist, start=test_start if check_name == "ilsvrc" else 0)
    geometry_rows[shape] = evaluate_localization(entries[figure_model], dataset, check_name, out_dir / f"geometry-{shape}",
                                                 "gradcam", thresholds, batch_size, device, num_workers, tiny_box_rule,
                                                 channels_last, bf16, top_k=0)

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
at15 = {shape: at_threshold(frame, threshold) for shape, frame in geometry_rows.items()}
geometry_groups = {shape: clusters_of(data[figure_model, check_name], frame.index, frame["gt_class"])
                   for shape, frame in at15.items()}
geometry_table = pd.DataFrame(
    [
        {"geometry": shape, "images": len(frame),
         "GT-known error at 15 %": with_interval(frame["loc_gt_known"], geometry_groups[shape]),
         "MaxBoxAcc V1": accuracy(max_box_acc_ci(iou_curves(geometry_rows[shape], "gt_iou")[2], (0.5,),
                                                 geometry_groups[shape] or list(frame.index)))}
        for shape, frame in at15.items()
    ]
)
geometry_table

# %% [markdown]
# ## Grad-CAM, Guided Backprop and Guided Grad-CAM on the photographs
#
# For the top-1 class of each photograph; the hand-made ground-truth box is drawn in green.

# %% tags=["hide-input"]
entry = entries[figure_model]
photos = build_dataset("photos", transforms[figure_model], n_images, data_root, seed)
images = torch.stack([s.image for s in photos]).to(device)
with torch.no_grad():
    top1 = entry.model(images).argmax(1)
cams = grad_cam(entry.model, entry.layer, images, top1).cpu()
guided = guided_backprop(entry.model, images, top1).cpu()
guided_cams = guided_grad_cam(entry.model, entry.layer, images, top1).cpu()
fig, axes = viz.figure_grid(len(photos), 4, cell=2.2)
for row, sample in enumerate(photos):
    picture = entry.transform.to_display(sample.image)
    axes[row, 0].imshow(picture)
    for box, label in zip(sample.boxes.tolist(), sample.box_labels.tolist()):
        viz.draw_box(axes[row, 0], box, "lime", entry.class_names[label])
    axes[row, 0].set_title(sample.image_id, fontsize=9)
    viz.show_overlay(axes[row, 1], picture, cams[row], f"Grad-CAM: {entry.class_names[top1[row]]}")
    viz.show_guided(axes[row, 2], guided[row], "Guided Backprop")
    viz.show_guided(axes[row, 3], guided_cams[row], "Guided Grad-CAM")
fig.tight_layout()

# %% [markdown]
# ## Class-discriminative maps on one image holding two objects
#
# Grad-CAM's maps depend on the class: on a composite image with two objects of different classes,
# each class's map should light up its own object (paper Fig. 1).

# %% tags=["hide-input"]
composite = data[figure_model, "composite"] if "composite" in datasets else build_dataset(
    "composite", transforms[figure_model], n_images, data_root, seed)
sample = next(s for s in (composite[i] for i in range(len(composite))) if len(set(s.box_labels.tolist())) >= 2)
classes = sorted(set(sample.box_labels.tolist()))[:2]
maps = grad_cam(entry.model, entry.layer, sample.image[None].to(device), torch.tensor([classes])).cpu()[0]
picture = entry.transform.to_display(sample.image)
fig, axes = viz.figure_grid(1, 3, cell=3.0)
axes[0, 0].imshow(picture)
axes[0, 0].set_title(sample.image_id, fontsize=9)
for column, (label, heat) in enumerate(zip(classes, maps), start=1):
    viz.show_overlay(axes[0, column], picture, heat, f"Grad-CAM for '{entry.class_names[label]}'")
    for box in sample.boxes_of(label).tolist():
        viz.draw_box(axes[0, column], box, "lime")
fig.tight_layout()

# %% [markdown]
# ## Boxes against the ground truth
#
# Green: ground truth. The top-1 Grad-CAM box at 15 % is cyan when it localises one of the image's
# classes by the CLS-LOC rule and red when it does not.

# %% tags=["hide-input"]
at = rows[(rows["model"] == figure_model) & (rows["method"] == "gradcam") & np.isclose(rows["threshold"], threshold)]
shown = at[at["dataset"] == ("composite" if "composite" in datasets else datasets[0])].head(8)
lookup = {composite[i].image_id: composite[i] for i in range(min(len(composite), 64))}
fig, axes = viz.figure_grid(2, 4, cell=2.6)
for ax, (_, row) in zip(axes.flat, shown.iterrows()):
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

# %% [markdown]
# ## How much does the 15 % threshold matter?
#
# The paper fixes the threshold at 15 % of the map's maximum (CAM used 20 %). Error against the
# threshold over the whole grid, for every run, on the test splits and on the calibration split;
# dotted: 15 %, dashed: the threshold each run picks on the calibration split.

# %% tags=["hide-input"]
curves = pd.concat([rows.assign(split="test"), calibration_rows.assign(split="calibration")], ignore_index=True)
curve = (curves.groupby(["split", "dataset", "model", "method", "threshold"])[["loc_gt_known", "loc_top1"]].mean()
         .rsub(1).mul(100).reset_index()
         .melt(id_vars=["split", "dataset", "model", "method", "threshold"], var_name="criterion",
               value_name="error (%)")
         .dropna())
curve["criterion"] = curve["criterion"].map({"loc_gt_known": "GT-known", "loc_top1": "loc top-1"})
curve["run"] = curve["model"] + " / " + curve["method"].map(HEATMAP_METHODS)
curve["panel"] = curve["dataset"].str.replace("-calibration", "") + " (" + curve["split"] + ")"
palette = dict(zip(curve["run"].unique(), sns.color_palette(n_colors=curve["run"].nunique())))
grid = sns.relplot(data=curve, x="threshold", y="error (%)", hue="run", style="criterion", col="panel",
                   kind="line", palette=palette, height=3.0, aspect=1.1)
grid.set_titles("{col_name}")
for ax in grid.axes.flat:
    ax.axvline(threshold, color="grey", linestyle=":")
    for (model, method), value in picked.items():
        ax.axvline(value, color=palette[f"{model} / {HEATMAP_METHODS[method]}"], linestyle="--", linewidth=0.8)

# %% [markdown]
# ## Discussion
#
# **What the default run shows.** Each statement below is checked on the run in this notebook by the
# claims cell that follows it (a FAIL there means the run you are reading contradicts the text).
# Comparisons are paired on the same images: McNemar's exact test on the hit / miss outcomes and,
# because the composites share their source objects, the cluster-bootstrap interval of the error
# difference, resampling source objects. A comparison is claimed only when both exclude "no
# difference".
#
# 1. *Grad-CAM localises better than Backprop at the paper's 15 %*, as in the paper's Table 1
#    (VGG-16: 56.51 vs 61.12 top-1 localisation error): on the composites, EfficientNet-Lite0's top-1
#    localisation error is 89.1 % with Grad-CAM and 99.4 % with Backprop (18 images localised by
#    Grad-CAM only, 2 by Backprop only, p = 0.0004). The interval of the difference over source
#    objects, [-26.7, -0.3] points, only just excludes 0: the 160 composites rest on eight objects.
# 2. *Lite2's maps localise better than Lite0's*: GT-known error 48.1 vs 77.5 % at 15 % (48 images
#    localised by Lite2 only, 1 by Lite0 only; difference -29.4 points, interval [-43.9, -16.6]).
#    GT-known uses the map of the true class, so this compares the maps, not the classifiers.
# 3. *15 % is not the best threshold for these maps, decided on held-out images.* On the calibration
#    composites (seed 1000) the GT-known error is lowest at 0.52 for Lite0's Grad-CAM, 0.30 for
#    Lite2's and 0.04 for Backprop; on the test composites each of these thresholds lowers the
#    GT-known error against 15 %: Lite0 77.5 -> 45.0 %, Lite2 48.1 -> 36.9 %, Backprop
#    98.1 -> 56.2 % (each p < 0.001, each interval below 0). Grad-CAM's error falls as the threshold
#    rises above 15 % and Backprop's as it falls below it: a threshold is a property of a model's
#    maps, not of the method, and comparing methods at one fixed threshold favours whichever method
#    it suits. The Grad-CAM layer is the rectified head output `_swish` = ReLU6(BN(`_conv_head`(x))),
#    a 7 x 7 map for Lite0 (224 px input) and 9 x 9 for Lite2 (260 px); the paper chose 15 % for
#    VGG-16's 14 x 14 relu5_3 maps. Lite0's best threshold lies above 0.5, where the grid of an
#    earlier version of this chapter stopped.
# 4. *The threshold-free view.* MaxBoxAcc V1, the best threshold on the test images themselves,
#    gives box accuracies of 55.0 % (Lite0), 64.4 % (Lite2) and 43.8 % (Backprop); the thresholds
#    picked on the calibration split deliver 55.0, 63.1 and 43.8 % on the same images, so little is
#    lost by choosing on held-out data. MaxBoxAccV2 (the mean over IoU 0.3 / 0.5 / 0.7, best of all
#    segments) is 47.5, 55.8 and 47.7 %: below V1 for Grad-CAM, above it for Backprop. These are
#    descriptions; no difference between them is tested.
# 5. *The geometry moves the 15 % numbers.* With torchvision's centre crop, the same composites give
#    Lite0's Grad-CAM a GT-known error of 63.1 % instead of 77.5 % (claim 4) and a best-threshold
#    accuracy of 63.1 instead of 55.0 %. The crop removes the composites' empty margin, so the
#    objects fill more of the input; which property of the maps turns that into lower errors is not
#    tested here. The paper's numbers are whole-image numbers, and so are the tables above.
# 6. *The CLS-LOC scores of a multi-class image are class averages* (the devkit's `e./n`): one guess
#    can be right for one class only, so a composite with two classes scores at most 1/2 at top-1,
#    and the composites' top-1 errors are high by construction. By construction too, a guess of a
#    wrong class is a localisation error, so the CLS-LOC localisation errors cannot fall below the
#    classification errors: a property of the metric, not a finding, and not checked as one.
# 7. The photographs are seven images: one image moves an error by 14.3 points, and their Wilson
#    intervals are 35 to 60 points wide. They are there to be looked at; no comparison is made on
#    them. The whole-image resize distorts these non-square photographs, which EfficientNet-Lite was
#    not trained on: their classification errors are not the models' published ones.
#
# **Beside the published numbers.** The paper's and KTH's rows are VGG-16 / AlexNet / GoogLeNet on the
# 50 000 ILSVRC2012 validation images; run the `full` profile to fill the same rows with ours
# (whole-image resize, CLS-LOC scoring without the blacklisted images, thresholds picked on the
# first 5 000 validation images and errors reported on the 45 000 after them). Where KTH differs
# from the paper, three protocol differences are known from their code: boxes were scaled by 256/W
# and 256/H independently while the image was resized keeping its aspect ratio and then
# centre-cropped, which misplaces every box of a non-square image (most of ILSVRC); the box was the
# bounding rectangle of the contour whose *rectangle* is largest, not of the largest segment; and
# torchvision's weights differ from the paper's Caffe models (VGG-16 top-1 error 28.4 vs 30.4). Our
# reader maps boxes through the same geometry as the pixels (tested against hand-computed cases),
# `heatmap_to_box` keeps the largest segment by pixel count (tested against scikit-image), and the
# scoring follows `eval_clsloc.m` (tested against a port of its loop). An earlier version of this
# chapter departed from the paper too: it centre-cropped, accepted the DET devkit's lower IoU for
# small boxes, counted a multi-class image as right when any of its classes was, took Grad-CAM at
# EfficientNet-Lite's un-rectified `_conv_head` (about 37 % of its activations negative), and
# reported the best threshold on the images it scored.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
claims = Claims()
compared = [name for name in datasets if name != "photos"]  # seven photographs cannot rank anything


def paired_test(name: str, a: pd.DataFrame, b: pd.DataFrame, column: str, groups: list[str] | None):
    """McNemar exact on the images both have (hit = score > 0) and, for composites, the cluster
    bootstrap of the per-image error difference a - b (resampling source objects)."""
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    test = mcnemar(a[column] > 0, b[column] > 0)
    if groups is None:
        return test, None
    group = dict(zip(per_image_ids[name], groups))
    difference = paired_difference(1 - a[column].to_numpy(float), 1 - b[column].to_numpy(float),
                                   [group[i] for i in common])
    return test, difference


def shown_lower(test, difference) -> bool:
    """a's error is lower than b's: McNemar p < 0.05 in a's favour and, where clustered, the interval
    of the error difference below 0."""
    return test.difference > 0 and test.p_value < 0.05 and (difference is None or difference.high < 0)


def evidence(test, difference) -> str:
    return str(test) + ("" if difference is None else f"; error difference {difference} (cluster bootstrap by source)")


per_image_ids = {name: per_image[(name, *runs[0])].index for name in datasets}
for name in compared:
    groups = clusters[(name, *runs[0])]
    for model in entries:
        if (name, model, "gradcam") in per_image and (name, model, "backprop") in per_image:
            test, difference = paired_test(name, per_image[name, model, "gradcam"], per_image[name, model, "backprop"],
                                           "loc_top1", groups)
            claims.check(f"1. {name}, {model}: Grad-CAM's loc top-1 error at 15 % is lower than Backprop's",
                         shown_lower(test, difference), evidence(test, difference))
    if {(name, "efficientnet_lite0", "gradcam"), (name, "efficientnet_lite2", "gradcam")} <= per_image.keys():
        test, difference = paired_test(name, per_image[name, "efficientnet_lite2", "gradcam"],
                                       per_image[name, "efficientnet_lite0", "gradcam"], "loc_gt_known", groups)
        claims.check(f"2. {name}: Lite2's Grad-CAM GT-known error at 15 % is lower than Lite0's",
                     shown_lower(test, difference), evidence(test, difference))
    for model, method in runs:
        run = run_rows(rows, name, model, method)
        base = at_threshold(run, threshold)
        tuned = at_threshold(run, picked[model, method])
        test, difference = paired_test(name, tuned, base, "loc_gt_known", groups)
        side = "above" if method == "gradcam" else "below"
        on_side = picked[model, method] > threshold if side == "above" else picked[model, method] < threshold
        claims.check(f"3. {model} / {HEATMAP_METHODS[method]}: the threshold picked on the calibration split "
                     f"({picked[model, method]:.2f}) is {side} 15 % and lowers the {name} test GT-known error",
                     on_side and shown_lower(test, difference), evidence(test, difference))
if check_name != "photos":
    ours, theirs = at15[geometry], at15[other].loc[at15[geometry].index]
    test = mcnemar(theirs["loc_gt_known"], ours["loc_gt_known"])
    groups = geometry_groups[geometry]
    difference = None if groups is None else paired_difference(
        1 - theirs["loc_gt_known"].to_numpy(float), 1 - ours["loc_gt_known"].to_numpy(float), groups)
    claims.check(f"4. {check_name}, {figure_model} / Grad-CAM: the GT-known error at 15 % is lower with the {other} "
                 f"geometry than with the {geometry} geometry", shown_lower(test, difference), evidence(test, difference))
claims

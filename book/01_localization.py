# %% [markdown]
# # 1. Weakly supervised localisation
#
# Grad-CAM is never trained to draw boxes, yet its maps can localise objects
# {cite}`selvaraju2017gradcam`. The paper's protocol (Sec. 4.1), which this chapter implements in
# `gradcam_lib.metrics.localization` (run by `gradcam_lib.experiments.localization`):
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
#
# Two offline benchmarks carry the default profile. The **composites** paste object crops of the
# embedded photographs on textures: pictures of real objects for ImageNet classifiers, but 160 images
# that rest on eight objects. **Cluttered MNIST** (`gradcam_lib.datasets.cluttered_mnist`, after Mnih
# et al. 2014 and Jaderberg et al. 2015) puts one or two real handwritten digits and four 8 x 8
# fragments of other digits on a 60 x 60 canvas; its 500 test canvases use each of 1 000 held-out
# digits at most once, so they are independent, and their boxes are exact (the digits' ink). Its
# classifier, a small CNN with a global-average-pooled head (`gradcam_lib.models.cluttered_mnist`,
# Grad-CAM layer: its last rectified conv map, 15 x 15), was trained by
# `data_prep/train_cluttered_mnist.py` on canvases of 3 500 other digits with image-level labels only;
# its thresholds are picked on canvases of a third, held-out pool of 500 digits (`val`). The claims
# that need statistical power rest on it.

# %% tags=["parameters", "remove-cell"]
# Parameters (papermill overrides these; see book/params/<profile>/01_localization.yaml)
profile = "default"
runs = [["efficientnet_lite0", "gradcam"], ["efficientnet_lite0", "backprop"], ["efficientnet_lite2", "gradcam"],
        ["efficientnet_lite0", "hires_cam"], ["efficientnet_lite0", "xgrad_cam"], ["efficientnet_lite0", "layer_cam"], ["efficientnet_lite0", "eigen_cam"]]
datasets = ["composite", "photos"]  # test data sets of the ImageNet runs: "composite" | "photos" | "ilsvrc"
n_images = 160  # per test data set (photos: all of them)
mnist_runs = [["cluttered_mnist_cnn", "gradcam"], ["cluttered_mnist_cnn", "backprop"],
              ["cluttered_mnist_cnn", "hires_cam"], ["cluttered_mnist_cnn", "xgrad_cam"], ["cluttered_mnist_cnn", "layer_cam"], ["cluttered_mnist_cnn", "eigen_cam"], ["cluttered_mnist_cnn", "score_cam"]]  # the cluttered-MNIST benchmark
mnist_images = 500  # its test canvases; its calibration split: as many canvases of the held-out val digits
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
decode = "pil"  # ILSVRC test images: "pil", or "device" (JPEGs decoded where the batch goes: nvJPEG on CUDA)
figure_model = "efficientnet_lite0"
results_dir = "../results"

# %% tags=["injected-parameters", "hide-input"]
# Parameters
profile = "default"
runs = [["efficientnet_lite0", "gradcam"], ["efficientnet_lite0", "backprop"], ["efficientnet_lite2", "gradcam"], ["efficientnet_lite0", "hires_cam"], ["efficientnet_lite0", "xgrad_cam"], ["efficientnet_lite0", "layer_cam"], ["efficientnet_lite0", "eigen_cam"]]
datasets = ["composite", "photos"]
mnist_runs = [["cluttered_mnist_cnn", "gradcam"], ["cluttered_mnist_cnn", "backprop"], ["cluttered_mnist_cnn", "hires_cam"], ["cluttered_mnist_cnn", "xgrad_cam"], ["cluttered_mnist_cnn", "layer_cam"], ["cluttered_mnist_cnn", "eigen_cam"], ["cluttered_mnist_cnn", "score_cam"]]
mnist_images = 500
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


# %% tags=["hide-input", "setup"]
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gradcam_lib.datasets import build_dataset
from gradcam_lib.experiments.localization import LocalizationExperiment, LocalizationSettings
from gradcam_lib.methods import grad_cam, guided_backprop, guided_grad_cam
from gradcam_lib.methods import labels as method_labels
from gradcam_lib.metrics.max_box_acc import max_box_acc_ci
from gradcam_lib.metrics.threshold_sweep import THRESHOLD_GRID
from gradcam_lib.models import load_model
from gradcam_lib.report import localization as report
from gradcam_lib.report import Table, published, side_by_side
from gradcam_lib.report.claims import Claims
from gradcam_lib.report.summary import save_headline, this_run
from gradcam_lib.stats import mcnemar, paired_difference

thresholds = sorted(set(THRESHOLD_GRID) | {threshold})  # 0.00, 0.01, ..., 0.99 (Choe et al. 2020)
out_dir = Path(results_dir) / profile / "01_localization"
# each test data set with its runs: the ImageNet models on `datasets`, the cluttered-MNIST CNN on its canvases
benchmarks = {name: runs for name in datasets} | ({"cluttered_mnist": mnist_runs} if mnist_runs else {})
all_runs = list(dict.fromkeys((model, method) for bench in benchmarks.values() for model, method in bench))
mnist_models = list(dict.fromkeys(model for model, _ in mnist_runs))
NAMES = method_labels(dict.fromkeys(method for _, method in all_runs))
entries = {name: load_model(name, device) for name in dict.fromkeys([model for model, _ in all_runs] + [figure_model])}
transforms = {name: entry.transform.with_geometry(geometry) for name, entry in entries.items()}
test_start = calibration_images if calibration == "ilsvrc" else 0  # ILSVRC: the test part follows the held-out part
data = {(model, name): build_dataset(name, transforms[model], n_images, data_root, seed, blacklist=blacklist,
                                     start=test_start if name == "ilsvrc" else 0, decode=decode)
        for model in entries if model not in mnist_models for name in datasets}
data |= {(model, "cluttered_mnist"): build_dataset("cluttered_mnist", transforms[model], mnist_images, seed=seed)
         for model in mnist_models}
# where each model's thresholds are picked: (name, held-out split)
calibration_data = {model: (f"{calibration}-calibration",
                            build_dataset(calibration, transforms[model], calibration_images, data_root,
                                          seed + calibration_seed_offset, blacklist=blacklist))
                    for model in entries if model not in mnist_models}
calibration_data |= {model: ("cluttered_mnist-calibration",
                             build_dataset("cluttered_mnist", transforms[model], mnist_images, seed=seed, split="val"))
                     for model in mnist_models}
splits = [(f"{name} (test)", data[figure_model, name]) for name in datasets]
splits.append((f"{calibration} (calibration)", calibration_data[figure_model][1]))
if mnist_models:
    splits += [("cluttered_mnist (test)", data[mnist_models[0], "cluttered_mnist"]),
               ("cluttered_mnist (calibration, val digits)", calibration_data[mnist_models[0]][1])]
for label, dataset in splits:
    if hasattr(dataset, "skipped"):
        print(f"{label}: {len(dataset.skipped)} of {len(dataset) + len(dataset.skipped)} val images are on the devkit's "
              f"blacklist and skipped ({len(dataset)} left)")
if not any(hasattr(dataset, "skipped") for _, dataset in splits):
    print("no ILSVRC images in this profile: the devkit's blacklist does not apply (0 images skipped)")
this_run(profile, models=list(entries), data=list(benchmarks),
         images=", ".join(f"{len(dataset)} {label}" for label, dataset in splits),
         methods=list(dict.fromkeys(method for _, method in all_runs)), geometry=geometry)

# %% [markdown]
# ## Run
#
# One pass per (model, method, data set), every map boxed at all 100 thresholds at once (one
# union-find sweep per map). Per-image rows go to `results/<profile>/01_localization/` after every
# batch, so an interrupted run resumes where it stopped. The calibration split maps only the
# ground-truth class.

# %% tags=["remove-stderr", "hide-input", "run"]
settings = {method: LocalizationSettings(method, tuple(thresholds), 5, tiny_box_rule, channels_last, bf16)
            for _, method in all_runs}
rows = pd.concat(
    [
        LocalizationExperiment(entries[model], data[model, name], name, settings[method])
        .run(out_dir, batch_size, device, num_workers)
        for name, bench in benchmarks.items()
        for model, method in bench
    ],
    ignore_index=True,
)
# the calibration split only needs the ground-truth class's map (top_k=0)
calibration_rows = pd.concat(
    [
        LocalizationExperiment(entries[model], calibration_data[model][1], calibration_data[model][0],
                               dataclasses.replace(settings[method], top_k=0))
        .run(out_dir, batch_size, device, num_workers)
        for model, method in all_runs
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
# within one run. Cluttered MNIST's intervals are Wilson intervals over its 500 independent canvases.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
per_image, clusters = report.per_image_runs(rows, benchmarks, data, threshold)
errors = report.errors_with_intervals(per_image, clusters)
Table(errors)

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
# classification errors depend on the model only (every method boxes the same top-5 guesses)
for name, bench in benchmarks.items():
    counts = per_image[(name, *bench[0])]["classes"].value_counts().sort_index()
    print(f"{name}: images by number of ground-truth classes: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
classification = report.classification_table(per_image, clusters, all_runs)
Table(classification)

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
Table(published.localization_errors(), group="source")  # ILSVRC2012 val, 15 % threshold, errors in % (no intervals published)

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
picked = {(model, method): report.pick_threshold(calibration_rows[(calibration_rows["model"] == model)
                                                                  & (calibration_rows["method"] == method)])
          for model, method in all_runs}
box_accuracy = report.box_accuracy_table(rows, per_image, clusters, picked)
Table(box_accuracy)

# %% [markdown]
# ## Grad-CAM's successors on the same protocol
#
# HiResCAM {cite}`draelos2020hirescam`, XGrad-CAM {cite}`fu2020xgradcam`, LayerCAM
# {cite}`jiang2021layercam` and Eigen-CAM {cite}`muhammad2020eigencam` from the method registry, on
# the same images, boxed by the same rule at the same 15 %; Score-CAM {cite}`wang2020scorecam` on
# cluttered MNIST only: it takes one forward pass per channel of the layer, 64 for the GAP CNN but
# 1 280 for EfficientNet-Lite0, about 420 000 forward passes for this chapter's 327 composites and
# photographs (the full profile runs it on VGG-16). Each row is a method against the same model's
# Grad-CAM on the same images: its GT-known error, Grad-CAM's, the discordant images (only the method
# right / only Grad-CAM right), McNemar's exact p and, on the composites, the cluster-bootstrap
# interval of the error difference. Behind a global average pool and one linear layer (both networks
# here) HiResCAM and XGrad-CAM *are* Grad-CAM up to a positive factor per map, so their boxes must be
# Grad-CAM's (claim 7).

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
Table(report.versus_table(per_image, clusters, benchmarks, NAMES).round({"McNemar p": 4}))

# %% [markdown]
# What the rows show. HiResCAM and XGrad-CAM box every image exactly as Grad-CAM does (claim 7). At
# the paper's fixed 15 %, LayerCAM and Score-CAM almost never localise a digit on cluttered MNIST
# (GT-known error 97.8 % and 97.6 %): their maps weight every channel by a positive amount, so 15 % of
# the maximum keeps most of the canvas; on the composites LayerCAM is worse than Grad-CAM too
# (+8.1 points [2.1, 14.8]). A fixed threshold is not a property of a protocol but of a method's
# dynamic range: at the thresholds picked on the calibration split (LayerCAM 0.52, Score-CAM 0.50
# against Grad-CAM's 0.39) both box *more* canvases than Grad-CAM (claim 8), and their MaxBoxAcc V1
# (84.0 each) is above Grad-CAM's 78.0. Eigen-CAM, which maps no class, has a lower GT-known error
# than Grad-CAM at 15 % on the composites (60.0 % against 77.5 %; 30 vs 2 discordant images), but at
# the calibrated thresholds its box accuracy on cluttered MNIST is lower (66.6 % [62.4, 70.6] against
# 78.0 % [74.2, 81.4]), and on the composites the two intervals overlap.

# %% [markdown]
# ## The geometry: whole-image resize against the centre crop
#
# The same test images in the other geometry, for the figure model's Grad-CAM (ground-truth class
# only): GT-known error at 15 % and the best threshold on these images (MaxBoxAcc V1). The paper's
# whole-image resize keeps every box whole but distorts non-square images; torchvision's resize-256 /
# crop-224 keeps the aspect ratio, cuts the borders -- on the composites, their empty 1/16 margin, so
# that the objects fill a larger share of the input -- and can cut ground-truth boxes (on ILSVRC).

# %% tags=["remove-stderr", "hide-input", "run"]
check_name = datasets[0]
other = "crop" if geometry == "resize" else "resize"
geometry_rows = {}
for shape in (geometry, other):
    if shape == geometry and (figure_model, "gradcam") in map(tuple, benchmarks.get(check_name, [])):
        run = report.run_rows(rows, check_name, figure_model, "gradcam")
        geometry_rows[shape] = run[run["image_id"].isin(run["image_id"].unique()[:geometry_check_images])]
        continue
    dataset = build_dataset(check_name, entries[figure_model].transform.with_geometry(shape), geometry_check_images,
                            data_root, seed, blacklist=blacklist, start=test_start if check_name == "ilsvrc" else 0)
    known_only = LocalizationSettings("gradcam", tuple(thresholds), 0, tiny_box_rule, channels_last, bf16)
    geometry_rows[shape] = LocalizationExperiment(entries[figure_model], dataset, check_name, known_only).run(
        out_dir / f"geometry-{shape}", batch_size, device, num_workers)

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
at15 = {shape: report.at_threshold(frame, threshold) for shape, frame in geometry_rows.items()}
geometry_groups = {shape: report.clusters_of(data[figure_model, check_name], frame.index, frame["gt_class"])
                   for shape, frame in at15.items()}
geometry_table = report.geometry_table(geometry_rows, at15, geometry_groups)
Table(geometry_table)

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
fig = report.methods_figure(entry, photos, top1, cams, guided, guided_cams)

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
fig = report.class_maps_figure(entry, sample, classes, maps)

# %% [markdown]
# ## Boxes against the ground truth
#
# Green: ground truth. The top-1 Grad-CAM box at 15 % is cyan when it localises one of the image's
# classes by the CLS-LOC rule and red when it does not.

# %% tags=["hide-input"]
at = rows[(rows["model"] == figure_model) & (rows["method"] == "gradcam") & np.isclose(rows["threshold"], threshold)]
shown = at[at["dataset"] == ("composite" if "composite" in datasets else datasets[0])].head(8)
lookup = {composite[i].image_id: composite[i] for i in range(min(len(composite), 64))}
fig = report.boxes_figure(entry, shown, lookup)

# %% [markdown]
# The same on cluttered MNIST: the canvas's digits boxed in green, the top-1 Grad-CAM box at 15 %
# cyan or red.

# %% tags=["hide-input"]
if mnist_models and ("cluttered_mnist", mnist_models[0], "gradcam") in per_image:
    mnist_data = data[mnist_models[0], "cluttered_mnist"]
    lookup = {mnist_data[i].image_id: mnist_data[i] for i in range(8)}
    at = per_image["cluttered_mnist", mnist_models[0], "gradcam"]
    fig = report.boxes_figure(entries[mnist_models[0]], at.loc[list(lookup)].reset_index(), lookup)

# %% [markdown]
# ## How much does the 15 % threshold matter?
#
# The paper fixes the threshold at 15 % of the map's maximum (CAM used 20 %). Error against the
# threshold over the whole grid, for every run, on the test splits and on the calibration split;
# dotted: 15 %, dashed: the threshold each run picks on the calibration split.

# %% tags=["hide-input"]
grid = report.threshold_curves_figure(rows, calibration_rows, threshold, picked)

# %% tags=["remove-cell"]
paper_errors = published.localization_errors().rename(columns={"loc_top1": "loc top-1", "loc_top5": "loc top-5"})
paper_errors["data set"] = "ILSVRC2012 val"
headline_columns = ["data set", "model", "method", "loc top-1", "loc top-5"]
headline = side_by_side({
    "this run": errors[[*headline_columns, "GT-known"]],
    "paper": paper_errors[paper_errors["source"] == "paper Table 1"][headline_columns],
    "KTH": paper_errors[paper_errors["source"] == "KTH"][headline_columns],
})
save_headline(headline.frame, "01_localization", "Localisation error in % at the 15 % threshold (lower is better; "
              "this run: 95 % intervals; published: ILSVRC2012 val)", results_dir, profile);

# %% [markdown]
# ## Discussion
#
# **What the default run shows.** Each statement below is checked on the run in this notebook by the
# claims cell that follows it (a FAIL there means the run you are reading contradicts the text).
# Comparisons are paired on the same images: McNemar's exact test on the hit / miss outcomes and,
# because the composites share their source objects, the cluster-bootstrap interval of the error
# difference, resampling source objects. A comparison is claimed only when both exclude "no
# difference". Cluttered MNIST's canvases are independent, so McNemar's test alone decides there.
#
# 1. *Grad-CAM localises better than Backprop at the paper's 15 %*, as in the paper's Table 1
#    (VGG-16: 56.51 vs 61.12 top-1 localisation error): on the composites, EfficientNet-Lite0's top-1
#    localisation error is 89.1 % with Grad-CAM and 99.4 % with Backprop (18 images localised by
#    Grad-CAM only, 2 by Backprop only, p = 0.0004). The interval of the difference over source
#    objects, [-26.7, -0.3] points, only just excludes 0: the 160 composites rest on eight objects.
#    Cluttered MNIST settles it: 81.6 % against 99.1 % for the GAP CNN (115 canvases localised by
#    Grad-CAM only, 3 by Backprop only, p < 1e-29).
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
#    earlier version of this chapter stopped. The GAP CNN's Grad-CAM agrees with more power: its
#    val canvases pick 0.39, which lowers the test GT-known error from 74.8 to 22.0 % (274 canvases
#    gained, 10 lost, p < 1e-67).
# 4. *The threshold-free view.* MaxBoxAcc V1, the best threshold on the test images themselves,
#    gives box accuracies of 55.0 % (Lite0), 64.4 % (Lite2) and 43.8 % (Backprop); the thresholds
#    picked on the calibration split deliver 55.0, 63.1 and 43.8 % on the same images, so little is
#    lost by choosing on held-out data. MaxBoxAccV2 (the mean over IoU 0.3 / 0.5 / 0.7, best of all
#    segments) is 47.5, 55.8 and 47.7 %: below V1 for Grad-CAM, above it for Backprop. On cluttered
#    MNIST the picked threshold and MaxBoxAcc V1 both give Grad-CAM 78.0 %. These are descriptions;
#    no difference between them is tested.
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
# 8. *No threshold boxes the GAP CNN's gradient maps* (claim 5): on the cluttered-MNIST test canvases
#    Backprop's GT-known box accuracy stays below 5 % at every threshold of the grid (MaxBoxAcc V1
#    2.8 [1.6, 4.4] %), and its val canvases keep 15 % as their best. Why this network's gradient
#    boxes so badly is not tested here; its Grad-CAM, at the 15 x 15 map, boxes 78 % of the canvases.
# 9. *The cluttered-MNIST classifier is right most of the time* (claim 6): its five guesses hold every
#    digit of 99.9 % of the 500 test canvases, and its top-1 error, 23.9 %, is 1.9 points above the
#    22.0 % that the class average (item 6) forces on the 220 two-digit canvases. Its top-5 and
#    GT-known localisation errors are therefore errors of the maps, where the composites' also count
#    EfficientNet's classification errors (cls top-5 error 59.2 % for Lite0).
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
compared = [name for name in benchmarks if name != "photos"]  # seven photographs cannot rank anything
for name in compared:
    bench = benchmarks[name]
    groups = clusters[(name, *bench[0])]
    sources = None if groups is None else dict(zip(per_image[(name, *bench[0])].index, groups))
    for model in dict.fromkeys(model for model, _ in bench):
        if (name, model, "gradcam") in per_image and (name, model, "backprop") in per_image:
            test, difference = report.paired_test(per_image[name, model, "gradcam"], per_image[name, model, "backprop"],
                                                  "loc_top1", sources)
            claims.check(f"1. {name}, {model}: Grad-CAM's loc top-1 error at 15 % is lower than Backprop's",
                         report.shown_lower(test, difference), report.evidence(test, difference))
    if {(name, "efficientnet_lite0", "gradcam"), (name, "efficientnet_lite2", "gradcam")} <= per_image.keys():
        test, difference = report.paired_test(per_image[name, "efficientnet_lite2", "gradcam"],
                                              per_image[name, "efficientnet_lite0", "gradcam"], "loc_gt_known", sources)
        claims.check(f"2. {name}: Lite2's Grad-CAM GT-known error at 15 % is lower than Lite0's",
                     report.shown_lower(test, difference), report.evidence(test, difference))
    for model, method in bench:
        if (name, method) == ("cluttered_mnist", "backprop") or method not in ("gradcam", "backprop"):
            continue  # cluttered MNIST's Backprop keeps 15 % (claim 5); the CAM family: claim 7
        run = report.run_rows(rows, name, model, method)
        base = report.at_threshold(run, threshold)
        tuned = report.at_threshold(run, picked[model, method])
        test, difference = report.paired_test(tuned, base, "loc_gt_known", sources)
        side = "above" if method == "gradcam" else "below"
        on_side = picked[model, method] > threshold if side == "above" else picked[model, method] < threshold
        claims.check(f"3. {model} / {NAMES[method]}: the threshold picked on the calibration split "
                     f"({picked[model, method]:.2f}) is {side} 15 % and lowers the {name} test GT-known error",
                     on_side and report.shown_lower(test, difference), report.evidence(test, difference))
if check_name != "photos":
    ours, theirs = at15[geometry], at15[other].loc[at15[geometry].index]
    test = mcnemar(theirs["loc_gt_known"], ours["loc_gt_known"])
    groups = geometry_groups[geometry]
    difference = None if groups is None else paired_difference(
        1 - theirs["loc_gt_known"].to_numpy(float), 1 - ours["loc_gt_known"].to_numpy(float), groups)
    claims.check(f"4. {check_name}, {figure_model} / Grad-CAM: the GT-known error at 15 % is lower with the {other} "
                 f"geometry than with the {geometry} geometry", report.shown_lower(test, difference),
                 report.evidence(test, difference))
if "cluttered_mnist" in benchmarks:
    for model, method in benchmarks["cluttered_mnist"]:
        if method == "backprop":
            ids, _, v1 = report.iou_curves(report.run_rows(rows, "cluttered_mnist", model, method), "gt_iou")
            best = max_box_acc_ci(v1, (0.5,))
            claims.check(f"5. cluttered_mnist, {model} / Backprop: no threshold of the grid boxes its gradient maps "
                         "(MaxBoxAcc V1's interval below 5 %), and its calibration split keeps 15 %",
                         best[2] < 0.05 and picked[model, method] == threshold,
                         f"MaxBoxAcc V1 {report.accuracy(best)} % over {len(ids)} canvases; picked "
                         f"{picked[model, method]:.2f}")
    frame = per_image[("cluttered_mnist", *benchmarks["cluttered_mnist"][0])]
    floor = 100 * (1 - (1 / frame["classes"]).mean())  # a canvas of n digits scores at most 1/n at top-1
    top1, top5 = 100 * (1 - frame["cls_top1"].mean()), 100 * (1 - frame["cls_top5"].mean())
    claims.check(f"6. cluttered_mnist, {benchmarks['cluttered_mnist'][0][0]}: the top-5 holds every digit of at least "
                 "99 % of the canvases, and the top-1 error is within 3 points of its floor",
                 top5 <= 1 and top1 - floor < 3,
                 f"cls top-5 error {top5:.1f} %, top-1 error {top1:.1f} % against a floor of {floor:.1f} %")
for name, bench in benchmarks.items():
    for model, method in bench:
        if method in ("hires_cam", "xgrad_cam") and (name, model, "gradcam") in per_image:
            same = report.same_outcomes(per_image[name, model, method], per_image[name, model, "gradcam"])
            claims.check(f"7. {name}, {model}: {NAMES[method]} boxes every image as Grad-CAM does (behind a global "
                         "average pool and one linear layer it is Grad-CAM up to a factor)", same.all(),
                         f"{int(same.sum())} of {len(same)} images with the same loc / GT-known outcomes")
if "cluttered_mnist" in benchmarks:
    for model, method in benchmarks["cluttered_mnist"]:
        if method in ("layer_cam", "score_cam") and (model, "gradcam") in picked:
            tuned = report.at_threshold(report.run_rows(rows, "cluttered_mnist", model, method), picked[model, method])
            cam = report.at_threshold(report.run_rows(rows, "cluttered_mnist", model, "gradcam"), picked[model, "gradcam"])
            test, difference = report.paired_test(tuned, cam, "loc_gt_known", None)
            claims.check(f"8. cluttered_mnist: {NAMES[method]} at its calibrated threshold ({picked[model, method]:.2f}) "
                         f"has a lower GT-known error than Grad-CAM at its own ({picked[model, 'gradcam']:.2f})",
                         report.shown_lower(test, difference), report.evidence(test, difference))
claims

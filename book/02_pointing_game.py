# %% [markdown]
# # 2. The pointing game
#
# Does the maximum of a class's map fall on an object of that class? The pointing game
# (Zhang et al., Excitation Backprop {cite}`zhang2016ebp`) asks exactly that, and the Grad-CAM paper
# {cite}`selvaraju2017gradcam` (Sec. 4.3) uses it to show that its maps are class-discriminative. The
# protocol implemented in `gradcam_lib.metrics.pointing` follows TorchRay's benchmark {cite}`fong2019extremal`
# (`torchray.benchmark.pointing_game`, `examples/attribution_benchmark.py`):
#
# 1. for every (image, ground-truth class) pair, compute the class's map and take its **maximum
#    point** (ties: the tied pixel nearest to the tied pixels' centroid -- bilinear upsampling of a
#    coarse Grad-CAM map makes plateaus of equal maxima, and TorchRay's `argmax` would pick their
#    top-left corner; see `max_point`). The input-space maps (gradient, guided backprop) are first
#    smoothed as TorchRay smooths them (`smooth=0.02`: a Gaussian of sigma = 2 % of the map's longer
#    side, 4.5 px at 224 px; `smooth_saliency`); Grad-CAM and Grad-CAM++ are not smoothed;
# 2. a **hit** when the point lies closer than **15 px** (Euclidean, strictly: TorchRay's
#    `(u**2 + v**2) < 15**2`) to one of that class's boxes (inside counts; the KTH project used no
#    tolerance);
# 3. accuracy over all pairs, and TorchRay's **mean over classes** of the per-class accuracy; the
#    **difficult** subset keeps the pairs whose class covers less than a quarter of the image in an
#    image holding another class (the EBP definition that TorchRay's flags encode).
#
# The **centre baseline** points at the image centre $(W/2, H/2)$ (TorchRay's `center`) whatever the
# class. A method has to beat it to show that it locates anything: objects are often near the centre.
#
# **Uncertainty.** The (image, class) pairs are not independent: the composite benchmark builds
# every image from crops of only 8 source objects (from 7 photographs), so two pairs that show the
# same crop are not two independent observations, and on real data the pairs of one image share it. Every interval below is a 95 % percentile **cluster
# bootstrap** that resamples whole source objects (`CompositeDataset.source_of(image_id, label)`;
# on real data sets, whole images), and every comparison between two methods is **paired** on the
# same pairs: the difference of their mean class accuracies under the same resampled clusters, and
# McNemar's exact test on the pairs. Each of the two is optimistic in its own way -- a percentile
# bootstrap over only 8 clusters gives intervals that are too narrow {cite}`cameron2008bootstrap`,
# and McNemar treats the pairs as independent -- so a difference counts as **shown** only when both
# agree: the cluster interval excludes 0 *and* McNemar's p < 0.05, with the same sign. Otherwise the
# table says "no difference shown".
#
# The paper's variant with **rejection** maps the top-5 predicted classes; a guess is rejected when
# its map maximum is below a threshold, and correctly rejecting a class absent from the image
# counts as a hit. The paper and the KTH project each gave one number at one threshold (KTH: 0.5 on
# the raw map maximum). Below we sweep the threshold, and for the headline number we **choose it on
# a held-out calibration split** (the composite of another seed) and score it on the test split
# against accepting or rejecting every guess.

# %% tags=["parameters", "remove-cell"]
# Parameters (papermill overrides these; see book/params/<profile>/02_pointing_game.yaml)
profile = "default"
model = "efficientnet_lite0"
datasets = ["composite"]  # "composite" | "photos" | "ilsvrc" | "voc"
n_images = 32  # per data set
max_objects = 3  # composite: up to this many objects per image
methods = ["gradcam", "gradcam_pp", "guided_backprop", "backprop"]
rejection_methods = ["gradcam", "gradcam_pp"]  # methods also mapped for the top-5 predictions
tolerance = 15  # a hit: distance < tolerance (TorchRay)
smooth = 0.02  # TorchRay's Gaussian smoothing of input-space maps, sigma as a fraction of the longer side
top_k = 5
kth_threshold = 0.5  # KTH's single rejection threshold on the raw map maximum
calibration_seed = 1  # composite: the calibration split is the composite of this seed; else a seeded half
batch_size = 16
device = "cpu"
data_root = None  # ILSVRC2012 val folder (dataset "ilsvrc")
voc_root = None  # VOCdevkit/VOC2007 (dataset "voc")
voc_split = "test"
voc_checkpoint = None  # state_dict of `model` with a 20-class VOC head (dataset "voc")
seed = 0  # composite test split, and every bootstrap's generator
num_workers = 0
results_dir = "../results"

# %% tags=["injected-parameters", "hide-input"]
# Parameters
profile = "default"
model = "efficientnet_lite0"
datasets = ["composite"]
n_images = 32
max_objects = 3
methods = ["gradcam", "gradcam_pp", "guided_backprop", "backprop"]
rejection_methods = ["gradcam", "gradcam_pp"]
tolerance = 15
smooth = 0.02
calibration_seed = 1
top_k = 5
batch_size = 16
device = "cpu"
data_root = None
voc_root = None
voc_checkpoint = None
seed = 0
num_workers = 0


# %% tags=["hide-input"]
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from IPython.display import display

from gradcam_lib.datasets import build_dataset
from gradcam_lib.experiments.pointing import PointingExperiment, PointingSettings
from gradcam_lib.methods import HEATMAP_METHODS, heatmaps
from gradcam_lib.metrics.pointing import SMOOTHED_METHODS, smooth_saliency
from gradcam_lib.models import load_model
from gradcam_lib.models.voc import load_voc_model
from gradcam_lib.report import pointing as report
from gradcam_lib.report import Table, side_by_side
from gradcam_lib.report.claims import Claims
from gradcam_lib.report.published import pointing as published
from gradcam_lib.report.summary import save_headline, this_run
from gradcam_lib.stats import cluster_bootstrap_ci

out_dir = Path(results_dir) / profile / "02_pointing_game"
NAMES = {**HEATMAP_METHODS, "centre": "centre baseline"}
entries = {name: load_voc_model(model, voc_checkpoint, device) if name == "voc" else load_model(model, device)
           for name in datasets}
roots = {"voc": voc_root, "ilsvrc": data_root}
data = {name: build_dataset(name, entries[name].transform, n_images, roots.get(name), seed, max_objects, voc_split)
        for name in datasets}
# the rejection threshold's calibration split: the composite of another seed (other data sets: a
# seeded random half of the images, the other half being the test split)
calibration = {name: build_dataset(name, entries[name].transform, n_images, None, calibration_seed, max_objects)
               for name in datasets if name == "composite"}
this_run(profile, models=[model], data=datasets,
         images=", ".join([f"{len(split)} {name}" for name, split in data.items()]
                          + [f"{len(split)} {name} (calibration)" for name, split in calibration.items()]),
         methods=methods, tolerance=f"{tolerance} px")

# %% [markdown]
# ## Run
#
# One pass per data set: every method maps every ground-truth class of a batch in one call, and the
# methods in `rejection_methods` also map the top-5 predictions; the calibration split is mapped for
# the rejection methods only. Rows go to `results/<profile>/02_pointing_game/` after every batch (an
# interrupted run resumes). Each pair's cluster is its source object (composites) or its image.

# %% tags=["remove-stderr", "hide-input"]
settings = PointingSettings(tuple(methods), tuple(rejection_methods), top_k, tolerance, smooth)
calibration_settings = PointingSettings(tuple(rejection_methods), tuple(rejection_methods), top_k, tolerance, smooth)
rows = pd.concat(
    [PointingExperiment(entries[name], data[name], name, settings).run(out_dir, batch_size, device, num_workers)
     for name in datasets],
    ignore_index=True,
)
calibration_rows = {
    name: PointingExperiment(entries[name], split, f"{name}-calibration", calibration_settings)
    .run(out_dir, batch_size, device, num_workers)
    for name, split in calibration.items()
}
gt = rows[rows["kind"] == "gt"].copy()
units = gt[["dataset", "image_id", "label"]].drop_duplicates()
units["cluster"] = np.concatenate([report.pair_clusters(group["image_id"], group["label"], data[name])
                                   for name, group in units.groupby("dataset", sort=False)])
gt = gt.merge(units, on=["dataset", "image_id", "label"], how="left")


# %% [markdown]
# ## Accuracy beside the centre baseline and TorchRay
#
# Accuracy in %: `acc_classes` is the mean over classes of the per-class accuracy (TorchRay's
# number), with its 95 % cluster-bootstrap interval (`low`, `high`); `difficult` the same on the
# difficult subset; `acc_pairs` the hits over all (image, class) pairs. `clusters` is the number of
# independent units behind the interval (source objects on the composites). TorchRay's rows are
# VGG-16 / ResNet-50 fine-tuned on PASCAL VOC 2007, on its test set (`gradcam_lib.report.published.pointing`
# also holds their COCO 2014 rows, RISE and extremal perturbation); ours, in the default profile, are
# EfficientNet-Lite0 (ImageNet) on the generated composite benchmark, so compare methods *within* a
# block, not across blocks.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
ours = report.accuracy_with_intervals(gt, seed)
assert np.allclose(ours["acc_classes"], report.pointing_accuracy(rows, by=["dataset", "model", "method"])["acc_classes"])
ours["source"] = f"this run ({profile})"
theirs = published.torchray_pointing().rename(columns={"difficult_classes": "difficult"})
theirs = theirs[theirs["dataset"].str.startswith("VOC07") & theirs["method"].isin(["centre", *methods])]
table = report.beside_published(ours, theirs, NAMES)
with pd.option_context("display.width", 250, "display.max_columns", 30):
    display(Table(table.round(1), index=False))

# %% [markdown]
# ## Paired comparisons on the same pairs
#
# Each row compares two methods on the same (image, class) pairs: `A - B` is the difference of their
# mean class accuracies in points, `low`/`high` its 95 % paired cluster-bootstrap interval (both
# methods resampled with the same source objects), `only A`/`only B` the discordant pairs and
# `McNemar p` McNemar's exact test on them; the verdict needs both (see above). The second table
# compares each method's difficult pairs with its other pairs: hit rate over pairs, difficult minus
# the rest, with both groups recomputed on each cluster resample, and Fisher's exact test on the
# 2 x 2 table (difficult / rest x hit / miss) in place of McNemar, the two groups being different
# pairs.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
COMPARISONS = [(m, "centre") for m in methods] + [("gradcam", m) for m in methods if m != "gradcam"]
paired, gaps, comparison_table, gap_table = report.comparison_tables(gt, COMPARISONS, NAMES, seed)
with pd.option_context("display.width", 250, "display.max_columns", 30):
    display(Table(comparison_table.round({"A - B": 1, "low": 1, "high": 1, "McNemar p": 4}), index=False))
    print()
    print(gap_table.round({"difficult": 1, "rest": 1, "difficult - rest": 1, "low": 1, "high": 1,
                           "Fisher p": 4}).to_string(index=False))

# %% [markdown]
# ## Where the methods point
#
# Composite images with several objects; each column maps one ground-truth class. The cross is the
# maximum point, white when it hits (closer than 15 px to the class's green box), red when it misses;
# the yellow dot is the centre baseline's point. Gradient and guided-backprop maps are shown smoothed,
# as they are scored.

# %% tags=["hide-input"]
name = datasets[0]
entry, dataset = entries[name], data[name]
shown = [s for s in (dataset[i] for i in range(len(dataset))) if len(set(s.box_labels.tolist())) >= 2][:3]
pairs = [(s, label) for s in shown for label in sorted(set(s.box_labels.tolist()))][:6]
images = torch.stack([s.image for s, _ in pairs]).to(device)
labels = torch.tensor([label for _, label in pairs], device=device)
maps = {m: heatmaps(m, entry.model, entry.layer, images, labels).detach() for m in methods}
maps = {m: (smooth_saliency(v, smooth) if m in SMOOTHED_METHODS else v).cpu() for m, v in maps.items()}
hits = gt[gt["dataset"] == name].set_index(["image_id", "method", "label"])["hit"]
fig = report.pointing_figure(entry, pairs, maps, NAMES, hits)

# %% [markdown]
# ## Rejection over the top-5 predictions
#
# For each method in `rejection_methods`, every top-5 guess is accepted when its map maximum is at
# least $\tau$. An accepted guess is right when its class is in the image and its point hits; a
# rejected one when its class is absent. *Precision* = right accepted guesses / accepted guesses;
# *recall* = right accepted guesses / guesses whose class is present; the paper's *accuracy* =
# (right accepted + correctly rejected) / all guesses. The curves sweep $\tau$ over every distinct
# map maximum of the test split; raw map scales differ between methods, so the right panel puts
# $\tau$ on the scale of the share of a method's guesses that it rejects. They describe the test
# split, and no threshold is read off them.

# %% tags=["hide-input"]
tests_top, calibration_top = report.rejection_splits(rows, calibration_rows, datasets, calibration_seed)
fig = report.rejection_curves_figure(tests_top, NAMES, kth_threshold)

# %% [markdown]
# The threshold for the headline number is chosen on the calibration split (`calibrate_tau`: the
# lowest interval of $\tau$ that maximises the calibration accuracy, and its midpoint) and then
# applied, unchanged, to the test split. Accuracies on the test split carry a 95 % cluster-bootstrap
# interval over *images* (the 5 guesses of an image are resampled together; a guess about an absent
# class has no source object, so images are the finest unit we can resample -- images that share a
# source crop are still not independent, so these intervals are, if anything, too narrow). The
# second table tests the calibrated rule against its two baselines on the same guesses: the paired
# difference in points with its image-cluster interval, and McNemar's exact test on the guesses; as
# above, a difference is shown only when both agree.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
rejection_table, rejection_tests, outcomes = report.rejection_tables(tests_top, calibration_top, NAMES,
                                                                    kth_threshold, seed)
with pd.option_context("display.width", 250, "display.max_columns", 30):
    display(Table(rejection_table.round({"tau": 4, "rejected %": 1, "accuracy": 1, "low": 1, "high": 1}), index=False))
    print()
    display(Table(rejection_tests.round({"A - B": 1, "low": 1, "high": 1, "McNemar p": 4}), index=False))
    print()
    display(Table(published.paper_pointing(), index=False))

# %% tags=["remove-cell"]
pointing_columns = ["dataset", "model", "method", "acc_classes", "low", "high", "difficult"]
rejection = rejection_table[rejection_table["rule"] == "calibrated tau"].assign(model=model)
published_rejection = published.paper_pointing()
headline = side_by_side({
    "this run": pd.concat([table[table["source"] == ours["source"].iloc[0]][pointing_columns],
                           rejection[["dataset", "model", "method", "tau"]]
                           .assign(rejection_accuracy=rejection["accuracy"])], ignore_index=True),
    "paper": published_rejection[published_rejection["source"].str.startswith("paper")]
    [["dataset", "model", "method", "rejection_accuracy"]],
    "KTH": published_rejection[published_rejection["source"].str.startswith("KTH")]
    [["dataset", "model", "method", "accuracy", "rejection_accuracy"]],
    "TorchRay": table[(table["source"] == "TorchRay") & (table["model"] == "VGG-16")][
        ["dataset", "model", "method", "acc_classes", "difficult"]],
})
save_headline(headline.frame, "02_pointing_game", "Pointing-game accuracy in % (acc_classes: mean over classes, "
              "15 px; rejection_accuracy: top-5 guesses with rejection, this run at the calibrated tau)",
              results_dir, profile);

# %% [markdown]
# ## Discussion
#
# **What the default run shows.** The statements below are checked on the run in this notebook by the
# cell that follows them (a FAIL there means the run you are reading contradicts the text). All
# numbers are EfficientNet-Lite0 on 32 composites (66 pairs of 8 classes, cut from 8 source
# objects), with Grad-CAM taken at the network's last rectified map (`_swish`, the ReLU6 output that
# the classifier head reads). With 8 source objects the intervals are wide (20-40 points): this run
# can show large differences only.
#
# 1. *Grad-CAM, Grad-CAM++ and the gradient point better than the centre baseline; for guided
#    backprop no difference is shown.* The centre baseline scores 44.5 % [30.7, 59.1]; Grad-CAM
#    78.4 % [67.8, 89.0], +33.9 points [22.8, 45.2] over the centre on the same pairs (26 vs 4
#    discordant pairs, McNemar p = 0.0001); Grad-CAM++ +22.1 [6.6, 35.9] (p = 0.007); the gradient
#    +32.2 [20.4, 40.1] (p = 0.0001); guided backprop +20.7 [-0.5, 35.3] (p = 0.20), no difference
#    shown. The composites place up to three objects anywhere on a texture, so the centre is a weaker
#    guess here than on PASCAL VOC (TorchRay: 69.6 %), where photographers centre their subject.
# 2. *Grad-CAM against the other maps.* Against the plain gradient (smoothed as in TorchRay): no
#    difference shown (+1.7 points [-7.6, 13.5]; 14 vs 11 discordant pairs, p = 0.69). TorchRay's
#    VOC rows put Grad-CAM 10.3-18.1 points ahead; a 10.3-point gap lies inside this interval, so the
#    run neither confirms nor contradicts it. Against guided backprop: Grad-CAM higher (+13.1 [0.6, 29.2]; 19 vs 5, p = 0.007).
#    Against Grad-CAM++: no difference shown (the cluster interval +11.8 [2.6, 20.4] excludes 0, but
#    McNemar's p = 0.057 on 11 vs 3 discordant pairs does not reach 0.05). At the rectified layer no
#    Grad-CAM map of a ground-truth class is all zero (0 of 66 pairs), so every Grad-CAM miss is a
#    maximum that lands away from the object, not a map that points nowhere. The full profile
#    (VGG-16, VOC 2007 test, ILSVRC val, thousands of images) is where the comparison with TorchRay
#    means something.
# 3. *Every method, the centre baseline included, hits less often on the difficult pairs than on the
#    others*, as in TorchRay's table: Grad-CAM 72.5 % of the 51 difficult pairs against 100 % of the
#    other 15 (-27.5 points [-40.9, -12.2], Fisher p = 0.03), the centre baseline 33.3 % against
#    86.7 % (-53.3 [-76.3, -34.6]). On the composites the difficult pairs are 51 of the 54 pairs of
#    images with two or more objects; 12 of the other 15 are pairs of single-object images.
# 4. *The paper's accuracy with rejection mostly counts rejected absent classes.* 88.8 % [85.0, 92.5]
#    of the top-5 guesses name a class absent from the image, so rejecting every guess already scores
#    88.8 % and accepting every guess 10.6 % [7.5, 13.8]. The Grad-CAM threshold chosen on the
#    composites of another seed (tau = 0.579 on the raw map maximum) scores 91.9 % [88.1, 95.6] on the
#    test split: above accepting every guess (+81.2 points [75.6, 86.9], p < 1e-30), but against
#    rejecting every guess no difference shown (+3.1 [-1.2, 7.5]; 14 vs 9 discordant guesses,
#    p = 0.40). For Grad-CAM++ no threshold on its map maximum did better than rejecting every guess
#    on the calibration split, so its calibrated rule *is* "reject all" (88.8 %). (The previous
#    version of this chapter reported the best tau found on the very guesses it scored; a maximum over
#    thresholds that include both baselines cannot lose to them, so that number is gone.)
# 5. *A raw threshold does not transfer between methods.* KTH's tau = 0.5 on the raw map maximum
#    rejects 74.4 % of Grad-CAM's test guesses and none of Grad-CAM++'s, whose maxima lie between 8.3
#    and 26.3 on this split: for Grad-CAM++ it is the "accept all" rule (10.6 %). A threshold has to
#    be calibrated per method and model, on held-out data.
#
# **Beside the published numbers.** TorchRay's rows are VGG-16 / ResNet-50 fine-tuned on VOC 2007;
# the paper's 70.58 % is a COCO-fine-tuned GoogLeNet; KTH's 86.42 % / 82.57 % are ImageNet VGG-16 on
# ILSVRC val with no tolerance and tau = 0.5 on the raw map. Run the `full` profile (a VOC 2007
# checkpoint path and the two data sets) for the same rows with our code. This version follows
# TorchRay where the previous one did not: a hit is a distance *below* 15 px (it was <= 15 px), the
# centre baseline points at (W/2, H/2) (it was ((W-1)/2, (H-1)/2)), and gradient and guided-backprop
# maps are smoothed with TorchRay's Gaussian before their maximum is taken (they were not). Protocol
# differences that remain even in the full profile: our images are resized and centre-cropped to
# 224 x 224, while TorchRay resizes the shorter side to 224, keeps the whole image, runs the network
# fully convolutionally and upsamples the map to the original image, where its 15 px are measured
# (about 9 px at our resolution for a 500 x 375 image; ours are 15 px of the model input), and
# objects outside our crop are not played; ties of the maximum go to the middle of a plateau instead
# of its top-left pixel; the mean over classes runs over the classes that have pairs (TorchRay
# divides by all 20 / 80 classes, the same thing on the full data sets).

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
claims = Claims()
for name in datasets:
    for method in ("gradcam", "gradcam_pp", "backprop"):
        if (name, method, "centre") in paired:
            diff, test = paired[name, method, "centre"]
            claims.check(f"1. {name}: {NAMES[method]} points better than the centre baseline",
                         report.decided(diff, test) == "A higher", report.pair_evidence(diff, test))
    if (name, "guided_backprop", "centre") in paired:
        diff, test = paired[name, "guided_backprop", "centre"]
        claims.check(f"1. {name}: Guided Backprop vs the centre baseline: no difference shown",
                     report.decided(diff, test) == "no difference shown", report.pair_evidence(diff, test))
    for other, expected in (("backprop", "no difference shown"), ("guided_backprop", "A higher"),
                            ("gradcam_pp", "no difference shown")):
        if (name, "gradcam", other) in paired:
            diff, test = paired[name, "gradcam", other]
            stated = "Grad-CAM higher" if expected == "A higher" else expected
            claims.check(f"2. {name}: Grad-CAM vs {NAMES[other]}: {stated}", report.decided(diff, test) == expected,
                         report.pair_evidence(diff, test))
    if (name, "gradcam", "backprop") in paired:
        diff, _ = paired[name, "gradcam", "backprop"]
        torchray = published.torchray_pointing().set_index(["dataset", "model", "method"])["acc_classes"]
        smallest = min(torchray["VOC07 test", m, "gradcam"] - torchray["VOC07 test", m, "backprop"]
                       for m in ("VGG-16", "ResNet-50"))
        claims.check(f"2. {name}: TorchRay's smallest VOC gap of Grad-CAM over the gradient ({smallest:.1f} points) "
                     "lies inside this run's interval", diff.low <= smallest <= diff.high, f"{diff} points")
    cam = gt[(gt["dataset"] == name) & (gt["method"] == "gradcam")]
    claims.check(f"2. {name}: no Grad-CAM map of a ground-truth class is all zero", (cam["peak"] == 0).sum() == 0,
                 f"{int((cam['peak'] == 0).sum())} of {len(cam)} pairs")
    for method in ["centre", *methods]:
        if (name, method) in gaps:
            gap, fisher = gaps[name, method]
            claims.check(f"3. {name}: {NAMES[method]} hits less often on the difficult pairs than on the others",
                         report.verdict(gap, fisher, gap.mean, "difficult", "rest") == "rest higher",
                         f"difficult - rest {gap} points; Fisher exact p = {fisher:.3g}")
    if name in tests_top and len(tests_top[name]) and rejection_methods:
        top = tests_top[name][tests_top[name]["method"] == rejection_methods[0]]
        absent, low, high = cluster_bootstrap_ci((~top["present"].astype(bool)).astype(float), top["image_id"], seed=seed)
        claims.check(f"4. {name}: most top-5 guesses name a class absent from the image", low > 0.5,
                     f"{100 * absent:.1f} % [{100 * low:.1f}, {100 * high:.1f}] of {len(top)} guesses (image clusters)")
    by_rule = rejection_table[rejection_table["dataset"] == name].set_index(["method", "rule"])
    if "gradcam" in rejection_methods:  # the comparisons of a real threshold with the two baselines
        diff, test = outcomes[name, "gradcam", "vs accept all"]
        claims.check(f"4. {name}, Grad-CAM: the threshold calibrated on the held-out split beats accepting every guess",
                     report.decided(diff, test) == "A higher", f"{diff} points; {test}")
        diff, test = outcomes[name, "gradcam", "vs reject all"]
        claims.check(f"4. {name}, Grad-CAM: the calibrated threshold vs rejecting every guess: no difference shown",
                     report.decided(diff, test) == "no difference shown", f"{diff} points; {test}")
    if "gradcam_pp" in rejection_methods:
        tau = by_rule.loc[(NAMES["gradcam_pp"], "calibrated tau"), "tau"]
        claims.check(f"4. {name}: for Grad-CAM++ the calibration split's best rule rejects every guess", tau == np.inf,
                     f"calibrated tau = {tau:.4g}")
    if {"gradcam", "gradcam_pp"} <= set(rejection_methods):
        kth = f"KTH tau = {kth_threshold}"
        cam_rejected = by_rule.loc[(NAMES["gradcam"], kth), "rejected %"]
        pp_rejected = by_rule.loc[(NAMES["gradcam_pp"], kth), "rejected %"]
        peaks = tests_top[name][tests_top[name]["method"] == "gradcam_pp"]["peak"]
        claims.check(f"5. {name}: KTH's raw tau = {kth_threshold} rejects most Grad-CAM guesses and no Grad-CAM++ guess",
                     cam_rejected > 50 and pp_rejected == 0,
                     f"rejected: Grad-CAM {cam_rejected:.1f} %, Grad-CAM++ {pp_rejected:.1f} % of the test guesses; "
                     f"Grad-CAM++ maxima {peaks.min():.1f} to {peaks.max():.1f}")
claims

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
#    side, 4.5 px at 224 px, 1.2 px on a 60-px canvas; `smooth_saliency`); Grad-CAM and Grad-CAM++
#    are not smoothed;
# 2. a **hit** when the point lies closer than **15 px** (Euclidean, strictly: TorchRay's
#    `(u**2 + v**2) < 15**2`) to one of that class's boxes (inside counts; the KTH project used no
#    tolerance); on the 60-px cluttered-MNIST canvases the same share of the side, **4 px**
#    (15 x 60 / 224);
# 3. accuracy over all pairs, and TorchRay's **mean over classes** of the per-class accuracy; the
#    **difficult** subset keeps the pairs whose class covers less than a quarter of the image in an
#    image holding another class (the EBP definition that TorchRay's flags encode).
#
# The **centre baseline** points at the image centre $(W/2, H/2)$ (TorchRay's `center`) whatever the
# class. A method has to beat it to show that it locates anything: objects are often near the centre.
#
# **Two default benchmarks.** The *composites* paste crops of real photographs (8 source objects
# from 7 photographs) on textures and are read by EfficientNet-Lite0 (ImageNet): pictures of real
# objects, but few independent ones. *Cluttered MNIST* (`ClutteredMNISTDataset`, after
# {cite}`mnih2014ram`) draws 500 test canvases of 60 x 60 px with one or two digits, exact ink boxes
# and 8 x 8 fragments of other digits as clutter; each test digit appears on at most one canvas, so
# the canvases are independent. Its classifier is a small CNN with a global-average-pooled head
# trained on image-level labels only (no box seen), whose Grad-CAM layer `features.relu4` (15 x 15)
# is the map the head averages (Grad-CAM equals CAM {cite}`zhou2016cam` there). The composites show
# the maps on real objects; cluttered MNIST has the power to compare methods.
#
# **Uncertainty.** The (image, class) pairs are not independent: every composite is built from
# crops of the 8 source objects, so two pairs that show the same crop are not two independent
# observations, and the pairs of one image (one canvas) share it. Every interval below is a 95 %
# percentile **cluster bootstrap** that resamples whole source objects on the composites
# (`CompositeDataset.source_of(image_id, label)`) and whole images elsewhere (500 canvases on
# cluttered MNIST), and every comparison between two methods is **paired** on the same pairs: the
# difference of their mean class accuracies under the same resampled clusters, and McNemar's exact
# test on the pairs. Each of the two is optimistic in its own way -- a percentile bootstrap over
# only 8 clusters gives intervals that are too narrow {cite}`cameron2008bootstrap`, and McNemar
# treats the pairs as independent -- so a difference counts as **shown** only when both agree: the
# cluster interval excludes 0 *and* McNemar's p < 0.05, with the same sign. Otherwise the table
# says "no difference shown".
#
# The paper's variant with **rejection** maps the top-5 predicted classes; a guess is rejected when
# its map maximum is below a threshold, and correctly rejecting a class absent from the image
# counts as a hit. The paper and the KTH project each gave one number at one threshold (KTH: 0.5 on
# the raw map maximum). Below we sweep the threshold, and for the headline number we **choose it on
# a held-out calibration split** (the composites of another seed; 500 canvases of cluttered MNIST's
# `val` split, whose digits are disjoint from the test split's) and score it on the test split
# against accepting or rejecting every guess.

# %% tags=["parameters", "remove-cell"]
# Parameters (papermill overrides these; see book/params/<profile>/02_pointing_game.yaml)
profile = "default"
model = "efficientnet_lite0"
datasets = ["composite", "cluttered_mnist"]  # "composite" | "cluttered_mnist" | "photos" | "ilsvrc" | "voc"
n_images = 32  # per data set (cluttered MNIST: mnist_images)
max_objects = 3  # composite: up to this many objects per image
mnist_model = "cluttered_mnist_cnn"  # the model of data set "cluttered_mnist" (60 x 60 canvases, up to 2 digits)
mnist_images = 500  # cluttered-MNIST test canvases; its calibration split: as many canvases of the val split
mnist_tolerance = 4  # TorchRay's 15 px at 224 px, scaled to the 60-px canvas: 15 * 60 / 224 px
methods = ["gradcam", "gradcam_pp", "guided_backprop", "backprop", "hires_cam", "xgrad_cam", "layer_cam", "eigen_cam"]
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
datasets = ["composite", "cluttered_mnist"]
n_images = 32
max_objects = 3
mnist_model = "cluttered_mnist_cnn"
mnist_images = 500
mnist_tolerance = 4
methods = ["gradcam", "gradcam_pp", "guided_backprop", "backprop", "hires_cam", "xgrad_cam", "layer_cam", "eigen_cam"]
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


# %% tags=["hide-input", "setup"]
import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from IPython.display import display

from gradcam_lib.datasets import build_dataset
from gradcam_lib.experiments.pointing import PointingExperiment, PointingSettings
from gradcam_lib.methods import heatmaps
from gradcam_lib.methods import labels as method_labels
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
NAMES = {**method_labels(dict.fromkeys(methods + rejection_methods)), "centre": "centre baseline"}
MNIST = "cluttered_mnist"


def entry_of(name):
    if name == "voc":
        return load_voc_model(model, voc_checkpoint, device)
    return load_model(mnist_model if name == MNIST else model, device)


def dataset_of(name, split, split_seed):
    """Cluttered MNIST: `mnist_images` canvases of up to 2 digits (those the classifier was trained on)."""
    if name == MNIST:
        return build_dataset(name, entries[name].transform, mnist_images, seed=split_seed, split=split, max_objects=2)
    return build_dataset(name, entries[name].transform, n_images, roots.get(name), split_seed, max_objects, split)


entries = {name: entry_of(name) for name in datasets}
roots = {"voc": voc_root, "ilsvrc": data_root}
tolerances = {name: mnist_tolerance if name == MNIST else tolerance for name in datasets}
data = {name: dataset_of(name, voc_split if name == "voc" else "test", seed) for name in datasets}
# the rejection threshold's calibration split: the composite of another seed; cluttered MNIST's val
# canvases (the same seed: its val and test digit pools are disjoint only within one seed's split);
# other data sets: a seeded random half of the images, the other half being the test split
calibration = {name: dataset_of("composite", "test", calibration_seed) if name == "composite"
               else dataset_of(name, "val", seed) for name in datasets if name in ("composite", MNIST)}
this_run(profile, models=sorted({entries[name].name for name in datasets}), data=datasets,
         images=", ".join([f"{len(split)} {name}" for name, split in data.items()]
                          + [f"{len(split)} {name} (calibration)" for name, split in calibration.items()]),
         methods=methods, tolerance=", ".join(f"{tolerances[name]} px ({name})" for name in datasets))

# %% [markdown]
# ## Run
#
# One pass per data set: every method maps every ground-truth class of a batch in one call, and the
# methods in `rejection_methods` also map the top-5 predictions; the calibration split is mapped for
# the rejection methods only. Rows go to `results/<profile>/02_pointing_game/` after every batch (an
# interrupted run resumes). Each pair's cluster is its source object (composites) or its image
# (cluttered canvases, real images).

# %% tags=["remove-stderr", "hide-input", "run"]
settings = {name: PointingSettings(tuple(methods), tuple(rejection_methods), top_k, tolerances[name], smooth)
            for name in datasets}
calibration_settings = {name: PointingSettings(tuple(rejection_methods), tuple(rejection_methods), top_k,
                                               tolerances[name], smooth) for name in calibration}
rows, calibration_rows = [], {}
for name in datasets:
    rows.append(PointingExperiment(entries[name], data[name], name, settings[name])
                .run(out_dir, batch_size, device, num_workers))
    if name in calibration:
        calibration_rows[name] = (PointingExperiment(entries[name], calibration[name], f"{name}-calibration",
                                                     calibration_settings[name])
                                  .run(out_dir, batch_size, device, num_workers))
rows = pd.concat(rows, ignore_index=True)
gt = rows[rows["kind"] == "gt"].copy()
units = gt[["dataset", "image_id", "label"]].drop_duplicates()
units["cluster"] = pd.concat([pd.Series(report.pair_clusters(group["image_id"], group["label"], data[name]),
                                        index=group.index) for name, group in units.groupby("dataset", sort=False)])
gt = gt.merge(units, on=["dataset", "image_id", "label"], how="left")


# %% [markdown]
# ## Accuracy beside the centre baseline and TorchRay
#
# Accuracy in %: `acc_classes` is the mean over classes of the per-class accuracy (TorchRay's
# number), with its 95 % cluster-bootstrap interval (`low`, `high`); `difficult` the same on the
# difficult subset; `acc_pairs` the hits over all (image, class) pairs. `clusters` is the number of
# independent units behind the interval (source objects on the composites, canvases on cluttered
# MNIST). TorchRay's rows are VGG-16 / ResNet-50 fine-tuned on PASCAL VOC 2007, on its test set
# (`gradcam_lib.report.published.pointing` also holds their COCO 2014 rows, RISE and extremal
# perturbation); ours, in the default profile, are EfficientNet-Lite0 (ImageNet) on the composites
# (15 px) and the GAP CNN on cluttered MNIST (4 px), so compare methods *within* a block, not across
# blocks.

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
# Each row compares two methods on the same (image, class) pairs of one data set: `A - B` is the
# difference of their mean class accuracies in points, `low`/`high` its 95 % paired cluster-bootstrap
# interval (both methods resampled with the same clusters), `only A`/`only B` the discordant pairs and
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
# The first three images with two or more classes of each data set (composites, then cluttered
# canvases); each row maps one ground-truth class. The cross is the maximum point, white when it
# hits (closer than the tolerance -- 15 px on the composites, 4 px on the canvases -- to the
# class's green box), red when it misses; the yellow dot is the centre baseline's point. Gradient
# and guided-backprop maps are shown smoothed, as they are scored.

# %% tags=["hide-input"]
for name in datasets:
    entry, dataset = entries[name], data[name]
    several = (s for s in (dataset[i] for i in range(len(dataset))) if len(set(s.box_labels.tolist())) >= 2)
    shown = list(itertools.islice(several, 3))
    pairs = [(s, label) for s in shown for label in sorted(set(s.box_labels.tolist()))][:6]
    if not pairs:
        continue
    images = torch.stack([s.image for s, _ in pairs]).to(device)
    labels = torch.tensor([label for _, label in pairs], device=device)
    maps = {m: heatmaps(m, entry.model, entry.layer, images, labels).detach() for m in methods}
    maps = {m: (smooth_saliency(v, smooth) if m in SMOOTHED_METHODS else v).cpu() for m, v in maps.items()}
    hits = gt[gt["dataset"] == name].set_index(["image_id", "method", "label"])["hit"]
    fig = report.pointing_figure(entry, pairs, maps, NAMES, hits)
    fig.suptitle(f"{name} ({entry.name})", y=1.01)
    plt.show()

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
# class has no source object, so images are the finest unit we can resample -- composites that share
# a source crop are still not independent, so their intervals are, if anything, too narrow; the
# cluttered canvases are independent). The
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
rejection = rejection_table[rejection_table["rule"] == "calibrated tau"]
rejection = rejection.assign(model=rejection["dataset"].map(lambda name: entries[name].name))
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
              "15 px, cluttered MNIST 4 px on 60-px canvases; rejection_accuracy: top-5 guesses with rejection, "
              "this run at the calibrated tau)",
              results_dir, profile);

# %% [markdown]
# ## Discussion
#
# **What the default run shows.** The statements below are checked on the run in this notebook by the
# cell that follows them (a FAIL there means the run you are reading contradicts the text). Grad-CAM
# is taken at each network's last rectified map (EfficientNet-Lite0: `_swish`, the ReLU6 output that
# the classifier head reads; the GAP CNN: `features.relu4`). *Cluttered MNIST* carries the
# comparisons: 720 (canvas, class) pairs on 500 independent canvases give accuracy intervals 1-7
# points wide. Its classifier is mostly right: its top class is a digit of the canvas on 489 of the
# 500 test canvases, and its top 5 hold every digit class of 499. *The composites* (32 images, 66
# pairs of 8 classes cut from 8 source objects) show the maps on photographs of real objects, but
# their intervals are 17-38 points wide: they can show large differences only.
#
# 1. *Every method points better than the centre baseline on cluttered MNIST.* The centre baseline
#    scores 49.8 % [46.6, 53.1]; Grad-CAM 99.4 % [98.7, 99.9], +49.5 points [46.2, 52.7] over the
#    centre on the same pairs (358 vs 1 discordant pairs, McNemar p < 1e-100); Grad-CAM++ 99.5 %
#    (+49.6 [46.3, 52.9]); guided backprop 95.9 % [94.4, 97.3] (+46.1 [42.5, 49.5]); the gradient
#    77.9 % [74.9, 80.8] (+28.1 [23.5, 32.5]; 280 vs 76). On the composites Grad-CAM (78.4 %
#    [67.8, 89.0] against the centre's 44.5 % [30.7, 59.1]; +33.9 [22.8, 45.2], p = 0.0001),
#    Grad-CAM++ (+22.1 [6.6, 35.9], p = 0.007) and the gradient (+32.2 [20.4, 40.1], p = 0.0001) beat
#    it too; for guided backprop no difference is shown there (+20.7 [-0.5, 35.3], p = 0.20). Both
#    benchmarks place their objects anywhere, so the centre is a weaker guess than on PASCAL VOC
#    (TorchRay: 69.6 %, above both of our centre intervals), where photographers centre their subject.
# 2. *On cluttered MNIST Grad-CAM and Grad-CAM++ are not told apart, and both point better than
#    guided backprop and the gradient.* Grad-CAM vs Grad-CAM++: no difference shown (0 vs 1 discordant
#    pairs of 720); Grad-CAM over guided backprop +3.5 points [2.1, 4.9] (26 vs 2, p < 1e-5); over the
#    smoothed gradient +21.4 [18.5, 24.4] (155 vs 2, p < 1e-40) -- the direction of TorchRay's VOC rows,
#    which put Grad-CAM 10.3-18.1 points ahead of the gradient (with another model, data set and
#    scale). The composites agree where they have the power: Grad-CAM over guided backprop (+13.1
#    [0.6, 29.2]; 19 vs 5, p = 0.007); against the gradient (+1.7 [-7.6, 13.5]; p = 0.69) and
#    against Grad-CAM++ (the cluster interval +11.8 [2.6, 20.4] excludes 0, McNemar's p = 0.057 on
#    11 vs 3 does not reach 0.05) no difference is shown, and TorchRay's 10.3-point gap lies inside
#    the former interval: the composites neither confirm nor contradict it. No Grad-CAM map of a
#    ground-truth class is all zero (0 of 720 pairs, 0 of 66), so every Grad-CAM miss is a maximum
#    that lands away from the object, not a map that points nowhere.
# 3. *The difficult pairs.* On the composites every method, the centre baseline included, hits less
#    often on the difficult pairs than on the others, as in TorchRay's table: Grad-CAM 72.5 % of the
#    51 difficult pairs against 100 % of the other 15 (-27.5 points [-40.9, -12.2], Fisher p = 0.03),
#    the centre baseline 33.3 % against 86.7 % (-53.3 [-76.3, -34.6]). On cluttered MNIST the
#    difficult pairs are exactly the 440 pairs of the 220 canvases that hold two digit classes; there
#    the centre baseline (44.8 % against 57.5 %; -12.7 [-19.6, -5.9], p = 0.001) and guided backprop
#    (-4.3 [-6.7, -1.8], p = 0.006) hit less often on them, while for Grad-CAM (98.9 % against 100 %;
#    the interval -1.1 [-2.2, -0.2] excludes 0, Fisher's p = 0.16 does not), Grad-CAM++ and the
#    gradient no difference is shown.
# 4. *The paper's accuracy with rejection counts rejected absent classes first.* On the composites
#    88.8 % [85.0, 92.5] of the top-5 guesses name a class absent from the image, so rejecting every
#    guess already scores 88.8 % and accepting every guess 10.6 % [7.5, 13.8]; the Grad-CAM threshold
#    chosen on the composites of another seed (tau = 0.579 on the raw map maximum) scores 91.9 %
#    [88.1, 95.6]: above accepting every guess (+81.2 points [75.6, 86.9], p < 1e-30), but against
#    rejecting every guess no difference shown (+3.1 [-1.2, 7.5]; 14 vs 9 discordant guesses,
#    p = 0.40); for Grad-CAM++ the calibration split's best rule *is* "reject all". On cluttered MNIST
#    (10 classes, one or two per canvas) 71.2 % [70.4, 72.1] of the guesses are absent classes, so the
#    baselines score 71.2 % (reject all) and 28.6 % (accept all); with thresholds chosen on the 500
#    val canvases (Grad-CAM tau = 0.338, Grad-CAM++ 29.1) the rule scores 95.2 % [94.2, 96.0]
#    (Grad-CAM) and 94.0 % [93.0, 95.0] (Grad-CAM++) on the test canvases, above rejecting every guess
#    (+23.9 points [22.8, 25.1], 640 vs 42 discordant guesses, p < 1e-100; Grad-CAM++ +22.8 [21.6,
#    24.0]) and above accepting every guess. With a classifier that is mostly right and enough
#    canvases, the map maximum does separate present from absent classes; on the composites this run
#    cannot show it. (A previous version of this chapter reported the best tau found on the very
#    guesses it scored; a maximum over thresholds that include both baselines cannot lose to them.)
# 5. *A raw threshold does not transfer between methods.* KTH's tau = 0.5 on the raw map maximum
#    rejects 74.4 % (composites) and 82.2 % (cluttered MNIST) of Grad-CAM's test guesses and none of
#    Grad-CAM++'s, whose maxima lie between 8.3 and 26.3 (composites) and 8.3 and 61.1 (cluttered
#    MNIST): for Grad-CAM++ it is the "accept all" rule. A threshold has to be calibrated per method
#    and model, on held-out data.
# 6. *Grad-CAM's successors.* HiResCAM and XGrad-CAM point exactly where Grad-CAM points (0 discordant
#    pairs on both benchmarks): behind a global average pool and one linear layer they are Grad-CAM up
#    to a factor. LayerCAM points where Grad-CAM++ points, and neither is told apart from Grad-CAM
#    (composites: 66.6 % [48.5, 86.3]; cluttered MNIST: 99.5 %). Eigen-CAM, the first principal
#    component of the activations, maps no class: on the composites it is no better than the centre
#    (50.5 % [35.5, 64.7], no difference shown), and on cluttered MNIST it points at one of the two
#    digits of a two-digit canvas, 50.2 % [49.0, 51.5] of the difficult pairs against 100 % of the
#    others; Grad-CAM points better than it on both benchmarks (+27.9 [18.4, 37.4] and +29.7
#    [27.4, 31.9] points). Score-CAM is in the full profile only: one forward pass per channel (1 280
#    on EfficientNet-Lite0) for each of the 32 composites and their classes.
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
PAIRED = {  # (A, B) -> the verdict the text states, per data set
    "composite": {("gradcam", "centre"): "A higher", ("gradcam_pp", "centre"): "A higher",
                  ("backprop", "centre"): "A higher", ("guided_backprop", "centre"): "no difference shown",
                  ("gradcam", "backprop"): "no difference shown", ("gradcam", "guided_backprop"): "A higher",
                  ("gradcam", "gradcam_pp"): "no difference shown", ("gradcam", "hires_cam"): "no difference shown",
                  ("gradcam", "xgrad_cam"): "no difference shown", ("gradcam", "layer_cam"): "no difference shown",
                  ("gradcam", "eigen_cam"): "A higher", ("eigen_cam", "centre"): "no difference shown"},
    MNIST: {**{(m, "centre"): "A higher" for m in methods}, ("gradcam", "gradcam_pp"): "no difference shown",
            ("gradcam", "guided_backprop"): "A higher", ("gradcam", "backprop"): "A higher",
            ("gradcam", "hires_cam"): "no difference shown", ("gradcam", "xgrad_cam"): "no difference shown",
            ("gradcam", "layer_cam"): "no difference shown", ("gradcam", "eigen_cam"): "A higher"},
}
DIFFICULT = {"composite": dict.fromkeys(["centre", *methods], "rest higher"),
             MNIST: {"centre": "rest higher", "guided_backprop": "rest higher", "gradcam": "no difference shown",
                     "gradcam_pp": "no difference shown", "backprop": "no difference shown"}}
REJECTION = {"composite": {"vs accept all": "A higher", "vs reject all": "no difference shown"},
             MNIST: {"vs accept all": "A higher", "vs reject all": "A higher"}}
torchray = published.torchray_pointing().set_index(["dataset", "model", "method"])["acc_classes"]
torchray_gaps = [torchray["VOC07 test", m, "gradcam"] - torchray["VOC07 test", m, "backprop"]
                 for m in ("VGG-16", "ResNet-50")]
widths = (ours["high"] - ours["low"]).groupby(ours["dataset"])
stated_widths = {"composite": (17, 38), MNIST: (1, 7)}
for name in [n for n in ("composite", MNIST) if n in datasets]:
    low, high = stated_widths[name]
    claims.check(f"0. {name}: the accuracy intervals are {low}-{high} points wide",
                 low <= round(widths.get_group(name).min()) and round(widths.get_group(name).max()) <= high,
                 f"{widths.get_group(name).min():.1f} to {widths.get_group(name).max():.1f} points")
if MNIST in datasets:
    digits = np.concatenate(data[MNIST].digits)
    claims.check(f"0. {MNIST}: each test digit appears on at most one canvas", len(set(digits)) == len(digits),
                 f"{len(digits)} digits, {len(set(digits))} distinct, on {len(data[MNIST])} canvases")
    top = tests_top[MNIST][tests_top[MNIST]["method"] == rejection_methods[0]]
    classes = gt[(gt["dataset"] == MNIST) & (gt["method"] == "centre")].groupby("image_id").size()
    in_top = top.groupby("image_id")["present"].sum().reindex(classes.index)
    first = top[top["rank"] == 0]["present"]
    claims.check(f"0. {MNIST}: the classifier's top class is a digit of the canvas on 489 of 500 canvases, its "
                 "top 5 hold every digit class of 499", (first.sum(), (in_top == classes).sum()) == (489, 499),
                 f"top 1: {first.sum()} of {len(first)}; top 5: {(in_top == classes).sum()} of {len(classes)}")
    two = classes[classes >= 2].index
    cm = gt[(gt["dataset"] == MNIST) & (gt["method"] == "centre")]
    claims.check(f"3. {MNIST}: the difficult pairs are exactly the pairs of the canvases with two digit classes",
                 set(cm.loc[cm["difficult"], "image_id"]) == set(two) and cm["difficult"].sum() == 2 * len(two),
                 f"{int(cm['difficult'].sum())} difficult pairs; {len(two)} canvases with two classes")
for name in [n for n in ("composite", MNIST) if n in datasets]:
    for (a, b), expected in PAIRED[name].items():
        if (name, a, b) in paired:
            diff, test = paired[name, a, b]
            stated = f"{NAMES[a]} higher" if expected == "A higher" else expected
            claims.check(f"{1 if b == 'centre' else 2}. {name}: {NAMES[a]} vs {NAMES[b]}: {stated}",
                         report.decided(diff, test) == expected, report.pair_evidence(diff, test))
    centre = ours[(ours["dataset"] == name) & (ours["method"] == "centre")]
    claims.check(f"1. {name}: the centre baseline's interval lies below TorchRay's VOC centre baseline (69.6 %)",
                 (centre["high"] < torchray["VOC07 test", "VGG-16", "centre"]).all(),
                 f"{centre['acc_classes'].iloc[0]:.1f} % [{centre['low'].iloc[0]:.1f}, {centre['high'].iloc[0]:.1f}]")
    if (name, "gradcam", "backprop") in paired:
        diff, _ = paired[name, "gradcam", "backprop"]
        if name == "composite":
            claims.check(f"2. {name}: TorchRay's smallest VOC gap of Grad-CAM over the gradient "
                         f"({min(torchray_gaps):.1f} points) lies inside this run's interval",
                         diff.low <= min(torchray_gaps) <= diff.high, f"{diff} points")
        else:
            claims.check(f"2. {name}: Grad-CAM's lead over the gradient has the sign of TorchRay's VOC gaps "
                         f"({min(torchray_gaps):.1f} to {max(torchray_gaps):.1f} points)",
                         diff.low > 0 and min(torchray_gaps) > 0, f"{diff} points")
    eigen = ours[(ours["dataset"] == name) & (ours["method"] == "eigen_cam")]
    if name == MNIST and len(eigen):
        low, high = eigen["difficult_low"].iloc[0], eigen["difficult_high"].iloc[0]
        claims.check(f"6. {name}: Eigen-CAM, which maps no class, points at one digit of a two-digit canvas: 50 % lies "
                     "in the interval of its accuracy on the difficult pairs", low <= 50 <= high,
                     f"{eigen['difficult'].iloc[0]:.1f} % [{low:.1f}, {high:.1f}]")
    cam = gt[(gt["dataset"] == name) & (gt["method"] == "gradcam")]
    claims.check(f"2. {name}: no Grad-CAM map of a ground-truth class is all zero", (cam["peak"] == 0).sum() == 0,
                 f"{int((cam['peak'] == 0).sum())} of {len(cam)} pairs")
    for method, expected in DIFFICULT[name].items():
        if (name, method) in gaps:
            gap, fisher = gaps[name, method]
            stated = "hits less often on the difficult pairs" if expected == "rest higher" else \
                "difficult pairs vs the others: no difference shown"
            claims.check(f"3. {name}: {NAMES[method]} {stated}",
                         report.verdict(gap, fisher, gap.mean, "difficult", "rest") == expected,
                         f"difficult - rest {gap} points; Fisher exact p = {fisher:.3g}")
    if name in tests_top and len(tests_top[name]) and rejection_methods:
        top = tests_top[name][tests_top[name]["method"] == rejection_methods[0]]
        absent, low, high = cluster_bootstrap_ci((~top["present"].astype(bool)).astype(float), top["image_id"], seed=seed)
        claims.check(f"4. {name}: most top-5 guesses name a class absent from the image", low > 0.5,
                     f"{100 * absent:.1f} % [{100 * low:.1f}, {100 * high:.1f}] of {len(top)} guesses (image clusters)")
    by_rule = rejection_table[rejection_table["dataset"] == name].set_index(["method", "rule"])
    for method in [m for m in ("gradcam", "gradcam_pp") if m in rejection_methods]:
        if name == "composite" and method == "gradcam_pp":
            tau = by_rule.loc[(NAMES[method], "calibrated tau"), "tau"]
            claims.check(f"4. {name}: for Grad-CAM++ the calibration split's best rule rejects every guess",
                         tau == np.inf, f"calibrated tau = {tau:.4g}")
            continue
        for versus, expected in REJECTION[name].items():
            diff, test = outcomes[name, method, versus]
            stated = "the calibrated threshold higher" if expected == "A higher" else expected
            claims.check(f"4. {name}, {NAMES[method]}: the threshold calibrated on the held-out split {versus}: "
                         f"{stated}", report.decided(diff, test) == expected, f"{diff} points; {test}")
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

"""Pointing game: hit rule against a Euclidean distance transform, tie rule, tolerance edge,
TorchRay's smoothing against scipy and a brute-force loop, difficult pairs, accuracy aggregation,
the rejection curve and its calibration against hand counts and sklearn, and the cluster bootstrap
against a brute-force resampling loop and the shared ``cluster_bootstrap_ci``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import precision_recall_curve
from torch import nn
from toy_models import ChannelMeans

from gradcam_lib.datasets import ImageTransform, Sample
from gradcam_lib.datasets.composite import CompositeDataset
from gradcam_lib.datasets.voc import VOCSample
from gradcam_lib.experiments.pointing import PointingExperiment, PointingSettings
from gradcam_lib.metrics.pointing import (
    box_distances,
    centre_point,
    class_accuracy_ci,
    cluster_group_means,
    is_difficult,
    max_point,
    paired_class_accuracy_difference,
    pointing_classes,
    pointing_hit,
    smooth_saliency,
    subset_difference,
    within_tolerance,
)
from gradcam_lib.models import ModelEntry
from gradcam_lib.report.pointing import (
    calibrate_tau,
    comparison_tables,
    pair_clusters,
    pointing_accuracy,
    rejection_at,
    rejection_curve,
    rejection_outcomes,
)
from gradcam_lib.stats import cluster_bootstrap_ci


def _peak_at(x: int, y: int, shape: tuple[int, int] = (40, 50)) -> torch.Tensor:
    heat = torch.zeros(shape)
    heat[y, x] = 1.0
    return heat


def test_hits_match_a_distance_transform_everywhere():
    """Reference: scipy's exact Euclidean distance transform to the nearest box pixel."""
    boxes = [[10, 5, 19, 14], [30, 25, 44, 29]]
    mask = np.zeros((40, 50), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
    distance = ndimage.distance_transform_edt(~mask)
    for tolerance in (1, 3, 15, 15.5):
        ours = np.array([[pointing_hit(_peak_at(x, y), boxes, tolerance) for x in range(50)] for y in range(40)])
        assert np.array_equal(ours, distance < tolerance)  # TorchRay: (u^2 + v^2) < tolerance^2
    ys, xs = np.nonzero(np.ones((40, 50)))
    ours = np.array([box_distances((x, y), boxes).min().item() for x, y in zip(xs, ys, strict=False)])
    np.testing.assert_allclose(ours, distance[ys, xs])


def test_tolerance_edge_and_inside():
    box = [[20, 20, 20, 20]]
    assert not pointing_hit(_peak_at(35, 20), box, 15)  # exactly 15 px: a miss, as TorchRay's d < 15
    assert not pointing_hit(_peak_at(29, 32), box, 15)  # (9, 12): 15 px
    assert pointing_hit(_peak_at(34, 20), box, 15)  # 14 px
    assert pointing_hit(_peak_at(31, 30), box, 15)  # (11, 10): sqrt(221) = 14.87 px
    assert pointing_hit(_peak_at(20, 20), box, 1) and not pointing_hit(_peak_at(21, 20), box, 1)  # 1: inside
    for bad in (0, -1):
        with pytest.raises(ValueError):
            pointing_hit(_peak_at(1, 1), box, bad)


def test_centre_point_is_torchrays():
    assert centre_point(224, 224) == (112.0, 112.0)  # TorchRay: (w / 2, h / 2)
    assert centre_point(375, 500) == (250.0, 187.5)


def test_ties_constant_maps_and_bad_input():
    heat = torch.zeros(40, 50)
    heat[10:14, 20:26] = 2.0  # a 4 x 6 plateau: centroid (22.5, 11.5); nearest, row-major first: (22, 11)
    assert max_point(heat) == (22, 11)
    heat2 = torch.zeros(40, 50)
    heat2[5, 5] = heat2[30, 40] = 1.0  # two equal peaks: one of them, never the space between
    assert max_point(heat2) in {(5, 5), (40, 30)}
    assert max_point(torch.zeros(8, 8)) is None
    assert not pointing_hit(torch.zeros(40, 50), [[0, 0, 49, 39]])  # an all-zero map points nowhere
    assert not pointing_hit(_peak_at(3, 3), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="NaN"):
        pointing_hit(torch.full((4, 4), float("nan")), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="H, W"):
        max_point(torch.zeros(2, 4, 4))


def test_infinite_maps_and_invalid_boxes_are_refused():
    for value in (float("inf"), float("-inf")):
        heat = _peak_at(5, 5)
        heat[0, 0] = value
        with pytest.raises(ValueError, match="heatmap holds NaN or infinity"):
            pointing_hit(heat, [[0, 0, 9, 9]])
    # (10, 10, 0, 0) is inverted: every coordinate gap is clamped at 0 from one side, so the peak
    # (5, 5) was 14.1 px "from" it, a hit; it is refused, even for a constant map that points nowhere
    for heat in (_peak_at(5, 5), torch.zeros(40, 50)):
        with pytest.raises(ValueError, match=r"boxes holds an inverted box \[10.0, 10.0, 0.0, 0.0\]"):
            pointing_hit(heat, [[0, 0, 3, 3], [10, 10, 0, 0]])
    with pytest.raises(ValueError, match="boxes holds NaN or infinity"):
        box_distances((5, 5), [[0, 0, float("inf"), 3]])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        pointing_hit(_peak_at(5, 5), [[0, 0, 3]])


def test_bilinear_plateau_points_to_its_middle_not_its_corner():
    """A 7x7 map peaking in its corner cell, upsampled x32 bilinearly: the top-left 16x16 pixels tie.
    numpy's argmax would say (0, 0); the rule says the middle of the plateau."""
    coarse = torch.zeros(1, 1, 7, 7)
    coarse[0, 0, 0, 0] = 1.0
    up = nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
    assert int(np.argmax(up.numpy())) == 0
    assert max_point(up) == (7, 7)


def _torchray_imsmooth_loop(image: np.ndarray, sigma: float) -> np.ndarray:
    """Brute force: every output pixel as the double sum of kernel x replicate-padded input."""
    radius = int(np.ceil(4 * sigma))
    kernel = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    kernel /= kernel.sum()
    height, width = image.shape
    out = np.zeros_like(image)
    for y in range(height):
        for x in range(width):
            total = 0.0
            for i, ki in enumerate(kernel):
                yy = min(max(y + i - radius, 0), height - 1)
                for j, kj in enumerate(kernel):
                    total += ki * kj * image[yy, min(max(x + j - radius, 0), width - 1)]
            out[y, x] = total
    return out


def test_smoothing_matches_a_loop_and_scipy():
    rng = np.random.default_rng(3)
    image = rng.random((12, 20))
    sigma = 0.1 * 20  # fraction 0.1 of the longer side: sigma 2, radius ceil(8) = 8
    ours = smooth_saliency(torch.tensor(image)[None, None], 0.1)[0, 0].numpy()
    np.testing.assert_allclose(ours, _torchray_imsmooth_loop(image, sigma), atol=1e-12)
    # scipy's radius int(4 sigma + 0.5) equals ceil(4 sigma) here; mode "nearest" is replicate padding
    np.testing.assert_allclose(ours, ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=4.0), atol=1e-12)
    # 224 x 224 at TorchRay's 0.02: sigma 4.48, radius 18; a constant map stays constant (kernel sums to 1)
    big = torch.full((2, 3, 224, 224), 0.7, dtype=torch.float64)
    torch.testing.assert_close(smooth_saliency(big), big)
    spike = torch.zeros(1, 60, 60, dtype=torch.float64)
    spike[0, 30, 30] = 1.0
    blurred = smooth_saliency(spike, 0.02)  # sigma 1.2, radius 5
    assert max_point(blurred[0]) == (30, 30) and blurred[0, 30, 36] == 0 and blurred[0, 30, 35] > 0
    assert smooth_saliency(spike, 0.0) is spike
    with pytest.raises(ValueError):
        smooth_saliency(spike, -0.1)


def _sample(boxes, labels, side=100, image_id="s") -> Sample:
    return Sample(torch.zeros(3, side, side), tuple(sorted(set(labels))), torch.tensor(boxes), torch.tensor(labels),
                  image_id)


def test_difficult_pairs_follow_the_ebp_definition():
    s = _sample([[0, 0, 39, 39], [50, 50, 99, 99], [0, 60, 9, 69]], [1, 2, 3])
    assert is_difficult(s, 1)  # 1600 px < 2500 and other classes present
    assert not is_difficult(s, 2)  # exactly 2500 px: not less than a quarter
    alone = _sample([[0, 0, 9, 9]], [5])
    assert not is_difficult(alone, 5)  # small but no distractor
    overlapping = _sample([[0, 0, 49, 39], [0, 0, 49, 39], [60, 60, 61, 61]], [4, 4, 7])
    assert is_difficult(overlapping, 4)  # union 2000 px, not the sum 4000


def test_accuracy_per_pair_and_mean_over_classes():
    rows = pd.DataFrame(
        [
            # class 1: 3 hits of 4; class 2: 0 of 1 -> pairs 3/5 = 60 %, classes (75 + 0) / 2 = 37.5 %
            {"method": "m", "kind": "gt", "label": 1, "hit": h, "difficult": d}
            for h, d in [(True, False), (True, True), (True, False), (False, True)]
        ]
        + [{"method": "m", "kind": "gt", "label": 2, "hit": False, "difficult": True}]
        + [{"method": "m", "kind": "topk", "label": 9, "hit": True, "difficult": False}]  # ignored
    )
    table = pointing_accuracy(rows).iloc[0]
    assert table["acc_pairs"] == pytest.approx(60.0)
    assert table["acc_classes"] == pytest.approx(37.5)
    assert table["difficult_pairs"] == pytest.approx(100 / 3)  # 1 of 3
    assert table["difficult_classes"] == pytest.approx(25.0)  # class 1: 1/2, class 2: 0/1
    assert (table["pairs"], table["difficult_n"], table["classes"]) == (5, 3, 2)


def _topk_rows() -> pd.DataFrame:
    peaks = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    present = [True, True, False, True, False, False, True, False]
    hit = [True, False, False, True, False, False, True, False]
    return pd.DataFrame({"method": "m", "kind": "topk", "peak": peaks, "present": present, "hit": hit})


def test_rejection_rule_by_hand():
    rows = _topk_rows()
    at = rejection_at(rows, 0.55)  # accepted: 0.9 0.8 0.7 0.6 -> 2 hits; rejected absent: 0.5 0.4 0.2
    assert at["accuracy"] == pytest.approx(100 * 5 / 8)
    assert at["precision"] == pytest.approx(50.0)
    assert at["recall"] == pytest.approx(50.0)  # 2 of the 4 present guesses
    assert rejection_at(rows, 1.0)["accuracy"] == pytest.approx(50.0)  # reject all: the 4 absent ones
    assert rejection_at(rows, 1.0)["precision"] == 100.0


def test_rejection_outcomes_and_calibration_by_hand():
    rows = _topk_rows()
    right = rejection_outcomes(rows, 0.55)
    # accepted 0.9 (hit) 0.8 (present, miss) 0.7 (absent) 0.6 (hit);
    # rejected 0.5 0.4 (absent) 0.3 (present) 0.2 (absent)
    assert right.tolist() == [True, False, False, True, True, True, False, True]
    assert rejection_outcomes(rows, -np.inf).tolist() == rows["hit"].tolist()  # accept all
    assert rejection_outcomes(rows, np.inf).tolist() == (~rows["present"]).tolist()  # reject all
    # accuracy by the number of accepted (top) guesses a = 0..8: right = hits among the a + absent among the rest
    by_accepted = [4, 5, 5, 4, 5, 4, 3, 4, 3]  # a = 0 (reject all) ... 8 (accept all)
    taus = [np.inf, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, -np.inf]
    assert [rejection_outcomes(rows, t).sum() for t in taus] == by_accepted
    # maximum 5 at a = 1, 2, 4: the lowest tau interval is a = 4, i.e. (0.5, 0.6] -> midpoint 0.55
    assert calibrate_tau(rows) == pytest.approx(0.55)
    absent = rows.assign(present=False, hit=False)
    assert calibrate_tau(absent) == np.inf  # nothing to find: reject all
    found = rows.assign(present=True, hit=True)
    assert calibrate_tau(found) == -np.inf  # everything hits: accept all
    with pytest.raises(ValueError):
        calibrate_tau(rows.iloc[:0])


def test_rejection_curve_precision_matches_sklearn():
    rows = _topk_rows()
    curve = rejection_curve(rows)
    precision, recall, thresholds = precision_recall_curve(rows["hit"], rows["peak"])
    ours = curve.set_index("tau")
    for p, r, t in zip(precision[:-1], recall[:-1], thresholds, strict=False):
        assert ours.loc[t, "precision"] == pytest.approx(100 * p)
        # our recall's denominator is the present guesses (4), sklearn's the hits (3)
        assert ours.loc[t, "recall"] == pytest.approx(100 * r * 3 / 4)
    assert curve["quantile"].iloc[0] == 0 and curve["quantile"].iloc[-1] == 1


def test_rejection_curve_and_calibration_equal_the_rule_at_every_threshold_with_ties():
    # two methods, unsorted rows, tied maxima: the sorted-count curve must equal rejection_at at each tau
    rows = pd.concat([_topk_rows().sample(frac=1.0, random_state=3),
                      _topk_rows().assign(method="n", peak=[0.5, 0.5, 0.2, 0.2, 0.2, 0.9, 0.9, 0.1])])
    curve = rejection_curve(rows)
    for method, group in rows.groupby("method"):
        ours = curve[curve["method"] == method]
        expected = pd.DataFrame([rejection_at(group, tau) for tau in ours["tau"]])
        pd.testing.assert_frame_equal(ours[expected.columns].reset_index(drop=True), expected, check_dtype=False)
    n = curve[curve["method"] == "n"].set_index("tau")
    # method n by hand: peaks 0.9 (absent, hit), 0.5 (hit, present miss), 0.2 (absent, hit, absent), 0.1 (absent)
    assert n.loc[0.5, "accepted"] == pytest.approx(50.0) and n.loc[0.5, "precision"] == pytest.approx(50.0)
    assert n.loc[0.5, "accuracy"] == pytest.approx(100 * 5 / 8)  # 2 accepted hits + 3 rejected absent
    assert n.loc[0.2, "accuracy"] == pytest.approx(100 * 4 / 8) and n.loc[0.2, "quantile"] == pytest.approx(1 / 8)
    # calibration by hand: accepting the top a = 0, 2, 4, 7, 8 guesses is right 4, 4, 5, 4, 3 times of 8:
    # a = 4 is tau in (0.2, 0.5] -> midpoint 0.35
    assert calibrate_tau(rows[rows["method"] == "n"]) == pytest.approx(0.35)
    assert calibrate_tau(rows[rows["method"] == "m"]) == pytest.approx(0.55)  # the shuffled rows of the hand case


def test_comparisons_pair_within_one_data_set_even_when_image_ids_repeat():
    # data set x: A hits every pair, B none; y (the same ids and labels): the reverse -- pairing across
    # data sets would mix them to 0
    base = pd.DataFrame({"image_id": ["i0", "i1", "i2", "i3"], "label": [0, 1, 0, 1],
                         "cluster": ["c0", "c1", "c2", "c3"], "difficult": [True, False, True, False]})
    frames = [base.assign(dataset=name, method=method, hit=hit)
              for name, hits in (("x", (True, False)), ("y", (False, True)))
              for method, hit in zip(("a", "b"), hits, strict=True)]
    paired, gaps, table, gap_table = comparison_tables(pd.concat(frames, ignore_index=True), [("a", "b")],
                                                       {"a": "A", "b": "B"}, seed=0)
    assert paired["x", "a", "b"][0].mean == pytest.approx(100.0)
    assert paired["y", "a", "b"][0].mean == pytest.approx(-100.0)
    assert (paired["x", "a", "b"][1].only_a, paired["x", "a", "b"][1].only_b) == (4, 0)
    assert (paired["y", "a", "b"][1].only_a, paired["y", "a", "b"][1].only_b) == (0, 4)
    assert table["dataset"].tolist() == ["x", "y"]
    assert table["verdict"].tolist() == ["no difference shown"] * 2  # 4 vs 0 discordant: McNemar p = 0.125
    assert gap_table["difficult pairs"].tolist() == [2, 2, 2, 2] and gaps["x", "a"][0].mean == pytest.approx(0.0)


def pointing_batch(entry, images, samples, methods, rejection_methods=(), top_k=5, tolerance=15, smooth=0.02):
    """The rows of one batch of :class:`PointingExperiment` (what a run stores)."""
    settings = PointingSettings(tuple(methods), tuple(rejection_methods), top_k, tolerance, smooth)
    return PointingExperiment(entry, [], "test", settings).batch(images, samples)


def test_pointing_batch_end_to_end_on_a_model_with_known_maps():
    model = ChannelMeans()
    entry = ModelEntry("means", model, model.features, "features", ImageTransform(), tuple("abcdef"))
    image = torch.zeros(6, 60, 60)
    image[1, 5, 50] = 9.0  # class 1 peaks at (50, 5), inside its box
    image[2, 55, 2] = 8.0  # class 2 peaks at (2, 55), 40 px from its box
    image[3, 30, 30] = 7.0  # class 3: predicted, absent
    image[4] = -1.0
    sample = VOCSample(image, (1, 2, 5), torch.tensor([[45, 0, 59, 10], [30, 0, 40, 10], [0, 0, 5, 5]]),
                       torch.tensor([1, 2, 5]), "v", torch.tensor([False, False, True]))
    rows = pd.DataFrame(pointing_batch(entry, image[None], [sample], ["gradcam", "backprop"], ["gradcam"], top_k=3))
    gt = rows[(rows.kind == "gt")].set_index(["method", "label"])["hit"]
    assert gt.to_dict() == {("centre", 1): False, ("centre", 2): False, ("gradcam", 1): True, ("gradcam", 2): False,
                            ("backprop", 1): False, ("backprop", 2): False}
    # class 5 is skipped: all its boxes are PASCAL-difficult. The gradient of a channel mean is
    # constant over the image: a constant map points nowhere, so backprop misses.
    top = rows[rows.kind == "topk"]
    assert top["label"].tolist() == [1, 2, 3] and top["present"].tolist() == [True, True, False]
    assert top["hit"].tolist() == [True, False, False]
    assert top["peak"].tolist() == pytest.approx([9 / 3600, 8 / 3600, 7 / 3600])  # weight = mean gradient = 1 / (H W)
    assert set(top["method"]) == {"gradcam"}


def _brute_cluster_resamples(values, groups, clusters, n_resamples, seed):
    """Reference: concatenate the drawn clusters' rows and take each group's mean with pandas, with
    the same draws (one ``rng.integers`` call of shape (n_resamples, n_clusters), sorted cluster ids)."""
    frame = pd.DataFrame({"v": values, "g": groups, "c": [str(c) for c in clusters]})
    names = np.unique(frame["c"])
    draws = np.random.default_rng(seed).integers(0, len(names), size=(n_resamples, len(names)))
    group_names = np.unique(frame["g"])
    out = np.full((n_resamples, len(group_names)), np.nan)
    for r, drawn in enumerate(draws):
        sample = pd.concat([frame[frame["c"] == names[k]] for k in drawn])
        means = sample.groupby("g")["v"].mean()
        out[r] = [means.get(g, np.nan) for g in group_names]
    return out


def _clustered_pairs():
    rng = np.random.default_rng(7)
    n = 40
    clusters = rng.choice(["a", "b", "c", "d", "e"], size=n)
    labels = rng.choice([1, 2, 3], size=n)
    hits_a = rng.random(n) < 0.7
    hits_b = rng.random(n) < 0.4
    return clusters, labels, hits_a, hits_b


def test_cluster_group_means_match_a_brute_force_resampling():
    clusters, labels, hits_a, _ = _clustered_pairs()
    names, means, draws = cluster_group_means(hits_a, labels, clusters, n_resamples=200, seed=5, chunk=64)
    assert names.tolist() == [1, 2, 3]
    np.testing.assert_allclose(means[:, 0], [hits_a[labels == g].mean() for g in (1, 2, 3)])
    reference = _brute_cluster_resamples(hits_a.astype(float), labels, clusters, 200, 5)
    np.testing.assert_allclose(draws[:, :, 0], reference, equal_nan=True)


def test_pair_accuracy_with_one_group_matches_the_shared_cluster_bootstrap():
    clusters, _, hits_a, _ = _clustered_pairs()
    _, means, draws = cluster_group_means(hits_a, np.zeros(len(hits_a)), clusters, n_resamples=2000, seed=0)
    mean, low, high = cluster_bootstrap_ci(hits_a.astype(float), clusters, n_resamples=2000, seed=0)
    assert means[0, 0] == pytest.approx(mean)
    assert np.quantile(draws[:, 0, 0], [0.025, 0.975]) == pytest.approx([low, high])


def test_class_accuracy_interval_and_paired_difference_by_hand():
    # two clusters, one class each: class 1 = 2 hits of 2 in cluster "x", class 2 = 0 of 2 in "y".
    # Point: (100 + 0) / 2 = 50. A resample holds {x, x}: 100, {y, y}: 0, or {x, y}: 50, with
    # probabilities 1/4, 1/4, 1/2 -> the 95 % percentile interval is [0, 100].
    hits = np.array([1, 1, 0, 0], dtype=bool)
    labels = np.array([1, 1, 2, 2])
    clusters = np.array(["x", "x", "y", "y"])
    mean, low, high = class_accuracy_ci(hits, labels, clusters, n_resamples=4000)
    assert (mean, low, high) == (50.0, 0.0, 100.0)
    _, _, draws = cluster_group_means(hits, labels, clusters, n_resamples=4000)
    share = np.mean(np.isclose(np.nanmean(draws[:, :, 0], axis=1), 0.5))
    assert share == pytest.approx(0.5, abs=0.03)
    # identical methods: the difference is exactly 0 in every resample
    same = paired_class_accuracy_difference(hits, hits, labels, clusters)
    assert (same.mean, same.low, same.high, same.excludes_zero) == (0.0, 0.0, 0.0, False)
    # A hits everything, B only class 1: +50 points in every resample that holds class 2 ...
    b = np.array([1, 1, 0, 0], dtype=bool)
    diff = paired_class_accuracy_difference(np.ones(4, bool), b, labels, clusters, n_resamples=4000)
    assert diff.mean == 50.0 and diff.n == 4
    # ... resamples: {x, x} -> 0, {x, y} -> 50, {y, y} -> 100
    assert (diff.low, diff.high) == (0.0, 100.0) and not diff.excludes_zero


def test_paired_class_difference_matches_brute_force_and_is_paired():
    clusters, labels, hits_a, hits_b = _clustered_pairs()
    diff = paired_class_accuracy_difference(hits_a, hits_b, labels, clusters, n_resamples=120, seed=2)
    frame = pd.DataFrame({"a": hits_a, "b": hits_b, "g": labels})
    point = frame.groupby("g")["a"].mean().mean() - frame.groupby("g")["b"].mean().mean()
    assert diff.mean == pytest.approx(100 * point)
    ra = np.nanmean(_brute_cluster_resamples(hits_a.astype(float), labels, clusters, 120, 2), axis=1)
    rb = np.nanmean(_brute_cluster_resamples(hits_b.astype(float), labels, clusters, 120, 2), axis=1)
    assert [diff.low, diff.high] == pytest.approx(list(100 * np.quantile(ra - rb, [0.025, 0.975])))


def test_subset_difference_by_hand_and_brute_force():
    clusters, _, hits_a, _ = _clustered_pairs()
    subset = np.arange(len(hits_a)) % 3 == 0
    gap = subset_difference(hits_a, subset, clusters, n_resamples=120, seed=4)
    assert gap.mean == pytest.approx(100 * (hits_a[subset].mean() - hits_a[~subset].mean()))
    reference = _brute_cluster_resamples(hits_a.astype(float), subset, clusters, 120, 4)
    expected = 100 * np.nanquantile(reference[:, 1] - reference[:, 0], [0.025, 0.975])
    assert [gap.low, gap.high] == pytest.approx(list(expected))
    with pytest.raises(ValueError):
        subset_difference(hits_a, np.ones(len(hits_a), bool), clusters)


def test_pair_clusters_use_the_composite_source_objects():
    dataset = CompositeDataset(3, ImageTransform(), seed=4, max_objects=3)
    ids, labels, expected = [], [], []
    for index in range(3):
        for label, source in dataset.sources(index).items():
            ids.append(f"composite-4-{index}")
            labels.append(label)
            expected.append(source)
    assert pair_clusters(ids, labels, dataset).tolist() == expected
    assert all("#" in source for source in expected)  # <photo id>#<box index>
    assert pair_clusters(["a", "a", "b"], [1, 2, 1], object()).tolist() == ["a", "a", "b"]  # images otherwise


class _Linear(nn.Module):
    """logit_c = sum(weight[c] * x): the input gradient of class c is weight[c], whatever the input."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", self.features(x), self.weight)


def test_pointing_batch_smooths_the_gradient_as_torchray():
    """Class 1's gradient: a lone spike of 1 at (5, 5), far from its box, and a 9 x 9 plateau of 0.5
    on the box around (45, 45). Raw, the spike is the maximum (a miss); smoothed with sigma 1.2 px
    (0.02 x 60) the spike drops to about 1 / (2 pi 1.2^2) = 0.11 and the plateau's middle stays 0.5."""
    weight = torch.zeros(2, 3, 60, 60)
    weight[1, 0, 5, 5] = 1.0
    weight[1, 0, 41:50, 41:50] = 0.5
    model = _Linear(weight)
    entry = ModelEntry("linear", model, model.features, "features", ImageTransform(), ("a", "b"))
    sample = _sample([[40, 40, 50, 50]], [1], side=60)
    raw = pd.DataFrame(pointing_batch(entry, sample.image[None], [sample], ["backprop"], top_k=2, smooth=0.0))
    smoothed = pd.DataFrame(pointing_batch(entry, sample.image[None], [sample], ["backprop"], top_k=2, smooth=0.02))
    pick = lambda rows: rows[rows["method"] == "backprop"]["hit"].item()  # noqa: E731
    assert not pick(raw) and pick(smoothed)
    # the kernel reaches 1 px past the plateau
    assert smoothed[smoothed["method"] == "backprop"]["peak"].item() == pytest.approx(0.5, abs=1e-3)


def test_the_experiment_run_stores_the_batch_rows_and_resumes(tmp_path):
    """PointingExperiment.run (the old evaluate_pointing): the rows of .batch, labelled with model
    and data set (the methods are a column of the rows); a second run reads them back."""
    model = ChannelMeans()
    entry = ModelEntry("means", model, model.features, "features", ImageTransform(), tuple("abcdef"))
    image = torch.zeros(6, 40, 50)
    image[2, 5:20, 10:31] = 1.0
    image[4, 30:35, 0:5] = 0.5
    data = [Sample(image, (2, 4), torch.tensor([[10, 5, 30, 19], [0, 30, 4, 34]]), torch.tensor([2, 4]), f"{i}")
            for i in range(3)]
    settings = PointingSettings(("gradcam", "backprop"), ("gradcam",), top_k=3)
    experiment = PointingExperiment(entry, data, "toy", settings)
    rows = experiment.run(tmp_path, batch_size=2)
    assert experiment.path(tmp_path).name.startswith("means_pointing_toy_")
    assert set(rows["model"]) == {"means"} and set(rows["dataset"]) == {"toy"}
    assert set(rows["method"]) == {"centre", "gradcam", "backprop"}
    batches = [data[:2], data[2:]]  # rows are stored batch by batch
    expected = pd.DataFrame([row for batch in batches
                             for row in experiment.batch(torch.stack([s.image for s in batch]), batch)])
    pd.testing.assert_frame_equal(rows[expected.columns], expected, check_dtype=False)
    assert experiment.run(tmp_path, batch_size=3).equals(rows)


# --------------------------------------------------------------------------- boundary cases (mutation tests)


def test_the_default_tolerance_is_torchrays_15_pixels():
    """TorchRay's ``PointingGame(tolerance=15)``: 14 px from the box is a hit, 15 px a miss, by default
    and in the experiment's settings."""
    box = [[20, 20, 20, 20]]
    assert pointing_hit(_peak_at(34, 20), box) and not pointing_hit(_peak_at(35, 20), box)
    assert pointing_hit(_peak_at(34, 21), box)  # sqrt(197) = 14.04 px
    assert PointingSettings().tolerance == 15


def test_the_centre_baseline_uses_the_same_strict_rule():
    """The centre point of a 40 x 50 input is (25, 20) (TorchRay: (w / 2, h / 2)); it hits a box at
    distance 14.9 and misses one at exactly 15 px, as a map's maximum would."""
    centre = centre_point(40, 50)
    assert centre == (25.0, 20.0)
    assert within_tolerance(centre, np.array([[40, 20, 45, 30]]), 15) is False  # 15 px right of the centre
    assert within_tolerance(centre, np.array([[25, 35, 30, 39]]), 15) is False  # 15 px below: y and x not swapped
    assert within_tolerance(centre, np.array([[39, 20, 45, 30]]), 15) is True
    assert within_tolerance(centre, np.array([[25, 34, 30, 39]]), 15) is True
    assert within_tolerance(centre, np.array([[39, 20, 45, 30]]), 14) is False
    with pytest.raises(ValueError, match="tolerance"):
        within_tolerance(centre, np.array([[0, 0, 1, 1]]), 0)


def test_a_class_is_left_out_only_when_all_its_boxes_are_difficult():
    """TorchRay's VOC pointing game skips a class only when every one of its boxes is PASCAL-difficult."""
    boxes = torch.tensor([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49], [0, 40, 9, 49]])
    sample = VOCSample(torch.zeros(3, 60, 60), (1, 2, 3), boxes, torch.tensor([1, 1, 2, 3]), "v",
                       difficult=torch.tensor([True, False, True, False]))
    assert pointing_classes(sample) == [1, 3]  # class 1 has one easy box; class 2 has only a difficult one
    plain = Sample(torch.zeros(3, 60, 60), (1, 2, 3), boxes, torch.tensor([3, 1, 2, 3]), "s")
    assert pointing_classes(plain) == [1, 2, 3]  # no flags: nothing is difficult; ascending, once each


# ---- mutation tests: pointing hit guards, smoothing device, difficult unions, cluster bootstrap defaults


def test_a_non_positive_tolerance_is_refused_even_for_a_map_that_points_nowhere():
    """pointing_hit's docstring: ValueError for ``tolerance`` <= 0, before looking at the map (a
    constant map, which points nowhere, must not turn tolerance 0 into a quiet miss)."""
    box = [[2, 2, 5, 5]]
    for heat in (torch.zeros(10, 10), _peak_at(3, 3, (10, 10))):
        with pytest.raises(ValueError, match=r"tolerance must be > 0, got 0"):
            pointing_hit(heat, box, 0)


def test_smoothing_runs_on_the_maps_device():
    """TorchRay's imsmooth builds its kernel where the maps are (``device=x.device``): the output keeps
    the maps' shape and device. meta convolutions do not check their weight's device, so the kernel's
    placement is checked with fake CUDA tensors (FakeTensorMode: shapes and devices, no GPU needed),
    which refuse a CPU kernel for CUDA maps as a real GPU would."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    maps = torch.zeros(2, 3, 20, 30, device="meta")
    out = smooth_saliency(maps, 0.1)
    assert out.device.type == "meta" and out.shape == maps.shape
    with FakeTensorMode():
        maps = torch.zeros(2, 3, 20, 30, device="cuda")
        out = smooth_saliency(maps, 0.1)
        assert out.device.type == "cuda" and out.shape == maps.shape


def test_difficult_uses_the_union_of_all_the_class_boxes():
    """EBP: a pair is difficult when the *union* of the class's boxes covers < 1/4 of the image. Two
    disjoint 40 x 40 boxes of class 1 cover 3200 px of 10000 (not difficult), though each alone is 1600."""
    s = _sample([[0, 0, 39, 39], [60, 60, 99, 99], [45, 0, 49, 4]], [1, 1, 2])
    assert not is_difficult(s, 1)
    assert is_difficult(s, 2)  # 25 px and class 1 present
    three = _sample([[0, 0, 29, 29], [60, 60, 89, 89], [0, 60, 9, 69]], [1, 1, 2])
    assert is_difficult(three, 1)  # 1800 px < 2500


def _reference_group_means(values, groups, clusters, n_resamples, seed):
    """Independent reference of the cluster bootstrap (Davison & Hinkley 1997, Sec. 3.8): every unit
    enters each resample with the multiplicity of its cluster (clusters named by ``str``, sorted, drawn
    with ``default_rng(seed).integers(0, n_clusters, (n_resamples, n_clusters))``); a group without a
    unit in a resample is NaN. Returns ``(n_resamples, groups)``."""
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups)
    names, codes = np.unique([str(c) for c in clusters], return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(n_resamples, len(names)))
    rows = np.repeat(np.arange(n_resamples), len(names))  # each draw counted in its resample's row
    multiplicity = np.bincount(rows * len(names) + draws.ravel(), minlength=draws.size).reshape(draws.shape)
    weights = multiplicity[:, codes]  # (R, n units)
    out = []
    for g in np.unique(groups):
        w = weights[:, groups == g]
        total = w.sum(axis=1)
        out.append(np.divide(w @ values[groups == g], total, out=np.full(n_resamples, np.nan), where=total > 0))
    return np.stack(out, axis=1)


def _continuous_pairs():
    """80 pairs of 3 classes in 30 clusters with scores in [0, 1] (the functions accept float hits):
    the resampled statistics are nearly continuous, so the quantiles of 10 000 and 10 001 resamples,
    or of two seeds, differ."""
    rng = np.random.default_rng(11)
    clusters = rng.permutation(np.arange(80) % 30).astype(str)
    labels = rng.choice([1, 2, 3], size=80)
    return clusters, labels, rng.random(80), rng.random(80)


def test_cluster_group_means_defaults_are_10000_resamples_seeded_0():
    """Docstring defaults: n_resamples=10_000, seed=0, and the default chunking (about 5 M cluster
    weights at a time) works with many clusters (520: chunks of 9615 resamples)."""
    clusters, labels, a, _ = _continuous_pairs()
    _, _, draws = cluster_group_means(a, labels, clusters)
    assert draws.shape == (10_000, 3, 1)
    np.testing.assert_allclose(draws[:, :, 0], _reference_group_means(a, labels, clusters, 10_000, 0), rtol=1e-12)
    rng = np.random.default_rng(2)
    many = rng.permutation(np.arange(600) % 520)  # 520 clusters
    values, groups = rng.random(600), rng.integers(0, 2, size=600)
    _, means, draws = cluster_group_means(values, groups, many)
    assert draws.shape == (10_000, 2, 1)
    np.testing.assert_allclose(means[:, 0], [values[groups == g].mean() for g in (0, 1)])
    np.testing.assert_allclose(draws[:, :, 0], _reference_group_means(values, groups, many, 10_000, 0), rtol=1e-12)


def test_cluster_ids_are_told_apart_by_their_text_as_in_cluster_bootstrap_ci():
    """Clusters are identified by ``str(id)`` as in the shared ``cluster_bootstrap_ci`` (whose draws
    ``_resample_counts`` reproduces): ids 1, 1.0 and True are three clusters ('1', '1.0', 'True'),
    not one numeric value; with 2, four clusters."""
    clusters = [1, 1.0, True, 1, 1.0, True, 2, 2]
    values = np.array([0.1, 0.7, 0.4, 0.2, 0.9, 0.3, 0.5, 0.8])
    _, means, draws = cluster_group_means(values, np.zeros(8), clusters, n_resamples=300, seed=3)
    np.testing.assert_allclose(draws[:, :, 0], _reference_group_means(values, np.zeros(8), clusters, 300, 3))
    mean, low, high = cluster_bootstrap_ci(values, clusters, n_resamples=300, seed=3)
    assert means[0, 0] == pytest.approx(mean)
    assert np.quantile(draws[:, 0, 0], [0.025, 0.975]) == pytest.approx([low, high])


def test_a_group_absent_from_a_resample_is_a_quiet_nan():
    """Docstring: "a group absent from a resample is NaN there" -- without a floating-point warning
    (0 / 0 is intended). Two clusters, one class each: a resample {x, x} lacks class 2."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, draws = cluster_group_means([0.2, 0.6, 0.1, 0.3], [1, 1, 2, 2], ["x", "x", "y", "y"], n_resamples=50)
    reference = _reference_group_means([0.2, 0.6, 0.1, 0.3], [1, 1, 2, 2], ["x", "x", "y", "y"], 50, 0)
    assert np.isnan(draws[:, 1, 0]).any()
    np.testing.assert_allclose(draws[:, :, 0], reference, equal_nan=True)


def test_class_accuracy_ci_defaults_seed_and_scale_against_the_reference():
    """TorchRay's mean class accuracy (in %) with a percentile interval over cluster resamples
    (classes absent from a resample left out); defaults 95 %, 10 000 resamples, seed 0."""
    clusters, labels, a, _ = _continuous_pairs()
    point = 100 * np.mean([a[labels == g].mean() for g in (1, 2, 3)])

    def expected(n_resamples, seed, confidence):
        class_means = np.nanmean(_reference_group_means(a, labels, clusters, n_resamples, seed), axis=1)
        alpha = (1 - confidence) / 2
        return [point, *(100 * np.nanquantile(class_means, [alpha, 1 - alpha]))]

    np.testing.assert_allclose(class_accuracy_ci(a, labels, clusters), expected(10_000, 0, 0.95), rtol=1e-12)
    ours = class_accuracy_ci(a, labels, clusters, confidence=0.8, n_resamples=500, seed=3)
    np.testing.assert_allclose(ours, expected(500, 3, 0.8), rtol=1e-12)


def test_paired_class_accuracy_difference_defaults_against_the_reference():
    """A minus B in points of mean class accuracy, both resampled with the same clusters; defaults
    95 %, 10 000 resamples, seed 0; ``n`` = the pairs."""
    clusters, labels, a, b = _continuous_pairs()
    diff = paired_class_accuracy_difference(a, b, labels, clusters)
    ra = np.nanmean(_reference_group_means(a, labels, clusters, 10_000, 0), axis=1)
    rb = np.nanmean(_reference_group_means(b, labels, clusters, 10_000, 0), axis=1)
    point = np.mean([a[labels == g].mean() - b[labels == g].mean() for g in (1, 2, 3)])
    expected = [100 * point, *(100 * np.nanquantile(ra - rb, [0.025, 0.975]))]
    np.testing.assert_allclose([diff.mean, diff.low, diff.high], expected, rtol=1e-12)
    assert diff.n == len(a)


def test_subset_difference_defaults_n_and_a_truthy_mask():
    """Inside minus outside hit rate (in %), recomputed on each cluster resample; defaults 95 %,
    10 000 resamples, seed 0; ``n`` = all pairs. ``in_subset`` is read as booleans (its dtype): a
    count such as the number of distractor classes (0, 1, 2) means inside when nonzero."""
    clusters, _, a, _ = _continuous_pairs()
    count = np.arange(len(a)) % 3
    inside = count != 0
    reference = _reference_group_means(a, inside, clusters, 10_000, 0)  # columns: False, True
    expected = [100 * (a[inside].mean() - a[~inside].mean()),
                *(100 * np.nanquantile(reference[:, 1] - reference[:, 0], [0.025, 0.975]))]
    gap = subset_difference(a, inside, clusters)
    np.testing.assert_allclose([gap.mean, gap.low, gap.high], expected, rtol=1e-12)
    assert gap.n == len(a) == 80
    counted = subset_difference(a, count, clusters, n_resamples=300, seed=1)
    ref = _reference_group_means(a, inside, clusters, 300, 1)
    np.testing.assert_allclose([counted.low, counted.high], 100 * np.nanquantile(ref[:, 1] - ref[:, 0], [0.025, 0.975]))
    assert counted.mean == pytest.approx(expected[0]) and counted.n == 80


def test_maps_of_any_numpy_dtype_point_at_their_maximum():
    """max_point takes an ``np.ndarray`` of any scale: integer maps (e.g. a saliency stored as a 16-bit
    image, for which torch has no max kernel) point where numpy's argmax does for a unique peak."""
    rng = np.random.default_rng(5)
    base = rng.permutation(40 * 50).reshape(40, 50)  # distinct values: one peak
    for dtype in (np.uint16, np.uint32, np.int64, np.float16, np.float32):
        heat = (base if dtype != np.float16 else base // 4).astype(dtype)  # float16 holds 0..2047 exactly
        heat[33, 7] = heat.max() + 1
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        assert (y, x) == (33, 7) and max_point(heat) == (7, 33)
        assert pointing_hit(heat, [[5, 30, 9, 35]]) and not pointing_hit(heat, [[30, 0, 49, 10]])

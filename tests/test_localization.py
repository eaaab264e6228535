"""Localisation (gradcam_lib.metrics.localization, .threshold_sweep, .max_box_acc, the experiment
and its report functions) against hand-computed cases, scikit-image's labelling, a literal port
of the devkit's eval_clsloc.m loop, and brute-force loops for MaxBoxAcc."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from skimage.measure import label, regionprops
from toy_models import ChannelMeans

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import iou
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.experiments.localization import LocalizationExperiment, LocalizationSettings
from gradcam_lib.metrics.localization import heatmap_to_box, image_outcome, iou_threshold
from gradcam_lib.metrics.max_box_acc import MAX_BOX_ACC_V2_IOUS, max_box_acc, max_box_acc_ci, max_box_acc_from_ious
from gradcam_lib.metrics.threshold_sweep import THRESHOLD_GRID, _sweep_python, threshold_sweep
from gradcam_lib.models import ModelEntry
from gradcam_lib.report.localization import error_interval, error_table, iou_curves, pick_threshold
from gradcam_lib.stats import wilson_ci


def test_box_of_the_largest_segment_by_pixels_not_by_extent():
    heatmap = np.zeros((20, 20))
    heatmap[2:4, 1:15] = 1.0  # 28 pixels, wide box
    heatmap[8:15, 8:14] = 0.5  # 42 pixels, compact
    assert heatmap_to_box(heatmap) == (8, 8, 13, 14)


def test_segments_are_eight_connected_and_threshold_is_inclusive():
    heatmap = np.zeros((10, 10))
    for i in range(5):  # a diagonal line: one segment only under 8-connectivity
        heatmap[i, i] = 1.0
    heatmap[8, 0:3] = 1.0
    assert heatmap_to_box(heatmap) == (0, 0, 4, 4)
    heatmap[0, 9] = 0.15  # exactly 15 % of the max counts
    assert heatmap_to_box(heatmap) == (0, 0, 4, 4)
    heatmap[1:4, 7:10] = 0.15
    assert heatmap_to_box(heatmap) == (7, 0, 9, 3)


def test_all_zero_map_gives_none_and_nan_is_refused():
    assert heatmap_to_box(torch.zeros(7, 7)) is None
    bad = torch.ones(7, 7)
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        heatmap_to_box(bad)
    with pytest.raises(ValueError, match="H, W"):
        heatmap_to_box(torch.ones(1, 7, 7))
    with pytest.raises(ValueError, match="NaN"):
        threshold_sweep(bad)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_maps_are_refused_like_nan(value):
    bad = np.ones((7, 7))
    bad[2, 5] = value
    for run in (heatmap_to_box, threshold_sweep):
        with pytest.raises(ValueError, match="heatmap holds NaN or infinity"):
            run(bad)
        with pytest.raises(ValueError, match="heatmap holds NaN or infinity"):
            run(torch.from_numpy(bad))


def test_agrees_with_scikit_image_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(20):
        heatmap = rng.random((30, 40)) ** 4
        box = heatmap_to_box(heatmap, threshold=0.3)
        regions = regionprops(label(heatmap >= 0.3 * heatmap.max(), connectivity=2))
        sizes = [r.area for r in regions]
        if sizes.count(max(sizes)) > 1:
            continue  # ties: order-dependent by definition
        r0, c0, r1, c1 = regions[int(np.argmax(sizes))].bbox
        assert box == (c0, r0, c1 - 1, r1 - 1)


def test_iou_uses_inclusive_pixels():
    assert iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0
    assert iou((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(25 / 175)
    assert iou((0, 0, 9, 9), (9, 9, 18, 18)) == pytest.approx(1 / 199)
    assert iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0


# --------------------------------------------------------------------------- CLS-LOC rules


def test_clsloc_threshold_is_half_whatever_the_box_size_and_the_det_rule_is_an_option():
    assert iou_threshold((0, 0, 199, 99)) == 0.5
    assert iou_threshold((0, 0, 9, 9)) == 0.5  # eval_clsloc.m: ov < 0.50, no relaxation
    assert iou_threshold((0, 0, 9, 9), tiny_box_rule=True) == pytest.approx(100 / 400)  # DET devkit
    assert iou_threshold((0, 0, 199, 99), tiny_box_rule=True) == 0.5


@pytest.mark.parametrize("box, message", [
    ((11, 0, 0, 9), "inverted box"),  # width -10: the DET rule would divide by (w + 10) = 0
    ((0, 9, 9, 0), "inverted box"),
    ((0, 0, float("nan"), 9), "NaN or infinity"),
    ((0, 0, 9), r"\(N, 4\)"),
    (("a", 0, 9, 9), "numbers"),
])
def test_invalid_boxes_are_refused_where_they_enter(box, message):
    for tiny_box_rule in (False, True):
        with pytest.raises(ValueError, match=message):
            iou_threshold(box, tiny_box_rule)
    with pytest.raises(ValueError, match="box_b"):
        iou((0, 0, 9, 9), box)
    with pytest.raises(ValueError, match="box_a"):
        iou(box, (0, 0, 9, 9))


def test_an_inverted_ground_truth_box_is_refused_not_scored():
    # (20, 20, 0, 0) has a negative width and height: it would be scored as a silent miss
    inverted = Sample(torch.zeros(3, 30, 30), (3,), torch.tensor([[20, 20, 0, 0]]), torch.tensor([3]), "flipped")
    with pytest.raises(ValueError, match="the boxes of class 3 in sample 'flipped' holds an inverted box"):
        image_outcome([3], [(0, 0, 9, 9)], inverted)
    heatmap = np.zeros((30, 30))
    heatmap[0:10, 0:10] = 1.0
    with pytest.raises(ValueError, match="gt_boxes holds an inverted box"):
        threshold_sweep(heatmap, (0.5,), inverted.boxes)
    # a one-pixel box (xmin == xmax, ymin == ymax) is a valid inclusive box
    assert threshold_sweep(heatmap, (0.5,), torch.tensor([[4, 4, 4, 4]])).largest_iou.tolist() == [1 / 100]


def _one_class(box: tuple[int, int, int, int], label: int = 3) -> Sample:
    return Sample(torch.zeros(3, 60, 60), (label,), torch.tensor([box]), torch.tensor([label]), "one")


def test_iou_of_exactly_one_half_is_a_hit_and_just_below_is_not():
    guess = (0, 0, 9, 9)  # 100 pixels
    at_half = _one_class((0, 0, 9, 19))  # 200 pixels containing the guess: IoU = 100 / 200 = 0.5
    below = _one_class((0, 0, 9, 20))  # 210 pixels: IoU = 100 / 210 < 0.5
    assert iou(guess, (0, 0, 9, 19)) == 0.5
    assert image_outcome([3], [guess], at_half)["loc_top1"] == 1.0
    assert image_outcome([3], [guess], below)["loc_top1"] == 0.0
    # the DET rule would accept the second: its box is 10 x 21, needs min(0.5, 210 / (20 * 31)) = 0.339
    assert image_outcome([3], [guess], below, tiny_box_rule=True)["loc_top1"] == 1.0
    # the same boundary through the threshold sweep (the path LocalizationExperiment.batch takes)
    heatmap = np.zeros((60, 60))
    heatmap[0:10, 0:10] = 1.0
    assert threshold_sweep(heatmap, (0.5,), at_half.boxes).largest_hit.tolist() == [True]
    assert threshold_sweep(heatmap, (0.5,), below.boxes).largest_hit.tolist() == [False]
    assert threshold_sweep(heatmap, (0.5,), below.boxes, tiny_box_rule=True).largest_hit.tolist() == [True]


def _two_classes() -> Sample:
    return Sample(
        image=torch.zeros(3, 100, 100),
        labels=(3, 7),
        boxes=torch.tensor([[10, 10, 49, 49], [60, 60, 89, 89]]),
        box_labels=torch.tensor([3, 7]),
        image_id="x",
    )


def test_multi_class_image_scores_the_mean_over_its_classes():
    """eval_clsloc.m: e(i) = sum over the image's n ground-truth classes of [no guess right for
    that class], error = e./n. Hand-computed on an image with classes 3 and 7."""
    sample = _two_classes()
    box3 = (12, 12, 50, 50)  # IoU with class 3's box: 38 * 38 / (40 * 40 + 39 * 39 - 38 * 38) > 0.5
    box7 = (60, 60, 90, 90)  # IoU with class 7's box: 900 / 961
    wrong = (60, 10, 99, 40)
    # top-1 is class 3 with a wrong box; the third guess localises class 7: top-5 right for 7 only
    out = image_outcome([3, 1, 7, 2, 5], [wrong, box3, box7, None, None], sample)
    assert out == {"cls_top1": 0.5, "cls_top5": 1.0, "loc_top1": 0.0, "loc_top5": 0.5}
    # both classes localised within the top 5; top-1 localises class 3 only
    out2 = image_outcome([3, 7, 0, 1, 2], [box3, box7, None, None, None], sample)
    assert out2 == {"cls_top1": 0.5, "cls_top5": 1.0, "loc_top1": 0.5, "loc_top5": 1.0}
    # class 7 with the box of class 3: wrong for 7; class 3 never guessed
    out3 = image_outcome([7, 0, 1, 2, 4], [box3] * 5, sample)
    assert out3 == {"cls_top1": 0.5, "cls_top5": 0.5, "loc_top1": 0.0, "loc_top5": 0.0}
    out4 = image_outcome([0, 1, 2, 4, 5], [box3] * 5, sample)
    assert out4 == {"cls_top1": 0.0, "cls_top5": 0.0, "loc_top1": 0.0, "loc_top5": 0.0}
    single = image_outcome([3, 0, 1, 2, 4], [box3] * 5, _one_class((10, 10, 49, 49)))
    assert single == {"cls_top1": 1.0, "cls_top5": 1.0, "loc_top1": 1.0, "loc_top5": 1.0}
    rows = pd.DataFrame(
        [
            {"image_id": f"i{n}", "threshold": t, "loc_gt_known": n == 0, **o}
            for n, o in enumerate([out, out2, out3, out4])
            for t in (0.15, 0.3)
        ]
    ).assign(dataset="d", model="m", method="gradcam")
    table = error_table(rows, threshold=0.15).iloc[0]
    # errors = 100 * (1 - mean share): cls top-1 (0.5+0.5+0.5+0)/4, loc top-5 (0.5+1+0+0)/4
    expected = {"cls_top1": 62.5, "cls_top5": 37.5, "loc_top1": 87.5, "loc_top5": 62.5, "loc_gt_known": 75.0,
                "images": 4}
    assert table[list(expected)].to_dict() == pytest.approx(expected)


def _eval_clsloc_image(gt_labels, gt, pred_labels, pred_boxes) -> float:
    """A literal port of eval_clsloc.m's loop for one image (gt: [(box, class)]): e(i) / n(i)."""
    e = 0
    for k in gt_labels:  # for k = 1:n  (sum)
        d = []
        for j, guess in enumerate(pred_labels):  # for j = 1:num_guesses  (min)
            d_jk = int(k != guess)
            if d_jk == 0:
                ov_vector = [iou(pred_boxes[j], box) if pred_boxes[j] is not None else 0.0 for box, c in gt if c == k]
                f_j = [int(ov < 0.50) for ov in ov_vector]
            else:
                f_j = [1]
            d.append(min(max(f, d_jk) for f in f_j))  # d(i,j) = min(max([f_j; d_jk]))
        e += min(d)  # min over j
    return e / len(gt_labels)


def test_image_outcome_matches_a_port_of_the_devkit_on_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(200):
        classes = sorted(rng.choice(6, size=int(rng.integers(1, 4)), replace=False).tolist())
        boxes, box_labels = [], []
        for c in classes:
            for _ in range(int(rng.integers(1, 3))):
                x, y = rng.integers(0, 40, 2)
                boxes.append([int(x), int(y), int(x + rng.integers(3, 20)), int(y + rng.integers(3, 20))])
                box_labels.append(c)
        sample = Sample(torch.zeros(3, 64, 64), tuple(classes), torch.tensor(boxes), torch.tensor(box_labels), "r")
        guesses = rng.permutation(6)[:5].tolist()
        guess_boxes = []
        for _ in guesses:
            if rng.random() < 0.1:
                guess_boxes.append(None)
            else:
                x, y = rng.integers(0, 40, 2)
                guess_boxes.append((int(x), int(y), int(x + rng.integers(3, 20)), int(y + rng.integers(3, 20))))
        gt = list(zip([tuple(b) for b in boxes], box_labels, strict=False))
        for k in (1, 5):
            expected = 1 - _eval_clsloc_image(classes, gt, guesses[:k], guess_boxes[:k])
            assert image_outcome(guesses, guess_boxes, sample)[f"loc_top{k}"] == pytest.approx(expected)


# --------------------------------------------------------------------------- threshold sweep


def _random_maps(seed: int) -> list[np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    smooth = [F.interpolate(torch.rand(1, 1, 7, 7, generator=generator), size=(48, 56), mode="bilinear",
                            align_corners=False)[0, 0].numpy() for _ in range(4)]
    noisy = [(torch.rand(40, 30, generator=generator) ** 3).numpy() for _ in range(3)]
    plateaus = [np.round(torch.rand(24, 24, generator=generator).numpy() * 4) / 4 for _ in range(3)]  # ties
    return smooth + noisy + plateaus


def test_sweep_gives_heatmap_to_box_at_every_threshold():
    grid = (*THRESHOLD_GRID, 1.0, 0.15, 0.333)
    for heatmap in _random_maps(0):
        sweep = threshold_sweep(heatmap, grid)
        for index, threshold in enumerate(grid):
            assert sweep.box(index) == heatmap_to_box(heatmap, threshold), (threshold, heatmap.shape)


def test_sweep_matches_one_labelling_per_threshold():
    rng = np.random.default_rng(1)
    for heatmap in _random_maps(1):
        h, w = heatmap.shape
        gt = [[int(x), int(y), int(min(w - 1, x + rng.integers(2, 20))), int(min(h - 1, y + rng.integers(2, 20)))]
              for x, y in zip(rng.integers(0, w - 2, 3), rng.integers(0, h - 2, 3), strict=False)]
        sweep = threshold_sweep(heatmap, THRESHOLD_GRID, gt)
        peak = heatmap.max()
        cuts = np.array([t * peak for t in THRESHOLD_GRID])
        levels = np.searchsorted(cuts, heatmap, side="right")
        reference = _sweep_python(levels, len(THRESHOLD_GRID), np.array(gt), np.full(len(gt), 0.5))
        for ours, theirs in zip((sweep.largest_boxes, sweep.largest_iou, sweep.largest_hit, sweep.best_iou,
                                 sweep.components), reference, strict=False):
            assert np.array_equal(ours, theirs)


def test_sweep_of_an_all_zero_map_has_no_box():
    sweep = threshold_sweep(np.zeros((5, 5)), (0.0, 0.5), [[0, 0, 4, 4]])
    assert sweep.box(0) is None and not sweep.largest_hit.any() and not sweep.best_iou.any()


# --------------------------------------------------------------------------- MaxBoxAcc


def _hand_case() -> tuple[list[np.ndarray], list[list[list[int]]]]:
    """Four 20 x 20 maps (see test_max_box_acc_hand_computed)."""
    nested = np.zeros((20, 20))
    nested[0:12, 0:12] = 0.5
    nested[2:6, 2:6] = 1.0
    square = np.zeros((20, 20))
    square[0:12, 0:12] = 1.0
    two = np.zeros((20, 20))
    two[12:20, 12:20] = 1.0  # 64 pixels: the largest segment
    two[0:4, 0:4] = 1.0  # 16 pixels: the object
    maps = [nested, nested, square, two]
    boxes = [[[0, 0, 11, 11]], [[2, 2, 5, 5]], [[0, 0, 11, 11]], [[0, 0, 3, 3]]]
    return maps, boxes


def test_max_box_acc_hand_computed():
    """Boxes by threshold t (fraction of the max):
    image 1 (nested, gt = outer 12 x 12): t = 0 whole image (IoU 144/400 = 0.36); 0 < t <= 0.5
      outer square (1.0); t > 0.5 inner 4 x 4 (16/144 = 0.11).
    image 2 (nested, gt = inner 4 x 4): t = 0: 16/400; 0 < t <= 0.5: 0.11; t > 0.5: 1.0.
    image 3 (square, gt = it): t = 0: 0.36; t > 0: 1.0.
    image 4 (two squares, gt = the small one): largest segment = the big one (IoU 0) for t > 0,
      whole image (16/400) at t = 0; the small one's own box matches exactly (all components).
    V1 (delta 0.5): share 0 at t = 0, 2/4 for 0 < t <= 0.5 (images 1, 3) and for t > 0.5 (2, 3).
    V2, all components: deltas 0.3 / 0.5 / 0.7 each reach 3/4; the largest-only V2 reaches 2/4.
    A per-image best threshold would give 3/4 (V1): the maximum is over one shared threshold."""
    maps, boxes = _hand_case()
    assert max_box_acc(maps, boxes) == pytest.approx(0.5)
    assert max_box_acc(maps, boxes, iou_thresholds=(0.3,)) == pytest.approx(0.5)  # t = 0 gives 1, 3 only
    assert max_box_acc(maps, boxes, iou_thresholds=MAX_BOX_ACC_V2_IOUS, all_components=True) == pytest.approx(0.75)
    assert max_box_acc(maps, boxes, iou_thresholds=MAX_BOX_ACC_V2_IOUS) == pytest.approx(0.5)
    assert max_box_acc(maps, boxes, thresholds=(0.0,), iou_thresholds=(0.3,)) == pytest.approx(0.5)
    assert max_box_acc(maps, boxes, thresholds=(0.0,)) == 0.0
    assert max_box_acc([maps[3]], [[]]) == 0.0  # no box: a miss
    with pytest.raises(ValueError, match="box lists"):
        max_box_acc(maps, boxes[:2])


def _brute_force_max_box_acc(maps, boxes, deltas, thresholds, all_components):
    accuracies = []
    for delta in deltas:
        best = 0.0
        for threshold in thresholds:
            hits = 0
            for heatmap, gt in zip(maps, boxes, strict=False):
                if not heatmap.max() > 0:
                    continue
                if all_components:
                    regions = regionprops(label(heatmap >= threshold * heatmap.max(), connectivity=2))
                    candidates = [(r.bbox[1], r.bbox[0], r.bbox[3] - 1, r.bbox[2] - 1) for r in regions]
                else:
                    candidates = [heatmap_to_box(heatmap, threshold)]
                hits += any(iou(c, g) >= delta for c in candidates if c is not None for g in gt)
            best = max(best, hits / len(maps))
        accuracies.append(best)
    return float(np.mean(accuracies))


@pytest.mark.parametrize(("deltas", "all_components"),
                         [((0.5,), False), (MAX_BOX_ACC_V2_IOUS, True), ((0.3, 0.7), False)])
def test_max_box_acc_against_a_brute_force_loop(deltas, all_components):
    rng = np.random.default_rng(2)
    maps, boxes = [], []
    for heatmap in _random_maps(2) * 2:
        h, w = heatmap.shape
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        maps.append(heatmap)
        boxes.append([[x, y, int(x + rng.integers(3, w // 2)), int(y + rng.integers(3, h // 2))]])
    grid = tuple(i / 20 for i in range(20))
    expected = _brute_force_max_box_acc(maps, boxes, deltas, grid, all_components)
    assert max_box_acc(maps, boxes, deltas, grid, all_components) == pytest.approx(expected, abs=1e-12)


def test_max_box_acc_interval_is_the_cluster_bootstrap_of_the_maximum():
    rng = np.random.default_rng(4)
    ious = rng.random((30, 12))
    clusters = np.array(list("abcdef") * 5)
    value, low, high = max_box_acc_ci(ious, (0.3, 0.5), clusters, n_resamples=300, seed=7)
    assert value == max_box_acc_from_ious(ious, (0.3, 0.5))
    # reference: the same draws, resampled matrices built by hand
    names = np.unique(clusters)
    draws = np.random.default_rng(7).integers(0, len(names), size=(300, len(names)))
    values = [max_box_acc_from_ious(np.concatenate([ious[clusters == names[d]] for d in draw]), (0.3, 0.5))
              for draw in draws]
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))


def test_iou_curves_and_pick_threshold():
    rows = pd.DataFrame({"image_id": ["a", "a", "b", "b"], "threshold": [0.1, 0.2, 0.1, 0.2],
                         "gt_iou": [0.6, 0.4, 0.2, 0.7], "loc_gt_known": [True, False, False, True]})
    ids, grid, ious = iou_curves(rows)
    assert ids == ["a", "b"] and grid.tolist() == [0.1, 0.2] and ious.tolist() == [[0.6, 0.4], [0.2, 0.7]]
    assert pick_threshold(rows) == 0.1  # a tie (1/2 at both): the smaller threshold
    rows.loc[1, "loc_gt_known"] = True
    assert pick_threshold(rows) == 0.2


# --------------------------------------------------------------------------- intervals


def test_wilson_interval_matches_scipy_on_hits_and_extends_to_shares():
    for hits in ([True] * 7, [True, False] * 3 + [True], [False] * 5 + [True] * 2):
        ours = wilson_ci(hits)
        result = stats.binomtest(int(sum(hits)), len(hits)).proportion_ci(method="wilson")
        assert ours == pytest.approx((np.mean(hits), result.low, result.high))
    # a share of 1/2 on each of 4 images: the same interval as 2 hits in 4 (hand: [0.150, 0.850])
    assert wilson_ci([0.5] * 4) == pytest.approx(wilson_ci([1, 0, 1, 0]))
    assert wilson_ci([0.5] * 4)[1:] == pytest.approx((0.15003, 0.84997), abs=1e-5)
    error, low, high = error_interval([1, 1, 0, 0])
    assert (error, low, high) == pytest.approx((50.0, 15.003, 84.997), abs=1e-3)


# --------------------------------------------------------------------------- end to end


def localize_batch(entry, images, samples, method="gradcam", thresholds=(0.15,), top_k=5, tiny_box_rule=False):
    """The rows of one batch of :class:`LocalizationExperiment` (what a run stores)."""
    settings = LocalizationSettings(method, tuple(thresholds), top_k, tiny_box_rule)
    return LocalizationExperiment(entry, [], "test", settings).batch(images, samples)


def test_localize_batch_end_to_end_on_a_model_with_known_maps():
    model = ChannelMeans()
    entry = ModelEntry("means", model, model.features, "features", ImageTransform(), tuple("abcdef"))
    image = torch.zeros(6, 40, 50)
    image[2, 5:20, 10:31] = 1.0  # class 2: the predicted class, a box at x 10..30, y 5..19
    image[4, 30:35, 0:5] = 0.5  # class 4: second, elsewhere
    image[0] = -1.0  # class 0: all negative, its Grad-CAM is all zero -> no box
    truth = Sample(image, (2,), torch.tensor([[10, 5, 30, 19]]), torch.tensor([2]), "a")
    wrong = Sample(image, (4,), torch.tensor([[10, 5, 30, 19]]), torch.tensor([4]), "b")
    rows = localize_batch(entry, torch.stack([image, image]), [truth, wrong], "gradcam", (0.15, 0.5))
    assert [(r["image_id"], r["threshold"]) for r in rows] == [("a", 0.15), ("a", 0.5), ("b", 0.15), ("b", 0.5)]
    first = rows[0]
    assert (first["top1_class"], first["xmin"], first["ymin"], first["xmax"], first["ymax"]) == (2, 10, 5, 30, 19)
    assert first["cls_top1"] == first["loc_top1"] == 1.0 and first["loc_gt_known"] and first["gt_iou"] == 1.0
    # class 4 is in the top 5 but its map lies elsewhere than the (deliberately wrong) box
    assert rows[2]["cls_top1"] == 0.0 and rows[2]["cls_top5"] == 1.0 and rows[2]["loc_top5"] == 0.0
    assert not rows[2]["loc_gt_known"] and rows[2]["gt_iou"] == 0.0
    known_only = localize_batch(entry, torch.stack([image]), [truth], "gradcam", (0.15,), top_k=0)
    assert set(known_only[0]) == {"image_id", "threshold", "gt_class", "loc_gt_known", "gt_iou", "gt_iou_any",
                                  "classes"}
    assert known_only[0]["loc_gt_known"]


def test_localize_batch_agrees_with_the_per_threshold_reference():
    """Rows of a multi-class batch = image_outcome on heatmap_to_box's boxes, threshold by threshold."""
    model = ChannelMeans()
    entry = ModelEntry("means", model, model.features, "features", ImageTransform(), tuple("abcdef"))
    generator = torch.Generator().manual_seed(5)
    images = F.interpolate(torch.rand(3, 6, 6, 8, generator=generator), size=(36, 48), mode="bilinear") - 0.3
    samples = [
        Sample(images[0], (1, 3), torch.tensor([[0, 0, 20, 20], [10, 5, 40, 30]]), torch.tensor([1, 3]), "p"),
        Sample(images[1], (0, 2, 5), torch.tensor([[5, 5, 30, 30], [0, 0, 47, 35], [2, 3, 12, 9]]),
               torch.tensor([0, 2, 5]), "q"),
        Sample(images[2], (4,), torch.tensor([[20, 10, 47, 35]]), torch.tensor([4]), "r"),
    ]
    grid = (0.0, 0.1, 0.15, 0.3, 0.5, 0.7, 0.9)
    rows = localize_batch(entry, images, samples, "gradcam", grid)
    logits = images.mean(dim=(-2, -1))
    cams = images.clamp(min=0)
    for row in rows:
        index = ["p", "q", "r"].index(row["image_id"])
        sample = samples[index]
        top = logits[index].topk(5).indices.tolist()
        boxes = [heatmap_to_box(cams[index, c], row["threshold"]) for c in top]
        expected = image_outcome(top, boxes, sample)
        assert {k: row[k] for k in expected} == pytest.approx(expected)
        known = heatmap_to_box(cams[index, sample.labels[0]], row["threshold"])
        best = max((iou(known, g) for g in sample.boxes_of(sample.labels[0]).tolist()), default=0.0) if known else 0.0
        assert row["gt_iou"] == pytest.approx(best) and row["loc_gt_known"] == (best >= 0.5)
        assert row["classes"] == len(sample.labels)


def test_the_experiment_run_stores_the_batch_rows_resumes_and_keeps_the_model_state(tmp_path):
    """LocalizationExperiment.run (the old evaluate_localization): the rows of .batch, labelled with
    model, method and data set; a second run reads them back; the model keeps its train flag; the
    channels-last fast path gives the same rows."""
    model = ChannelMeans()
    entry = ModelEntry("means", model, model.features, "features", ImageTransform(), tuple("abcdef"))
    generator = torch.Generator().manual_seed(3)
    images = F.interpolate(torch.rand(4, 6, 6, 8, generator=generator), size=(36, 48), mode="bilinear") - 0.3
    data = [Sample(images[i], (i,), torch.tensor([[5, 5, 30, 30]]), torch.tensor([i]), f"{i:02d}") for i in range(4)]
    settings = LocalizationSettings("gradcam", (0.15, 0.5), top_k=3)
    experiment = LocalizationExperiment(entry, data, "toy", settings)
    model.train()
    rows = experiment.run(tmp_path, batch_size=3)
    assert model.training
    assert set(rows["model"]) == {"means"} and set(rows["method"]) == {"gradcam"} and set(rows["dataset"]) == {"toy"}
    expected = pd.DataFrame(experiment.batch(images, data))
    pd.testing.assert_frame_equal(rows[expected.columns], expected, check_dtype=False)
    assert experiment.run(tmp_path, batch_size=2).equals(rows)
    fast = LocalizationExperiment(entry, data, "toy", LocalizationSettings("gradcam", (0.15, 0.5), 3,
                                                                          channels_last=True))
    assert fast.path(tmp_path) != experiment.path(tmp_path)
    fast_rows = fast.run(tmp_path, batch_size=3)
    pd.testing.assert_frame_equal(fast_rows[expected.columns], expected, check_dtype=False)


# --------------------------------------------------------------------------- boundary cases (mutation tests)


def test_equal_segments_tie_break_to_the_first_in_row_major_order():
    """heatmap_to_box's documented tie-break: of two segments with the same pixel count, the one met
    first in row-major order (scipy's labelling order); the sweep and its reference agree."""
    heatmap = np.zeros((12, 12))
    heatmap[7:10, 1:4] = 1.0  # 9 pixels, lower left (met second)
    heatmap[1:4, 8:11] = 1.0  # 9 pixels, upper right (met first)
    assert heatmap_to_box(heatmap) == (8, 1, 10, 3)
    assert threshold_sweep(heatmap, (0.5,)).box(0) == (8, 1, 10, 3)
    assert _sweep_python((heatmap > 0.5).astype(np.int16), 1, np.zeros((0, 4), dtype=np.int64),
                         np.zeros(0))[0].tolist() == [[8, 1, 10, 3]]
    heatmap[9, 4] = 1.0  # one pixel more: the lower left segment is now the largest
    assert heatmap_to_box(heatmap) == (1, 7, 4, 9)


def test_the_det_rule_takes_its_threshold_from_the_ground_truth_box():
    """eval_detection.m: thr = min(0.5, w h / ((w + 10)(h + 10))) with w, h of the *ground-truth*
    box. Truth 10 x 10 needs 0.25; the guess (10 x 30, containing it) has IoU 1/3: a hit. With the
    guess's own size the threshold would be 300 / 800 = 0.375, a miss."""
    guess, truth = (0, 0, 9, 29), _one_class((0, 0, 9, 9))
    assert iou(guess, (0, 0, 9, 9)) == pytest.approx(1 / 3)
    assert image_outcome([3], [guess], truth, tiny_box_rule=True)["loc_top1"] == 1.0
    assert image_outcome([3], [guess], truth)["loc_top1"] == 0.0
    heatmap = np.zeros((60, 60))
    heatmap[0:30, 0:10] = 1.0
    assert threshold_sweep(heatmap, (0.5,), truth.boxes, tiny_box_rule=True).largest_hit.tolist() == [True]
    assert threshold_sweep(heatmap, (0.5,), truth.boxes).largest_hit.tolist() == [False]


def test_top_5_counts_the_fifth_guess_and_not_the_sixth():
    box = (10, 10, 49, 49)
    sample = _one_class(box)
    fifth = image_outcome([0, 1, 2, 4, 3], [None, None, None, None, box], sample)
    assert fifth == {"cls_top1": 0.0, "cls_top5": 1.0, "loc_top1": 0.0, "loc_top5": 1.0}
    sixth = image_outcome([0, 1, 2, 4, 5, 3], [None] * 5 + [box], sample)
    assert sixth == {"cls_top1": 0.0, "cls_top5": 0.0, "loc_top1": 0.0, "loc_top5": 0.0}
    assert image_outcome([3], [box], sample) == {"cls_top1": 1.0, "cls_top5": 1.0, "loc_top1": 1.0, "loc_top5": 1.0}


def test_gt_known_scores_the_ground_truth_classs_map_not_the_top_1_guess(channel_means_entry):
    """GT-known localisation (Zhou et al. 2016; Choe et al. 2020): the map of the true class, whatever
    the prediction. Here the top-1 class (2) is wrong and its map is elsewhere; class 4's map is on
    its box."""
    entry = channel_means_entry
    image = torch.zeros(6, 40, 50)
    image[2, 0:10, 0:10] = 3.0  # the prediction (mean 0.15 > 0.1), top left
    image[4, 20:40, 30:50] = 0.5  # the truth, bottom right, on its box
    sample = Sample(image, (4,), torch.tensor([[30, 20, 49, 39]]), torch.tensor([4]), "t")
    for top_k in (5, 1, 0):
        (row,) = localize_batch(entry, image[None], [sample], "gradcam", (0.15,), top_k=top_k)
        assert row["gt_class"] == 4 and row["loc_gt_known"] and row["gt_iou"] == 1.0
        if top_k:
            assert row["top1_class"] == 2 and row["loc_top1"] == 0.0
    assert row["gt_iou_any"] == 1.0


def test_iou_threshold_names_the_box_it_refuses():
    with pytest.raises(ValueError, match=r"^box\b"):
        iou_threshold((5, 0, 1, 1))
    assert threshold_sweep(np.ones((4, 4)), (0.5,)).box(0) == (0, 0, 3, 3)
    assert threshold_sweep(np.zeros((4, 4)), (0.5,)).box(0) is None


def test_max_box_acc_interval_without_clusters_resamples_images():
    """Each image is its own unit when no clusters are given (the same draws by hand); two units are
    enough for an interval, one is not; IoUs exactly at delta count (>=)."""
    rng = np.random.default_rng(3)
    ious = np.round(rng.random((12, 5)) * 4) / 4  # many values exactly 0.5
    value, low, high = max_box_acc_ci(ious, n_resamples=400, seed=2)
    draws = np.random.default_rng(2).integers(0, 12, size=(400, 12))
    values = [max_box_acc_from_ious(ious[draw]) for draw in draws]
    assert value == max_box_acc_from_ious(ious) == (ious >= 0.5).mean(axis=0).max()
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))
    default = max_box_acc_ci(ious)  # the defaults: 2000 resamples, seed 0
    draws = np.random.default_rng(0).integers(0, 12, size=(2000, 12))
    values = [max_box_acc_from_ious(ious[draw]) for draw in draws]
    assert default[1:] == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))
    two = max_box_acc_ci(ious[:2], clusters=["a", "b"], n_resamples=50)
    assert np.isfinite(two[1:]).all()
    one = max_box_acc_ci(ious[:3], clusters=["a", "a", "a"])
    assert one[0] == max_box_acc_from_ious(ious[:3]) and np.isnan(one[1]) and np.isnan(one[2])


# ---- mutation tests: dtypes, defaults and boundaries of localization, threshold_sweep, max_box_acc


def test_max_box_acc_compares_ious_at_float64_and_refuses_other_shapes():
    """max_box_acc_from_ious / max_box_acc_ci read the IoUs as float64 (their docstrings: IoU >= delta
    on the values given): a float32 IoU of 0.7 is 0.69999998807907..., below delta = 0.7 (exact
    rational comparison by hand), so it is a miss, not a hit after rounding delta to float32. A
    matrix that is not (N, T) or is empty is refused."""
    low32 = np.float32(0.7)
    assert float(low32) < 0.7  # the float32 nearest 0.7 lies below it
    ious32 = np.full((6, 3), low32, dtype=np.float32)
    assert max_box_acc_from_ious(ious32, (0.7,)) == 0.0
    assert max_box_acc_from_ious(np.full((6, 3), 0.7), (0.7,)) == 1.0  # exactly at delta: a hit
    # every resample of six misses is 0; of six hits (float64 0.7, exactly at delta) is 1
    assert max_box_acc_ci(ious32, (0.7,), n_resamples=20) == (0.0, 0.0, 0.0)
    assert max_box_acc_ci(np.full((6, 3), 0.7), (0.7,), n_resamples=20) == (1.0, 1.0, 1.0)
    for bad in (np.array([0.6, 0.4]), np.zeros((0, 5)), np.zeros((3, 0))):
        with pytest.raises(ValueError, match=r"ious must be a non-empty \(N, T\) array"):
            max_box_acc_from_ious(bad)


def test_max_box_acc_interval_of_one_resample_is_that_resample():
    """With n_resamples = 1 the percentile interval is the one resampled MaxBoxAcc: images drawn
    with rng.integers(0, N, size=(1, N)) of default_rng(seed), the share of hits at the best
    threshold computed by hand (seeds giving different values, so no value can be left over)."""
    ious = np.array([[0.9, 0.1, 0.6], [0.2, 0.7, 0.5], [0.6, 0.6, 0.1], [0.1, 0.2, 0.3], [0.8, 0.4, 0.55]])
    expected = []
    for seed in range(6):
        draw = np.random.default_rng(seed).integers(0, len(ious), size=(1, len(ious)))[0]
        hits = [[ious[i, t] >= 0.5 for i in draw] for t in range(3)]
        expected.append(max(sum(column) / len(draw) for column in hits))
    assert len(set(expected)) > 2
    for seed, share in enumerate(expected):
        _, low, high = max_box_acc_ci(ious, n_resamples=1, seed=seed)
        assert low == pytest.approx(share) and high == pytest.approx(share)


def test_max_box_acc_clusters_are_labels_compared_as_written():
    """Each distinct cluster label is one resampling unit (max_box_acc_ci: whole clusters are
    resampled): the distinct integer ids 2**53 and 2**53 + 1 stay two clusters even when the list
    also holds a float (a NaN for an unknown source), which a float64 array would merge. Reference:
    the cluster bootstrap by hand with 3 clusters."""
    rng = np.random.default_rng(8)
    ious = rng.random((6, 4))
    clusters = [2**53, 2**53, 2**53 + 1, 2**53 + 1, float("nan"), float("nan")]
    members = [[0, 1], [2, 3], [4, 5]]
    draws = np.random.default_rng(5).integers(0, 3, size=(60, 3))
    values = []
    for draw in draws:
        rows = ious[[i for d in draw for i in members[d]]]
        values.append((rows >= 0.5).mean(axis=0).max())
    _, low, high = max_box_acc_ci(ious, clusters=clusters, n_resamples=60, seed=5)
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))


def test_guess_is_localized_defaults_to_the_clsloc_rule_and_names_the_box():
    """guess_is_localized: by default the CLS-LOC rule (IoU >= 0.5, eval_clsloc.m); the DET devkit's
    tiny-box rule only when asked (truth 10 x 21 needs min(0.5, 210 / (20 * 31)) = 0.339 there).
    An invalid guess box is refused under the name ``box``."""
    from gradcam_lib.metrics.localization import guess_is_localized

    guess, sample = (0, 0, 9, 9), _one_class((0, 0, 9, 20))  # IoU 100 / 210 = 0.476
    assert not guess_is_localized(3, guess, sample)
    assert not guess_is_localized(3, guess, sample, False)
    assert guess_is_localized(3, guess, sample, tiny_box_rule=True)
    assert guess_is_localized(3, guess, _one_class((0, 0, 9, 19)))  # IoU exactly 0.5
    with pytest.raises(ValueError, match=r"^box\b"):
        guess_is_localized(3, (5, 0, 1, 1), sample)


def test_image_outcome_without_classes_scores_zero_and_reads_boxes_along_the_guesses():
    """image_outcome returns shares in [0, 1] (docstring): an image with no ground-truth class has
    nothing right (0.0, not the NaN of an empty mean, not 1.0). Boxes are read alongside the
    guesses: boxes beyond the last guess (e.g. computed for the top 5 while scoring one guess) are
    not guesses and are ignored."""
    empty = Sample(torch.zeros(3, 20, 20), (), torch.zeros((0, 4), dtype=torch.long),
                   torch.zeros(0, dtype=torch.long), "none")
    assert image_outcome([3, 1, 2, 0, 4], [(0, 0, 9, 9)] * 5, empty) == dict.fromkeys(
        ("cls_top1", "cls_top5", "loc_top1", "loc_top5"), 0.0)
    box, sample = (10, 10, 49, 49), _one_class((10, 10, 49, 49))
    one_guess = image_outcome([3], [box, None, None, None, None], sample)
    assert one_guess == {"cls_top1": 1.0, "cls_top5": 1.0, "loc_top1": 1.0, "loc_top5": 1.0}
    assert image_outcome([0], [None, box], sample)["cls_top5"] == 0.0


def test_sweep_reference_dtypes_empty_levels_boxless_maps_and_the_half_boundary():
    """ThresholdSweep's documented contents, for the per-threshold reference _sweep_python and the
    union-find kernel alike: largest_boxes (T, 4) long with -1 rows where no pixel is kept,
    largest_iou 0 without ground-truth boxes, largest_hit bool with IoU >= need (exactly 0.5 is a
    hit), components long. Hand case: one 10 x 10 square at level 1 (kept at k = 0 only)."""
    levels = np.zeros((30, 30), dtype=np.int16)
    levels[0:10, 0:10] = 1
    no_gt, no_need = np.zeros((0, 4), dtype=np.int64), np.zeros(0)
    boxes, largest_iou, largest_hit, best_iou, components = _sweep_python(levels, 2, no_gt, no_need)
    assert boxes.dtype == np.int64 and boxes.tolist() == [[0, 0, 9, 9], [-1, -1, -1, -1]]
    assert largest_iou.tolist() == [0.0, 0.0] and best_iou.tolist() == [0.0, 0.0]
    assert largest_hit.dtype == np.bool_ and largest_hit.tolist() == [False, False]
    assert components.dtype == np.int64 and components.tolist() == [1, 0]
    half = np.array([[0, 0, 9, 19]])  # 200 pixels containing the square: IoU = 100 / 200 = 0.5
    assert iou((0, 0, 9, 9), (0, 0, 9, 19)) == 0.5
    reference = _sweep_python(levels, 2, half, np.array([0.5]))
    assert reference[1].tolist() == [0.5, 0.0] and reference[2].tolist() == [True, False]
    # the same through threshold_sweep (the numba kernel): a threshold above the maximum keeps nothing
    heatmap = levels.astype(np.float64)
    sweep = threshold_sweep(heatmap, (0.5, 1.5), half)
    for ours, theirs in zip((sweep.largest_boxes, sweep.largest_iou, sweep.largest_hit, sweep.best_iou,
                             sweep.components), reference, strict=True):
        assert ours.dtype == theirs.dtype and ours.tolist() == theirs.tolist()
    assert sweep.box(1) is None
    # one needed IoU per ground-truth box
    with pytest.raises(ValueError):
        _sweep_python(levels, 2, np.array([[20, 20, 25, 25], [0, 0, 9, 19]]), np.array([0.5]))


def test_max_box_acc_interval_defaults_are_2000_resamples_with_seed_0():
    """max_box_acc_ci's documented defaults (signature): n_resamples = 2000, seed = 0. Clusters of
    unequal sizes make the resampled shares nearly continuous, so the percentile interval moves
    with one resample more or another seed (the neighbouring values give other intervals)."""
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(25), rng.integers(1, 9, 25))
    ious = rng.random((len(clusters), 4))
    default = max_box_acc_ci(ious, clusters=clusters)
    assert default == max_box_acc_ci(ious, (0.5,), clusters, 0.95, n_resamples=2000, seed=0)
    assert default[1:] != max_box_acc_ci(ious, clusters=clusters, n_resamples=2001)[1:]
    assert default[1:] != max_box_acc_ci(ious, clusters=clusters, seed=1)[1:]


def test_same_outcomes_and_versus_table_by_hand():
    """Two methods on four images: only B right on i1, both on i0, only A on i3."""
    from gradcam_lib.report.localization import same_outcomes, versus_table

    index = pd.Index(["i0", "i1", "i2", "i3"], name="image_id")
    a = pd.DataFrame({"loc_top1": [1, 0, 0, 1], "loc_top5": [1, 0, 0, 1], "loc_gt_known": [1.0, 0.0, 0.0, 1.0]}, index)
    b = pd.DataFrame({"loc_top1": [1, 1, 0, 0], "loc_top5": [1, 1, 0, 1], "loc_gt_known": [1.0, 1.0, 0.0, 0.0]}, index)
    assert same_outcomes(a, b).tolist() == [True, False, True, False]
    assert same_outcomes(a, a.iloc[::-1]).all()  # matched by image id, not by position
    per_image = {("d", "m", "gradcam"): b, ("d", "m", "other"): a}
    clusters = {key: None for key in per_image}
    table = versus_table(per_image, clusters, {"d": [("m", "gradcam"), ("m", "other")]}, {"other": "Other"})
    assert len(table) == 1
    row = table.iloc[0]
    assert row["method"] == "Other" and row["only it right"] == 1 and row["only reference right"] == 1
    assert row["McNemar p"] == pytest.approx(1.0)
    share, low, high = wilson_ci([1, 0, 0, 1])
    assert row["loc_gt_known error %"] == f"{100 * (1 - share):.1f} [{100 * (1 - high):.1f}, {100 * (1 - low):.1f}]"
    assert row["error difference, points"] == ""  # no clusters: McNemar only

"""Pointing game: hit rule against a Euclidean distance transform, tie rule, tolerance edge,
difficult pairs, accuracy aggregation and the rejection curve against hand counts and sklearn."""

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
from gradcam_lib.datasets.voc import VOCSample
from gradcam_lib.models import ModelEntry
from gradcam_lib.pointing import (
    box_distances,
    is_difficult,
    max_point,
    pointing_accuracy,
    pointing_batch,
    pointing_hit,
    rejection_at,
    rejection_curve,
)


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
    for tolerance in (0, 3, 15):
        ours = np.array([[pointing_hit(_peak_at(x, y), boxes, tolerance) for x in range(50)] for y in range(40)])
        assert np.array_equal(ours, distance <= tolerance)
    ys, xs = np.nonzero(np.ones((40, 50)))
    ours = np.array([box_distances((x, y), boxes).min().item() for x, y in zip(xs, ys)])
    np.testing.assert_allclose(ours, distance[ys, xs])


def test_tolerance_edge_and_inside():
    box = [[20, 20, 20, 20]]
    assert pointing_hit(_peak_at(35, 20), box, 15)  # exactly 15 px: a hit (TorchRay's d < 15 misses it)
    assert pointing_hit(_peak_at(29, 32), box, 15)  # (9, 12): 15 px
    assert not pointing_hit(_peak_at(36, 20), box, 15)
    assert pointing_hit(_peak_at(20, 20), box, 0) and not pointing_hit(_peak_at(21, 20), box, 0)
    with pytest.raises(ValueError):
        pointing_hit(_peak_at(1, 1), box, -1)


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


def test_bilinear_plateau_points_to_its_middle_not_its_corner():
    """A 7x7 map peaking in its corner cell, upsampled x32 bilinearly: the top-left 16x16 pixels tie.
    numpy's argmax would say (0, 0); the rule says the middle of the plateau."""
    coarse = torch.zeros(1, 1, 7, 7)
    coarse[0, 0, 0, 0] = 1.0
    up = nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
    assert int(np.argmax(up.numpy())) == 0
    assert max_point(up) == (7, 7)


def _sample(boxes, labels, side=100, image_id="s") -> Sample:
    return Sample(torch.zeros(3, side, side), tuple(sorted(set(labels))), torch.tensor(boxes), torch.tensor(labels), image_id)


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


def test_rejection_curve_precision_matches_sklearn():
    rows = _topk_rows()
    curve = rejection_curve(rows)
    precision, recall, thresholds = precision_recall_curve(rows["hit"], rows["peak"])
    ours = curve.set_index("tau")
    for p, r, t in zip(precision[:-1], recall[:-1], thresholds):
        assert ours.loc[t, "precision"] == pytest.approx(100 * p)
        # our recall's denominator is the present guesses (4), sklearn's the hits (3)
        assert ours.loc[t, "recall"] == pytest.approx(100 * r * 3 / 4)
    assert curve["quantile"].iloc[0] == 0 and curve["quantile"].iloc[-1] == 1


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

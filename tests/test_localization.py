"""gradcam_lib.localization against hand-computed cases and scikit-image's labelling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.measure import label, regionprops
from toy_models import ChannelMeans

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.localization import (
    error_table,
    heatmap_to_box,
    image_outcome,
    iou,
    iou_threshold,
    localize_batch,
)
from gradcam_lib.models import ModelEntry


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


def test_iou_threshold_tiny_box_rule():
    assert iou_threshold((0, 0, 199, 99)) == 0.5
    assert iou_threshold((0, 0, 9, 9)) == pytest.approx(100 / 400)
    assert iou_threshold((0, 0, 9, 9), tiny_box_rule=False) == 0.5


def _sample() -> Sample:
    return Sample(
        image=torch.zeros(3, 100, 100),
        labels=(3, 7),
        boxes=torch.tensor([[10, 10, 49, 49], [60, 60, 89, 89]]),
        box_labels=torch.tensor([3, 7]),
        image_id="x",
    )


def test_ilsvrc_rule_per_image_and_error_rates():
    sample = _sample()
    right_box = (12, 12, 50, 50)
    wrong_box = (60, 10, 99, 40)
    # top-1 right class, box on the other object; the third guess is right on both counts
    out = image_outcome([3, 1, 7, 2, 5], [wrong_box, right_box, (60, 60, 90, 90), None, None], sample)
    assert out == {"cls_top1": True, "cls_top5": True, "loc_top1": False, "loc_top5": True}
    # class 7 with the box of class 3: wrong localisation
    out2 = image_outcome([7, 0, 1, 2, 4], [right_box, right_box, right_box, right_box, None], sample)
    assert out2 == {"cls_top1": True, "cls_top5": True, "loc_top1": False, "loc_top5": False}
    out3 = image_outcome([0, 1, 2, 4, 5], [right_box] * 5, sample)
    assert out3 == {"cls_top1": False, "cls_top5": False, "loc_top1": False, "loc_top5": False}
    rows = pd.DataFrame(
        [
            {"image_id": f"i{n}", "threshold": t, "loc_gt_known": n == 0, **o}
            for n, o in enumerate([out, out2, out3, out])
            for t in (0.15, 0.3)
        ]
    ).assign(dataset="d", model="m", method="gradcam")
    table = error_table(rows, threshold=0.15).iloc[0]
    expected = {"cls_top1": 25.0, "cls_top5": 25.0, "loc_top1": 100.0, "loc_top5": 50.0, "loc_gt_known": 75.0, "images": 4}
    assert table[list(expected)].to_dict() == pytest.approx(expected)


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
    assert first["cls_top1"] and first["loc_top1"] and first["loc_gt_known"]
    # class 4 is in the top 5 but its map lies elsewhere than the (deliberately wrong) box
    assert not rows[2]["cls_top1"] and rows[2]["cls_top5"] and not rows[2]["loc_top5"] and not rows[2]["loc_gt_known"]

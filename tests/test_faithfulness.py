"""Faithfulness measures against independent references: captum's Occlusion, scipy's Spearman,
block means, np.trapezoid, a t-interval, closed forms on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gradcam_lib.faithfulness import (
    argsort_correlation,
    average_drop,
    curve_auc,
    deletion_insertion_curves,
    explanation_map_confidence,
    increase_in_confidence,
    occlusion_map,
    rank_correlation,
    window_starts,
)


@pytest.fixture()
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("patch, stride, fill", [(7, 3, 0.0), (5, 1, 0.0), (9, 4, -1.5), (16, 7, 0.0)])
def test_occlusion_equals_captum(small_cnn, patch, stride, fill):
    x = torch.randn(2, 3, 16, 19)
    targets = torch.tensor([1, 3])
    ours = occlusion_map(small_cnn, x, targets, patch, stride, fill, batch_size=16, backend="ours")
    theirs = occlusion_map(small_cnn, x, targets, patch, stride, fill, batch_size=7, backend="captum")
    assert ours.shape == (2, 16, 19)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_occlusion_of_a_one_pixel_model_by_hand():
    """p(class 0) = sigmoid(x[0, 0, 4, 4]) (logits (v, 0)): only windows covering pixel (4, 4) change
    it; with patch 3, stride 1 on a 9 x 9 image, pixel (4, 4) is covered by 9 windows, each dropping
    p by p(v) - 1/2, so its map value is exactly that drop."""
    class OnePixel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x[:, 0, 4, 4]
            return torch.stack([v, torch.zeros_like(v)], dim=1)

    x = torch.zeros(1, 3, 9, 9)
    x[0, 0, 4, 4] = 2.0
    heat = occlusion_map(OnePixel(), x, torch.tensor([0]), patch=3, stride=1)[0]
    drop = torch.sigmoid(torch.tensor(2.0)) - 0.5
    assert heat[4, 4] == pytest.approx(float(drop), rel=1e-5)
    # pixel (2, 2) is covered by 9 windows, one of which (starting at (2, 2)) covers (4, 4)
    assert heat[2, 2] == pytest.approx(float(drop) / 9, rel=1e-5)
    assert heat[0, 0] == 0 and heat[8, 8] == 0 and heat[0, 8] == 0


def test_window_rule_and_bad_settings():
    assert window_starts(224, 45, 16) == list(range(0, 177, 16)) + [192]  # ceil(179/16) + 1 = 13; last one cut
    assert window_starts(10, 10, 3) == [0]
    with pytest.raises(ValueError):
        window_starts(10, 4, 5)  # a stride above the patch leaves pixels never occluded
    with pytest.raises(ValueError):
        window_starts(10, 11, 1)


def test_rank_correlation_matches_scipy_on_block_means():
    rng = np.random.default_rng(0)
    a, b = rng.random((28, 28)), rng.random((28, 28))
    b[:14] = 0.5  # ties
    blocks = lambda m: m.reshape(14, 2, 14, 2).mean(axis=(1, 3)).ravel()
    expected = stats.spearmanr(blocks(a), blocks(b)).statistic
    assert rank_correlation(torch.tensor(a), b, size=14) == pytest.approx(expected, abs=1e-12)
    assert rank_correlation(a, a ** 3, size=28) == pytest.approx(1.0)  # invariant to monotone transforms
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(a, np.zeros((28, 28))))  # all-zero map: undefined
    with pytest.raises(ValueError, match="NaN"):
        rank_correlation(a, np.full((28, 28), np.nan))


def test_argsort_is_not_the_rank():
    """KTH's mistake: argsort gives positions, not ranks; it disagrees with Spearman on random maps
    and equals Spearman of the *inverse* permutations."""
    rng = np.random.default_rng(1)
    a, b = rng.random((14, 14)), rng.random((14, 14))
    b = a + 0.5 * b  # correlated maps
    assert rank_correlation(a, b) > 0.8
    assert abs(argsort_correlation(a, b)) < 0.5
    assert argsort_correlation(a, b) == pytest.approx(stats.spearmanr(np.argsort(a.ravel()), np.argsort(b.ravel())).statistic)


def test_average_drop_and_increase_by_hand():
    y = torch.tensor([0.8, 0.5, 0.2])
    o = torch.tensor([0.4, 0.6, 0.1])
    assert average_drop(y, o) == pytest.approx(100 * (0.5 + 0 + 0.5) / 3)
    assert increase_in_confidence(y, o) == pytest.approx(100 / 3)


def test_explanation_map_is_the_image_where_the_map_is_one(small_cnn):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.randn(2, 3, 16, 16)
    targets = torch.tensor([0, 2])
    ones = torch.zeros(2, 16, 16)
    ones[:, 0, 0] = -1.0  # min-max: 0 at one pixel, 1 elsewhere
    y, o = explanation_map_confidence(small_cnn, x, targets, ones + 1, mean, std)
    flat_y, flat_o = explanation_map_confidence(small_cnn, x, targets, torch.zeros(2, 16, 16), mean, std)
    black = (torch.zeros(1, 3, 1, 1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(small_cnn(black.expand(2, 3, 16, 16)), 1)[[0, 1], targets]
    torch.testing.assert_close(flat_o, expected)  # a constant map explains nothing: all black
    torch.testing.assert_close(y, flat_y)
    assert not torch.allclose(o, expected)


def test_deletion_insertion_end_points_and_order():
    """Logits (sum of w * x over channel 0, 0): deleting the pixels in descending w x order lowers
    p step by step; the curves start and end at the full, empty and blurred images."""
    torch.manual_seed(3)
    w = torch.rand(8, 8)

    class Weighted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (x[:, 0] * w).sum(dim=(-2, -1))
            return torch.stack([s, torch.zeros_like(s)], dim=1)

    x = torch.rand(1, 3, 8, 8)
    p = lambda img: torch.sigmoid((img[:, 0] * w).sum(dim=(-2, -1)))
    deletion, insertion = deletion_insertion_curves(Weighted(), x, torch.tensor([0]), (w * x[0, 0])[None], n_steps=16, blur_kernel=3, blur_sigma=1.0)
    assert deletion.shape == insertion.shape == (1, 17)
    torch.testing.assert_close(deletion[0, [0, -1]], torch.cat([p(x), torch.tensor([0.5])]))
    from torchvision.transforms.v2 import functional as TF
    torch.testing.assert_close(insertion[0, [0, -1]], torch.cat([p(TF.gaussian_blur(x, [3, 3], [1.0, 1.0])), p(x)]))
    assert (deletion[0].diff() <= 1e-7).all()  # every deleted pixel had a positive contribution


def test_auc_is_the_trapezoid_rule():
    curves = np.random.default_rng(4).random((3, 11))
    np.testing.assert_allclose(curve_auc(torch.tensor(curves)), np.trapezoid(curves, np.linspace(0, 1, 11), axis=-1))


def test_faithfulness_rows_match_the_pieces(small_cnn):
    """The chapter's batch function against the functions it combines, on a tiny CNN."""
    from gradcam_lib.datasets import ImageTransform, Sample
    from gradcam_lib.explain import heatmaps
    from gradcam_lib.faithfulness import compare_occlusion_backends, curves_of, faithfulness_batch
    from gradcam_lib.models import ModelEntry
    import pandas as pd

    entry = ModelEntry("tiny", small_cnn, small_cnn[1], "1", ImageTransform(), tuple("abcde"))
    x = torch.randn(2, 3, 16, 16)
    samples = [Sample(x[i], (0,), torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long), f"i{i}") for i in range(2)]
    rows = pd.DataFrame(faithfulness_batch(entry, x, samples, ["gradcam", "guided_backprop"], ["gradcam"], patch=5,
                                           stride=3, size=4, n_steps=4, occlusion_batch=10))
    targets = small_cnn(x).argmax(1)
    occlusion = occlusion_map(small_cnn, x, targets, 5, 3)
    for method in ("gradcam", "guided_backprop"):
        maps = heatmaps(method, small_cnn, small_cnn[1], x, targets)
        expected = [rank_correlation(maps[i], occlusion[i], 4) for i in range(2)]
        np.testing.assert_allclose(rows[rows.method == method]["rank_correlation"], expected)
    assert rows[rows.method == "guided_backprop"]["y"].isna().all()
    curves = curves_of(rows, "deletion")
    assert len(curves) == 2 * 5 and curves["fraction"].max() == 1.0
    first = curves[curves.image_id == "i0"].sort_values("fraction")["probability"].to_numpy()
    assert rows.iloc[0]["deletion_auc"] == pytest.approx(float(curve_auc(first)))
    table, maps = compare_occlusion_backends(small_cnn, x, targets, 5, 3)
    assert table["max_abs_diff"].max() < 1e-6 and set(maps) == {"ours", "captum"}

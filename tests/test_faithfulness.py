"""Faithfulness measures against independent references: captum's Occlusion, scipy's Spearman,
block means, np.trapezoid, scipy.ndimage's correlation, brute-force loops, hand-computed cases,
closed forms on tiny models."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from gradcam_lib.metrics.confidence import (
    average_drop,
    confidence_drop,
    confidence_increased,
    explanation_map_confidence,
    increase_in_confidence,
)
from gradcam_lib.metrics.deletion import curve_auc, deletion_insertion_curves, rise_blur, rise_kernel
from gradcam_lib.metrics.occlusion import argsort_correlation, occlusion_map, rank_correlation, window_starts
from gradcam_lib.report.occlusion import independent_units, method_intervals, paired_comparison, per_image_measures
from gradcam_lib.stats import cluster_bootstrap_ci, mcnemar, mean_ci, paired_difference, wilson_ci


@pytest.fixture()
def small_cnn() -> nn.Module:
    with torch.random.fork_rng():  # seeded initialisation without touching the global RNG state
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("patch, stride, fill", [(7, 3, 0.0), (5, 1, 0.0), (9, 4, -1.5), (16, 7, 0.0)])
def test_occlusion_equals_captum(small_cnn, patch, stride, fill):
    x = torch.randn(2, 3, 16, 19, generator=torch.Generator().manual_seed(1))
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
    assert window_starts(224, 45, 16) == [*range(0, 177, 16), 192]  # ceil(179/16) + 1 = 13; last one cut
    assert window_starts(10, 10, 3) == [0]
    with pytest.raises(ValueError):
        window_starts(10, 4, 5)  # a stride above the patch leaves pixels never occluded
    with pytest.raises(ValueError):
        window_starts(10, 11, 1)


def test_rank_correlation_matches_scipy_on_block_means():
    rng = np.random.default_rng(0)
    a, b = rng.random((28, 28)), rng.random((28, 28))
    b[:14] = 0.5  # ties
    def blocks(m):
        return m.reshape(14, 2, 14, 2).mean(axis=(1, 3)).ravel()
    expected = stats.spearmanr(blocks(a), blocks(b)).statistic
    assert rank_correlation(torch.tensor(a), b, size=14) == pytest.approx(expected, abs=1e-12)
    assert rank_correlation(a, a ** 3, size=28) == pytest.approx(1.0)  # invariant to monotone transforms
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(a, np.zeros((28, 28))))  # all-zero map: undefined
    with pytest.raises(ValueError, match="NaN"):
        rank_correlation(a, np.full((28, 28), np.nan))


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_rank_correlation_refuses_infinite_maps_like_nan(value):
    # before: +inf pooled into an inf cell, and the correlation of the ranks came out NaN
    rng = np.random.default_rng(1)
    a, b = rng.random((28, 28)), rng.random((28, 28))
    b[3, 4] = value
    for first, second in ((a, b), (b, a), (a, torch.tensor(b))):
        with pytest.raises(ValueError, match="map holds NaN or infinity"):
            rank_correlation(first, second)


def test_rank_correlation_by_hand_and_without_pooling():
    """2 x 2 maps, ranks (1, 2, 3, 4) and (1, 3, 2, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8; at the maps'
    own size (no pooling) the value is scipy's Spearman of the raw cells, ties included."""
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[10.0, 30.0], [20.0, 40.0]])
    assert rank_correlation(a, b, size=2) == pytest.approx(0.8)
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 5, (9, 9)).astype(float), rng.random((9, 9))  # many ties in a
    assert rank_correlation(a, b, size=9) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)


def test_argsort_is_not_the_rank():
    """KTH's mistake: argsort gives positions, not ranks; it disagrees with Spearman on random maps
    and equals Spearman of the *inverse* permutations."""
    rng = np.random.default_rng(1)
    a, b = rng.random((14, 14)), rng.random((14, 14))
    b = a + 0.5 * b  # correlated maps
    assert rank_correlation(a, b) > 0.8
    assert abs(argsort_correlation(a, b)) < 0.5
    expected = stats.spearmanr(np.argsort(a.ravel()), np.argsort(b.ravel())).statistic
    assert argsort_correlation(a, b) == pytest.approx(expected)


def test_average_drop_and_increase_by_hand():
    """Grad-CAM++ Sec. 6.1: drop_i = 100 max(0, Y - O) / Y; increase_i = 1[O > Y] (strict)."""
    y = torch.tensor([0.8, 0.5, 0.2, 0.4])
    o = torch.tensor([0.4, 0.6, 0.1, 0.4])
    torch.testing.assert_close(confidence_drop(y, o), torch.tensor([50.0, 0.0, 50.0, 0.0], dtype=torch.float64))
    assert confidence_increased(y, o).tolist() == [False, True, False, False]  # O = Y is no increase
    assert average_drop(y, o) == pytest.approx(100 * (0.5 + 0 + 0.5 + 0) / 4)
    assert increase_in_confidence(y, o) == pytest.approx(100 / 4)


def test_explanation_map_is_the_image_where_the_map_is_one(small_cnn):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
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


def test_rise_kernel_is_a_normalised_gaussian_when_it_fits():
    """With the 4-sigma support inside the window, scipy's filtered delta is the outer product of the
    normalised sampled Gaussian exp(-x^2 / 2 s^2), |x| <= 4 s; RISE's 11 / 5 kernel still sums to 1."""
    x = np.arange(-20, 21)
    g = np.where(np.abs(x) <= 8, np.exp(-x ** 2 / (2 * 2.0 ** 2)), 0.0)
    g /= g.sum()
    np.testing.assert_allclose(rise_kernel(41, 2.0).numpy(), np.outer(g, g), atol=1e-12)
    k = rise_kernel(11, 5.0).numpy()
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])


def test_rise_blur_is_a_zero_padded_correlation():
    """Against scipy.ndimage.correlate with constant (zero) borders, channel by channel; on a
    constant image the centre keeps its value and a corner keeps only the kernel's quarter."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 17, 13))
    ours = rise_blur(torch.tensor(x)).numpy()
    k = rise_kernel().numpy()
    for i in range(2):
        for c in range(3):
            np.testing.assert_allclose(ours[i, c], ndimage.correlate(x[i, c], k, mode="constant", cval=0.0), atol=1e-12)
    ones = rise_blur(torch.ones(1, 1, 21, 21, dtype=torch.float64))[0, 0].numpy()
    assert ones[10, 10] == pytest.approx(1.0)
    assert ones[0, 0] == pytest.approx(k[5:, 5:].sum())


class _Weighted(nn.Module):
    """Two logits (sum of w * x over channel 0, 0): p(class 0) = sigmoid(sum w x)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.w).sum(dim=(-2, -1))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_deletion_insertion_end_points_and_order():
    """Deleting the pixels in descending w x order lowers p step by step; the curves start and end
    at the full, empty and blurred images."""
    w = torch.rand(8, 8, generator=torch.Generator().manual_seed(3))
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    def p(img):
        return torch.sigmoid((img[:, 0] * w).sum(dim=(-2, -1)))
    deletion, insertion = deletion_insertion_curves(_Weighted(w), x, torch.tensor([0]), (w * x[0, 0])[None], n_steps=16,
                                                    blur_kernel=3, blur_sigma=1.0)
    assert deletion.shape == insertion.shape == (1, 17)
    torch.testing.assert_close(deletion[0, [0, -1]], torch.cat([p(x), torch.tensor([0.5])]))
    torch.testing.assert_close(insertion[0, [0, -1]], torch.cat([p(rise_blur(x, 3, 1.0)), p(x)]))
    assert (deletion[0].diff() <= 1e-7).all()  # every deleted pixel had a positive contribution


def test_deletion_insertion_against_a_brute_force_loop():
    """RISE's CausalMetric as a plain loop: one pixel per step, pixels in descending map order with
    ties in row-major order, deletion copying zeros, insertion copying the original into the blur."""
    gen = torch.Generator().manual_seed(8)
    w = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 3, 5, 4, generator=gen, dtype=torch.float64)
    heat = torch.tensor([[3, 1, 1, 0], [2, 2, 5, 0], [1, 4, 0, 0], [0, 1, 2, 3], [6, 0, 1, 1]], dtype=torch.float64)
    model = _Weighted(w)
    deletion, insertion = deletion_insertion_curves(model, x, torch.tensor([0]), heat[None], n_steps=20, blur_kernel=3,
                                                    blur_sigma=1.0)
    flat = heat.ravel().tolist()
    order = sorted(range(20), key=lambda i: (-flat[i], i))
    blurred = rise_blur(x, 3, 1.0)
    for start, finish, curve in ((x.clone(), torch.zeros_like(x), deletion[0]), (blurred.clone(), x, insertion[0])):
        expected = []
        for step in range(21):
            expected.append(float(torch.softmax(model(start), 1)[0, 0]))
            if step < 20:
                r, c = divmod(order[step], 4)
                start[0, :, r, c] = finish[0, :, r, c]
        np.testing.assert_allclose(curve.numpy(), expected, rtol=1e-12)


def test_deletion_insertion_refuses_maps_that_do_not_match_the_images():
    w = torch.rand(8, 8, generator=torch.Generator().manual_seed(3))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    model, targets = _Weighted(w), torch.tensor([0, 1])
    for maps in (torch.rand(2, 4, 4), torch.rand(1, 8, 8), torch.rand(2, 1, 8, 8), torch.rand(8, 8)):
        with pytest.raises(ValueError, match=r"maps must be \(B, H, W\) = \(2, 8, 8\) to match images \(2, 3, 8, 8\), "
                                             rf"got shape {re.escape(str(tuple(maps.shape)))}"):
            deletion_insertion_curves(model, x, targets, maps, n_steps=4, blur_kernel=3, blur_sigma=1.0)
    bad = torch.rand(2, 8, 8)
    bad[1, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="maps holds NaN or infinity"):
        deletion_insertion_curves(model, x, targets, bad, n_steps=4, blur_kernel=3, blur_sigma=1.0)
    with pytest.raises(ValueError, match=r"targets must be \(B,\) with B=2"):
        deletion_insertion_curves(model, x, torch.tensor([0]), torch.rand(2, 8, 8), n_steps=4, blur_kernel=3,
                                  blur_sigma=1.0)
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\)"):
        deletion_insertion_curves(model, x[0], targets, torch.rand(2, 8, 8), n_steps=4, blur_kernel=3, blur_sigma=1.0)


def test_auc_is_the_trapezoid_rule():
    assert float(curve_auc(np.array([1.0, 0.5, 0.0]))) == pytest.approx(0.5)  # RISE's auc by hand
    assert float(curve_auc(np.array([0.2, 0.6, 1.0, 0.4]))) == pytest.approx((0.1 + 0.6 + 1.0 + 0.2) / 3)
    curves = np.random.default_rng(4).random((3, 11))
    np.testing.assert_allclose(curve_auc(torch.tensor(curves)), np.trapezoid(curves, np.linspace(0, 1, 11), axis=-1))


def test_faithfulness_rows_match_the_pieces(small_cnn, tmp_path):
    """The chapter's experiment against the functions it combines, on a tiny CNN."""
    from gradcam_lib.datasets import ImageTransform, Sample
    from gradcam_lib.experiments.occlusion import OcclusionExperiment, OcclusionSettings
    from gradcam_lib.methods import heatmaps
    from gradcam_lib.metrics.occlusion import compare_occlusion_backends
    from gradcam_lib.models import ModelEntry
    from gradcam_lib.report.occlusion import curves_of

    entry = ModelEntry("tiny", small_cnn, small_cnn[1], "1", ImageTransform(), tuple("abcde"))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    samples = [Sample(x[i], (0,), torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long), f"i{i}")
               for i in range(2)]
    settings = OcclusionSettings(("gradcam", "guided_backprop"), ("gradcam",), patch=5, stride=3, size=4, n_steps=4,
                                 occlusion_batch=10)
    small_cnn.train()
    rows = OcclusionExperiment(entry, samples, "tiny", settings).run(tmp_path, batch_size=2)
    assert small_cnn.training  # the caller's mode is restored
    small_cnn.eval()
    assert set(rows["model"]) == {"tiny"} and set(rows["dataset"]) == {"tiny"}
    again = OcclusionExperiment(entry, samples, "tiny", settings).run(tmp_path, batch_size=1)  # read back, not rerun
    assert len(list(tmp_path.glob("*.csv"))) == 1 and again.equals(rows)
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


def _rows() -> pd.DataFrame:
    rows = pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e", "f"] * 2,
        "method": ["gradcam"] * 6 + ["gradcam_pp"] * 6,
        "rank_correlation": [0.1, 0.4, np.nan, 0.3, 0.2, 0.5, 0.2, 0.3, 0.6, 0.1, 0.6, 0.9],
        "y": [0.8, 0.5, 0.2, 0.4, 0.9, 0.6] * 2,
        "o": [0.4, 0.6, 0.1, 0.4, 0.3, 0.9, 0.6, 0.7, 0.1, 0.5, 0.95, 0.3],
        "deletion_auc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.2, 0.2, 0.6, 0.6, 0.6],
    })
    return per_image_measures(rows)


def test_per_image_measures_and_intervals_by_hand():
    rows = _rows()
    gc = rows[rows.method == "gradcam"]
    np.testing.assert_allclose(gc["drop"], [50.0, 0.0, 50.0, 0.0, 100 * 0.6 / 0.9, 0.0])
    assert gc["increase"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    table = method_intervals(rows, seed=3).set_index(["method", "measure"])
    row = table.loc[("gradcam", "rank_correlation")]
    assert row["n"] == 5 and row["mean"] == pytest.approx(0.3)  # the NaN image is left out
    assert (row["low"], row["high"]) == pytest.approx(mean_ci([0.1, 0.4, 0.3, 0.2, 0.5], seed=3)[1:])
    share = table.loc[("gradcam", "increase")]
    assert share["interval"] == "Wilson"
    expected = tuple(100 * v for v in wilson_ci([0, 1, 0, 0, 0, 1]))
    assert (share["mean"], share["low"], share["high"]) == pytest.approx(expected)
    units = {"a": "s1", "b": "s1", "c": "s2", "d": "s2", "e": "s3", "f": "s3"}
    clustered = method_intervals(rows, units, seed=3).set_index(["method", "measure"])
    row = clustered.loc[("gradcam_pp", "deletion_auc")]
    assert row["interval"] == "cluster bootstrap" and row["units"] == 3
    expected = cluster_bootstrap_ci([0.2, 0.2, 0.2, 0.6, 0.6, 0.6], list("112233"), seed=3)
    assert (row["mean"], row["low"], row["high"]) == pytest.approx(expected)


def test_paired_comparison_pairs_by_image():
    rows = _rows()
    shuffled = rows.sample(frac=1.0, random_state=0)  # row order must not matter
    result = paired_comparison(shuffled, "gradcam_pp", "gradcam", "rank_correlation", seed=1)
    a, b = np.array([0.2, 0.3, 0.1, 0.6, 0.9]), np.array([0.1, 0.4, 0.3, 0.2, 0.5])  # image c is NaN for Grad-CAM
    expected = paired_difference(a, b, seed=1)
    assert result["n"] == 5 and result["mean"] == pytest.approx(0.12)
    assert (result["low"], result["high"]) == pytest.approx((expected.low, expected.high))
    assert result["shown"] == expected.excludes_zero
    hits = paired_comparison(shuffled, "gradcam_pp", "gradcam", "increase")
    test = mcnemar([0, 1, 0, 1, 1, 0], [0, 1, 0, 0, 0, 1])  # O > Y by hand
    assert hits["mean"] == pytest.approx(100 * test.difference) and hits["evidence"] == str(test)
    assert hits["shown"] == (test.p_value < 0.05)
    units = {"a": "s1", "b": "s1", "c": "s2", "d": "s2", "e": "s3", "f": "s3"}
    clustered = paired_comparison(shuffled, "gradcam_pp", "gradcam", "deletion_auc", units, seed=2)
    expected = paired_difference([0.2, 0.2, 0.2, 0.6, 0.6, 0.6], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], list("112233"), seed=2)
    ends = (expected.mean, expected.low, expected.high)
    assert (clustered["mean"], clustered["low"], clustered["high"]) == pytest.approx(ends)
    with pytest.raises(KeyError):
        paired_comparison(rows, "gradcam", "guided_backprop", "drop")


def test_independent_units_follow_the_source_objects():
    from torch.utils.data import Subset

    from gradcam_lib.datasets import CompositeDataset, ImageTransform

    data = CompositeDataset(12, ImageTransform(), seed=4, max_objects=2)
    ids = [f"composite-4-{i}" for i in range(12)]
    labels = [next(iter(data.sources(i))) for i in range(12)]
    expected = [data.source_of(i, label) for i, label in zip(ids, labels, strict=True)]
    assert independent_units(Subset(data, range(12)), ids, labels) == expected
    missing = independent_units(data, ids[:1], [-1])  # top-1 class none of the pasted objects'
    assert missing == [next(iter(data.sources(0).values()))]
    assert independent_units(list(range(3)), ["x", "y", "z"], [1, 2, 3]) == ["x", "y", "z"]

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
from torch.utils._python_dispatch import TorchDispatchMode

from gradcam_lib.metrics.confidence import (
    average_drop,
    confidence_drop,
    confidence_increased,
    explanation_map_confidence,
    increase_in_confidence,
)
from gradcam_lib.metrics.deletion import curve_auc, deletion_insertion_curves, rise_blur, rise_kernel
from gradcam_lib.metrics.occlusion import (
    argsort_correlation,
    compare_occlusion_backends,
    occlusion_map,
    rank_correlation,
    window_starts,
)
from gradcam_lib.report.occlusion import (
    independent_units,
    method_intervals,
    paired_comparison,
    per_image_measures,
    prepared_rows,
    summaries,
)
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
    # Y / O and both curves of the Grad-CAM rows, recomputed from the pieces (columns not swapped)
    cams = heatmaps("gradcam", small_cnn, small_cnn[1], x, targets)
    y, o = explanation_map_confidence(small_cnn, x, targets, cams, ImageTransform().mean, ImageTransform().std)
    deletion, insertion = deletion_insertion_curves(small_cnn, x, targets, cams, n_steps=4)
    cam_rows = rows[rows.method == "gradcam"]
    np.testing.assert_allclose(cam_rows["y"], y.numpy(), rtol=1e-5)
    np.testing.assert_allclose(cam_rows["o"], o.numpy(), rtol=1e-5)
    np.testing.assert_allclose(cam_rows["deletion_auc"], curve_auc(deletion), rtol=1e-5)
    np.testing.assert_allclose(cam_rows["insertion_auc"], curve_auc(insertion), rtol=1e-5)
    assert not np.allclose(curve_auc(deletion), curve_auc(insertion))
    table, maps = compare_occlusion_backends(small_cnn, x, targets, 5, 3)
    assert table["max_abs_diff"].max() < 1e-6 and set(maps) == {"ours", "captum"}


def test_road_columns_match_road_curves_and_do_not_depend_on_the_batch(small_cnn, tmp_path):
    """ROAD's columns of the chapter's experiment: the curves of :func:`road_curves` with the row's
    own generator (so batch 2 and batch 1 give the same rows), their means and the combined score."""
    from gradcam_lib.datasets import ImageTransform, Sample
    from gradcam_lib.experiments.occlusion import OcclusionExperiment, OcclusionSettings, _road_generator
    from gradcam_lib.methods import heatmaps
    from gradcam_lib.metrics.road import road_curves
    from gradcam_lib.models import ModelEntry

    entry = ModelEntry("tiny", small_cnn, small_cnn[1], "1", ImageTransform(), tuple("abcde"))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    samples = [Sample(x[i], (0,), torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long), f"i{i}")
               for i in range(2)]
    settings = OcclusionSettings((), ("gradcam",), patch=5, stride=3, size=4, n_steps=4, occlusion_batch=10,
                                 road_percentages=(20.0, 50.0, 80.0), seed=3)
    together = OcclusionExperiment(entry, samples, "tiny", settings).run(tmp_path / "a", batch_size=2)
    alone = OcclusionExperiment(entry, samples, "tiny", settings).run(tmp_path / "b", batch_size=1)
    road = [c for c in together.columns if c.startswith("road_")]
    assert len(road) == 3 + 2 * 3
    pd.testing.assert_frame_equal(together[road], alone[road])
    targets = small_cnn(x).argmax(1)
    cams = heatmaps("gradcam", small_cnn, small_cnn[1], x, targets)
    generator = _road_generator(3, "i1", "gradcam")
    morf = road_curves(small_cnn, x[1:], targets[1:], cams[1:], (20, 50, 80), "morf", 0.01, generator)[0]
    lerf = road_curves(small_cnn, x[1:], targets[1:], cams[1:], (20, 50, 80), "lerf", 0.01, generator)[0]
    row = together[together.image_id == "i1"].iloc[0]
    np.testing.assert_allclose([row[f"road_morf_{k}"] for k in range(3)], morf.numpy(), rtol=1e-6)
    np.testing.assert_allclose([row[f"road_lerf_{k}"] for k in range(3)], lerf.numpy(), rtol=1e-6)
    assert row["road_combined"] == pytest.approx(float((lerf - morf).mean() / 2), rel=1e-6)
    assert row["road_morf"] == pytest.approx(float(morf.mean()), rel=1e-6)
    without = OcclusionExperiment(entry, samples, "tiny", OcclusionSettings((), ("gradcam",), patch=5, stride=3,
                                                                             size=4, n_steps=4)).run(tmp_path / "c")
    assert not any(c.startswith("road_") for c in without.columns)


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


def test_prepared_rows_and_summaries_by_hand():
    """prepared_rows adds the per-image measures and one unit per image; summaries holds the tables of
    method_intervals, paired_comparison and the causal table on the same rows."""
    raw = _rows().drop(columns=["drop", "increase"]).assign(target=1)
    raw["kth_argsort"] = raw["rank_correlation"]
    rows, units = prepared_rows(raw, list(range(6)))
    assert units == {i: i for i in "abcdef"}
    np.testing.assert_allclose(rows.loc[rows.method == "gradcam", "drop"], [50.0, 0.0, 50.0, 0.0, 100 * 0.6 / 0.9, 0.0])
    names = {"gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++"}
    out = summaries(rows, units, names, "here", [("gradcam_pp", "gradcam")], ["gradcam", "gradcam_pp"],
                    ["drop", "deletion_auc"], seed=3)
    ours = out["intervals"].set_index(["method", "measure"]).loc[("gradcam", "rank_correlation")]
    assert ours["mean"] == pytest.approx(0.3) and ours["n"] == 5  # image c is NaN: dropped
    assert (ours["low"], ours["high"]) == pytest.approx(mean_ci([0.1, 0.4, 0.3, 0.2, 0.5], seed=3)[1:])
    test = out["rank_tests"].iloc[0]
    assert test["difference"] == "Grad-CAM++ - Grad-CAM" and test["mean"] == pytest.approx(0.12)  # by image, a-f less c
    drop = out["causal_tests"].loc["drop"]
    y, o = np.array([0.8, 0.5, 0.2, 0.4, 0.9, 0.6]), np.array([0.6, 0.7, 0.1, 0.5, 0.95, 0.3])  # Grad-CAM++ rows
    gc, pp = np.array([50, 0, 50, 0, 100 * 0.6 / 0.9, 0]), 100 * np.clip(1 - o / y, 0, None)
    assert drop["mean"] == pytest.approx((pp - gc).mean())
    table = out["causal_table"]
    assert table.iloc[0]["deletion AUC"].startswith("0.350 [") and table.iloc[0]["source"] == "here"
    assert out["causal_intervals"]["measure"].tolist() == ["drop", "deletion_auc"] * 2


# --------------------------------------------------------------------------- the protocols' defaults


def test_defaults_are_the_papers_settings(small_cnn):
    """Paper Sec. 4.2 / KTH: occlusion windows of 45 px at stride 1 filled with 0 (the mean), and maps
    compared at 14 x 14; RISE's ``evaluation.py``: blur ``gkern(11, 5)`` for insertion. Each default
    gives what the explicit setting gives (and differs from a neighbouring value)."""
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([2])
    default = occlusion_map(small_cnn, x, targets, stride=8)
    torch.testing.assert_close(default, occlusion_map(small_cnn, x, targets, 45, 8, 0.0))
    assert not torch.allclose(default, occlusion_map(small_cnn, x, targets, 44, 8, 0.0))
    a, b = torch.rand(56, 56, generator=torch.Generator().manual_seed(1)), torch.rand(56, 56)
    assert rank_correlation(a, b) == rank_correlation(a, b, 14) != rank_correlation(a, b, 13)
    assert argsort_correlation(a, b) == argsort_correlation(a, b, 14) != argsort_correlation(a, b, 13)
    heat = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(2))
    curves = deletion_insertion_curves(small_cnn, x, targets, heat)
    explicit = deletion_insertion_curves(small_cnn, x, targets, heat, n_steps=32, blur_kernel=11, blur_sigma=5.0)
    for ours, reference in zip(curves, explicit, strict=True):
        torch.testing.assert_close(ours, reference)
    assert curves[0].shape == (1, 33)
    other = deletion_insertion_curves(small_cnn, x, targets, heat, blur_kernel=9)[1]
    assert not torch.allclose(curves[1], other)
    torch.testing.assert_close(rise_kernel(), rise_kernel(11, 5.0))
    assert rise_kernel().shape == (11, 11)
    torch.testing.assert_close(rise_blur(x), rise_blur(x, 11, 5.0))


def test_deletion_and_insertion_differ_in_start_and_fill_by_hand():
    """One pixel image, two steps: deletion goes image -> 0, insertion blur -> image (RISE)."""
    model = _Weighted(torch.ones(1, 1, dtype=torch.float64))
    x = torch.full((1, 3, 1, 1), 2.0, dtype=torch.float64)
    deletion, insertion = deletion_insertion_curves(model, x, torch.tensor([0]), torch.ones(1, 1, 1), n_steps=1,
                                                    blur_kernel=3, blur_sigma=1.0)
    blurred = float(rise_kernel(3, 1.0)[1, 1]) * 2.0  # zero padding: only the centre weight sees the pixel
    sig = torch.sigmoid
    torch.testing.assert_close(deletion[0], sig(torch.tensor([2.0, 0.0], dtype=torch.float64)))
    torch.testing.assert_close(insertion[0], sig(torch.tensor([blurred, 2.0], dtype=torch.float64)))


def test_explanation_map_is_min_max_normalised_and_multiplies_the_pixels(small_cnn):
    """Grad-CAM++ Sec. 6.1: E = L * I with L the map scaled to [0, 1] and I the image in pixel space.
    A map with values 2, 3.5 and 5 is L = 0, 0.5, 1; E is built here by hand and fed to the model."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 2])
    heat = torch.full((2, 16, 16), 3.5)
    heat[:, :8] = 5.0
    heat[:, :, :4] = 2.0
    unit = torch.full((2, 16, 16), 0.5)
    unit[:, :8] = 1.0
    unit[:, :, :4] = 0.0
    explained = ((x * s + m) * unit[:, None] - m) / s
    with torch.no_grad():
        expected_y = torch.softmax(small_cnn(x), 1)[[0, 1], targets]
        expected_o = torch.softmax(small_cnn(explained), 1)[[0, 1], targets]
    y, o = explanation_map_confidence(small_cnn, x, targets, heat, mean, std)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(o, expected_o)
    y2, o2 = explanation_map_confidence(small_cnn, x, targets, 10 * heat - 7, mean, std)  # any affine scale
    torch.testing.assert_close(y2, expected_y)
    torch.testing.assert_close(o2, expected_o)


def test_drop_and_increase_are_computed_in_float64_from_any_input():
    """Python floats are read as float64 (not float32, which would move 0.8 by 1e-8)."""
    assert confidence_drop([0.8, 0.3], [0.3, 0.30000001]).tolist() == [100 * (0.8 - 0.3) / 0.8, 0.0]
    assert confidence_increased([0.3], [0.30000001]).tolist() == [True]  # equal in float32
    assert confidence_increased([0.30000001], [0.3]).tolist() == [False]
    assert confidence_drop(torch.tensor([0.5]), torch.tensor([0.25])).dtype == torch.float64


# ---- mutation tests: device placement, dtypes, batching, defaults and the timing table

class _Recorder(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.model(x)


def _pooled_linear() -> nn.Module:
    """A cheap seeded model (4 x 4 channel means -> 5 logits) for the 45-pixel default windows."""
    with torch.random.fork_rng():
        torch.manual_seed(5)
        return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 5)).eval()


def _captum_sizes(model, image, target, patch, stride, fill, per_eval):
    """Forward batch sizes of captum's own Occlusion on one image (the reference for the captum backend)."""
    from captum.attr import Occlusion

    recorder = _Recorder(model)
    Occlusion(lambda v: torch.softmax(recorder(v), 1)).attribute(
        image[None], sliding_window_shapes=(image.shape[0], patch, patch), strides=(image.shape[0], stride, stride),
        baselines=fill, target=target, perturbations_per_eval=per_eval)
    return recorder.sizes


def test_functions_keep_everything_on_the_images_device(small_cnn):
    """Every tensor is created on ``images.device`` and maps / targets are moved there (docstrings:
    maps and targets on another device are accepted). On the meta device any CPU tensor left in the
    computation raises, so a meta result of the right shape proves the placement."""
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    targets, maps = torch.tensor([1, 3]), torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
    model, meta = small_cnn.to("meta"), x.to("meta")
    from gradcam_lib.metrics.occlusion import class_probabilities

    probs = class_probabilities(model, meta, targets)
    assert probs.device.type == "meta" and probs.shape == (2,)
    heat = occlusion_map(model, meta, targets, patch=3, stride=2, batch_size=5)
    assert heat.device.type == "meta" and heat.shape == (2, 8, 8)
    y, o = explanation_map_confidence(model, meta, targets, maps, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert y.device.type == o.device.type == "meta" and y.shape == o.shape == (2,)
    deletion, insertion = deletion_insertion_curves(model, meta, targets, maps, n_steps=4, blur_kernel=3,
                                                    blur_sigma=1.0)
    assert deletion.device.type == insertion.device.type == "meta"
    assert deletion.shape == insertion.shape == (2, 5)


def test_targets_of_any_integer_dtype_are_class_indices(small_cnn):
    """Targets are read as class indices (``torch.long``): uint8 targets (e.g. a compact label
    array) give the same maps and curves as int64 ones; torch's gather itself refuses uint8."""
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    long_targets, small = torch.tensor([1, 3]), np.array([1, 3], dtype=np.uint8)
    for backend in ("ours", "captum"):
        torch.testing.assert_close(occlusion_map(small_cnn, x, small, 3, 2, backend=backend),
                                   occlusion_map(small_cnn, x, long_targets, 3, 2, backend=backend))
    heat = torch.rand(2, 9, 9, generator=torch.Generator().manual_seed(4))
    ours = deletion_insertion_curves(small_cnn, x, small, heat, n_steps=3, blur_kernel=3, blur_sigma=1.0)
    expected = deletion_insertion_curves(small_cnn, x, long_targets, heat, n_steps=3, blur_kernel=3, blur_sigma=1.0)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_window_rule_on_its_boundaries():
    """captum's rule at the edges: a 1-pixel patch (every pixel its own window) and a stride equal
    to the patch (windows that tile the side) are both valid."""
    assert window_starts(5, 1, 1) == [0, 1, 2, 3, 4]
    assert window_starts(10, 5, 5) == [0, 5]
    assert window_starts(11, 5, 5) == [0, 5, 10]  # ceil(6 / 5) + 1 = 3, the last one cut at the border
    with pytest.raises(ValueError, match="patch 0"):
        window_starts(5, 0, 1)


def test_batch_size_is_the_number_of_windows_per_forward_pass(small_cnn):
    """occlusion_map's docstring: ``ours`` puts ``batch_size`` (image, window) pairs, from one image or
    several, through the model at a time after one pass of the B original images; ``captum`` runs
    captum's Occlusion one image at a time with ``perturbations_per_eval=batch_size`` (captum itself
    is the reference). 2 images x 9 windows (3 x 3 patches, stride 3, on 9 x 9) in fours."""
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(6))
    targets = torch.tensor([1, 3])
    model = _Recorder(small_cnn)
    occlusion_map(model, x, targets, 3, 3, batch_size=4, backend="ours")
    assert model.sizes == [2, 4, 4, 4, 4, 2]  # 18 pairs: the third batch mixes both images
    model.sizes.clear()
    occlusion_map(model, x, targets, 3, 3, batch_size=4, backend="captum")
    expected = [s for i in range(2) for s in _captum_sizes(small_cnn, x[i], int(targets[i]), 3, 3, 0.0, 4)]
    assert model.sizes == expected and max(expected) == 4


def test_occlusion_defaults_are_stride_one_and_128_windows_per_pass():
    """Defaults (KTH: 45-pixel windows at stride 1; 128 windows per pass): a 56 x 56 image has
    12 x 12 = 144 windows, sent as 128 + 16, and the map is the explicit setting's."""
    model = _Recorder(_pooled_linear())
    x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(7))
    default = occlusion_map(model, x, torch.tensor([2]))
    assert model.sizes == [1, 128, 16]
    torch.testing.assert_close(default, occlusion_map(model, x, torch.tensor([2]), 45, 1, 0.0, 128, "ours"))


def test_deletion_default_batch_is_64_steps_per_pass():
    """deletion_insertion_curves' default ``batch_size=64``: 101 steps go through the model as 64 + 37,
    for deletion and then insertion; the curves do not depend on the batching."""
    model = _Recorder(_pooled_linear())
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(8))
    heat = torch.rand(1, 10, 10, generator=torch.Generator().manual_seed(9))
    curves = deletion_insertion_curves(model, x, torch.tensor([1]), heat, n_steps=100, blur_kernel=3, blur_sigma=1.0)
    assert model.sizes == [64, 37, 64, 37]
    other = deletion_insertion_curves(model, x, torch.tensor([1]), heat, 100, 3, 1.0, batch_size=7)
    for a, b in zip(curves, other, strict=True):
        torch.testing.assert_close(a, b)


def test_deletion_insertion_batches_several_images_per_pass():
    """Three images of 5 steps (18 inputs per curve) go through the model 8 + 8 + 2 for deletion, then
    for insertion, and give each image's curves as computed alone."""
    model = _Recorder(_pooled_linear())
    x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(12))
    heat = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(13))
    targets = torch.tensor([1, 0, 4])
    together = deletion_insertion_curves(model, x, targets, heat, 5, 3, 1.0, batch_size=8)
    assert model.sizes == [8, 8, 2, 8, 8, 2]
    for i in range(3):
        alone = deletion_insertion_curves(model, x[i:i + 1], targets[i:i + 1], heat[i:i + 1], 5, 3, 1.0)
        for a, b in zip(together, alone, strict=True):
            torch.testing.assert_close(a[i:i + 1], b)


def test_explanation_map_of_one_channel_images():
    """One-channel images (cluttered MNIST: mean 0, std 1): E = L * I pixel by pixel."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(14))
    heat = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(15))
    targets = torch.tensor([0, 2])
    y, o = explanation_map_confidence(model, x, targets, heat, (0.0,), (1.0,))
    low, high = heat.amin((1, 2), keepdim=True), heat.amax((1, 2), keepdim=True)
    with torch.no_grad():
        expected = torch.softmax(model(x * ((heat - low) / (high - low))[:, None]), 1)[[0, 1], targets]
        torch.testing.assert_close(y, torch.softmax(model(x), 1)[[0, 1], targets])
    torch.testing.assert_close(o, expected)


def test_default_blur_is_rises_gkern_11_5():
    """RISE's evaluation.py: insertion starts from the image blurred by gkern(11, 5), built here from
    scipy (gaussian_filter of a delta, then a zero-padded correlation); a model with large weights
    makes a different sigma visible."""
    gen = torch.Generator().manual_seed(10)
    w = 20 * torch.randn(12, 12, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 3, 12, 12, generator=gen, dtype=torch.float64)
    delta = np.zeros((11, 11))
    delta[5, 5] = 1.0
    blurred = ndimage.correlate(x[0, 0].numpy(), ndimage.gaussian_filter(delta, 5.0), mode="constant", cval=0.0)
    expected = 1 / (1 + np.exp(-(w.numpy() * blurred).sum()))
    insertion = deletion_insertion_curves(_Weighted(w), x, torch.tensor([0]), torch.rand(1, 12, 12), n_steps=2)[1]
    assert float(insertion[0, 0]) == pytest.approx(expected, rel=1e-10)


def test_one_channel_images_match_captum():
    """The captum backend works on one-channel images (e.g. MNIST) and equals ours: the window spans
    all channels, so any channel of captum's attribution is the map."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.linspace(-1, 1, 18).view(2, 1, 3, 3))
    x = torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(11))
    ours = occlusion_map(model, x, torch.tensor([0, 2]), 4, 2, backend="ours")
    theirs = occlusion_map(model, x, torch.tensor([0, 2]), 4, 2, backend="captum")
    assert theirs.shape == (2, 10, 10)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_probabilities_and_constant_maps_raise_no_warnings(small_cnn):
    """softmax over the class dimension is asked for explicitly (no deprecated implicit-dim warning),
    and a constant map gives NaN by rule, not through numpy's divide-by-zero RuntimeWarning."""
    import warnings

    from gradcam_lib.metrics.occlusion import class_probabilities

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(12))
    a = np.random.default_rng(2).random((4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = class_probabilities(small_cnn, x, torch.tensor([0, 4]))
        occlusion_map(small_cnn, x, torch.tensor([0, 4]), 4, 4, backend="captum")
        assert np.isnan(rank_correlation(a, np.ones((4, 4)), 4))
        assert np.isnan(rank_correlation(np.ones((4, 4)), a, 4))
    with torch.no_grad():
        expected = torch.softmax(small_cnn(x), 1)[[0, 1], [0, 4]]
    torch.testing.assert_close(probs, expected)


def test_rank_correlation_reads_any_numeric_map():
    """Maps are read as float64 whatever they hold: a long-double array (which torch cannot read), an
    integer tensor and a tensor that requires grad (e.g. a Grad-CAM map) all give scipy's Spearman."""
    rng = np.random.default_rng(13)
    a, b = rng.integers(0, 9, (6, 6)), rng.random((6, 6))
    expected = stats.spearmanr(a.ravel(), b.ravel()).statistic
    assert rank_correlation(a.astype(np.longdouble), b, 6) == pytest.approx(expected, abs=1e-12)
    assert rank_correlation(b, a.astype(np.longdouble), 6) == pytest.approx(expected, abs=1e-12)
    assert rank_correlation(torch.tensor(a), b, 6) == pytest.approx(expected, abs=1e-12)
    grad = torch.tensor(b, requires_grad=True)
    assert rank_correlation(a, grad, 6) == pytest.approx(expected, abs=1e-12)
    assert argsort_correlation(a.astype(np.longdouble), grad, 6) == pytest.approx(
        stats.spearmanr(np.argsort(a.ravel()), np.argsort(b.ravel())).statistic)


def test_rank_correlation_of_maps_with_a_range_of_exactly_one():
    """Only a constant map (range 0) is undefined; maps spanning exactly [0, 1] are ranked (by hand:
    ranks (1, 4, 3, 2) vs (1, 2, 3, 4) give rho = 1 - 6 * 8 / 60 = 0.2)."""
    a, b = np.array([[0.0, 1.0], [0.5, 0.25]]), np.array([[1.0, 2.0], [3.0, 4.0]])
    assert rank_correlation(a, b, 2) == pytest.approx(0.2)
    assert rank_correlation(b, a, 2) == pytest.approx(0.2)


def test_auc_is_computed_in_float64():
    """The trapezoid rule in float64 (np.trapezoid on the float64 values) also for float32 curves and
    for tensors that require grad."""
    curves = np.random.default_rng(14).random((2, 20001)).astype(np.float32)
    reference = np.trapezoid(curves.astype(np.float64), np.linspace(0, 1, 20001), axis=-1)
    np.testing.assert_allclose(curve_auc(curves), reference, rtol=1e-13)
    np.testing.assert_allclose(curve_auc(torch.tensor(curves)), reference, rtol=1e-13)
    grad = torch.tensor([1.0, 0.5, 0.0], requires_grad=True)
    assert float(curve_auc(grad)) == pytest.approx(0.5)


def test_compare_occlusion_backends_table_and_defaults():
    """The timing table: one row per backend with the documented columns, forwards = images x
    windows (12 x 12 windows of the default 45 px at stride 1 on 56 x 56), times inside the wall /
    CPU time of the whole call, forwards per second = forwards / seconds, and max_abs_diff the largest
    difference of the two maps, which are the backends' own (default settings, filled with 0).
    The forward passes: one untimed warm-up of a full batch (128 windows), then ours and captum once
    (repeats=1), each in its own batching."""
    import time

    net = _pooled_linear()
    model = _Recorder(net)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(15))
    targets = torch.tensor([0, 3])
    wall, cpu = time.perf_counter(), time.process_time()
    table, maps = compare_occlusion_backends(model, x, targets)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert list(table.columns) == ["backend", "images", "forwards", "seconds", "cpu_seconds", "forwards_per_s",
                                   "max_abs_diff"]
    assert table["backend"].tolist() == ["ours", "captum"] and set(maps) == {"ours", "captum"}
    assert table["images"].tolist() == [2, 2] and table["forwards"].tolist() == [288, 288]
    assert ((table["seconds"] > 0) & (table["seconds"] <= wall)).all()
    assert ((table["cpu_seconds"] >= 0) & (table["cpu_seconds"] <= cpu)).all()
    np.testing.assert_allclose(table["forwards_per_s"], 288 / table["seconds"])
    captum = [s for i in range(2) for s in _captum_sizes(net, x[i], int(targets[i]), 45, 1, 0.0, 128)]
    assert model.sizes == [128, 2, 128, 128, 32, *captum]
    explicit = occlusion_map(net, x, targets, 45, 1, 0.0)
    torch.testing.assert_close(maps["ours"], explicit)
    torch.testing.assert_close(maps["captum"], explicit, rtol=1e-5, atol=1e-7)
    assert table["max_abs_diff"].tolist() == [float((maps["ours"] - maps["captum"]).abs().max())] * 2


class _CudaIndexRule(TorchDispatchMode):
    """A dispatch mode with torch's own indexing rule for CUDA, which fake tensors skip: a CPU tensor
    cannot be indexed with CUDA indices ("indices should be either on cpu or on the same device as the
    indexed tensor (cpu)"); CPU indices into a CUDA tensor are allowed."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        indexing = (torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default)
        if func in indexing and args[0].device.type == "cpu":
            if any(i is not None and i.device.type != "cpu" for i in args[1]):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        return func(*args, **(kwargs or {}))


def test_curves_and_occlusion_stay_on_a_cuda_device_without_a_gpu(small_cnn, monkeypatch):
    """deletion_insertion_curves builds its ranks, step counts and masks on ``images.device``,
    occlusion_map its window masks, counts and targets, and class_probabilities moves the targets
    there. Meta tensors do not check the device of scatter_'s
    source or of gather's index, so this runs under torch's FakeTensorMode on a fake CUDA device (no
    GPU needed), which raises on any CPU tensor mixed in (plus torch's CUDA indexing rule, which it
    skips). The finiteness check reads values, which fake tensors do not have, so it is switched off
    here."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    import gradcam_lib.validate as validate_module
    from gradcam_lib.metrics.occlusion import class_probabilities

    monkeypatch.setattr(validate_module, "check_finite", lambda name, values: None)
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(16))
    with FakeTensorMode(allow_non_fake_inputs=True), _CudaIndexRule():
        images = torch.empty(2, 3, 8, 8, device="cuda")
        model = small_cnn.to("cuda")
        deletion, insertion = deletion_insertion_curves(model, images, torch.tensor([1, 3]), maps, n_steps=4,
                                                        blur_kernel=3, blur_sigma=1.0)
        assert deletion.device.type == insertion.device.type == "cuda"
        assert deletion.shape == insertion.shape == (2, 5)
        probs = class_probabilities(model, images, torch.tensor([1, 3]))  # CPU targets are moved to the images
        assert probs.device.type == "cuda" and probs.shape == (2,)
        heat = occlusion_map(model, images, torch.tensor([1, 3]), patch=3, stride=2, batch_size=5)
        assert heat.device.type == "cuda" and heat.shape == (2, 8, 8)

"""ROAD (gradcam_lib.metrics.road) against independent references: a scipy.sparse system written
pixel by pixel from Rong et al.'s equations, pytorch-grad-cam's ``NoisyLinearImputer`` (noise 0),
hand-computed imputations, curves and combined scores of a model on pixel sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

from gradcam_lib.metrics.road import noisy_linear_imputation, removal_masks, road_combined, road_curves

_OFFSETS = [((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
            for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def spsolve_reference(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al. Sec. 4, one equation per removed pixel i: x_i = sum_j w_ij x_j / sum_j w_ij over
    the neighbours j inside the image; built pixel by pixel and solved by spsolve. (C, H, W)."""
    _c, h, w = image.shape
    unknown = {(y, x): n for n, (y, x) in enumerate(zip(*np.nonzero(removed), strict=True))}
    system = lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), image.shape[0]))
    for (y, x), row in unknown.items():
        for (dy, dx), weight in _OFFSETS:
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w):
                continue
            system[row, row] += weight
            if (ny, nx) in unknown:
                system[row, unknown[ny, nx]] -= weight
            else:
                rhs[row] += weight * image[:, ny, nx]
    out = image.astype(np.float64).copy()
    if unknown:
        solution = np.asarray(spsolve(system.tocsc(), rhs)).reshape(len(unknown), -1)
        ys, xs = np.nonzero(removed)
        out[:, ys, xs] = solution.T
    return out


def _masks(h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    random = torch.rand(h, w, generator=generator) < 0.4
    border = torch.zeros(h, w, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True  # all four corners too
    row = torch.rand(h, w, generator=generator) < 0.2
    row[h // 2] = True  # a fully masked row
    one_known = torch.ones(h, w, dtype=torch.bool)
    one_known[h - 2, 1] = False
    return torch.stack([random, border, row, one_known])


def test_imputation_equals_the_spsolve_system():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 9, 11, generator=g)
    removed = _masks(9, 11, g)
    ours = noisy_linear_imputation(images, removed, noise=0.0)
    for i in range(4):
        reference = spsolve_reference(images[i].numpy(), removed[i].numpy())
        np.testing.assert_allclose(ours[i].numpy(), reference, atol=1e-5, rtol=0)
    assert torch.equal(ours[~removed[:, None].expand_as(images)], images[~removed[:, None].expand_as(images)])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 on scipy's spsolve result
def test_imputation_equals_pytorch_grad_cam():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    g = torch.Generator().manual_seed(4)
    images = torch.randn(4, 3, 12, 10, generator=g)
    removed = _masks(12, 10, g)
    ours = noisy_linear_imputation(images, removed, noise=0.0)
    theirs = torch.stack([road.NoisyLinearImputer(noise=0.0)(images[i], (~removed[i]).float()) for i in range(4)])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_imputation_by_hand():
    """A removed corner has 2 direct and 1 diagonal neighbour: weights renormalised by 5/12. A 1-row
    image has only left / right neighbours: a removed pixel between a and b is (a + b) / 2."""
    image = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 0, 0] = True
    out = noisy_linear_imputation(image, removed, noise=0.0)
    assert out[0, 0, 0, 0].item() == pytest.approx((1 / 6 + 3 / 6 + 4 / 12) / (5 / 12), abs=1e-6)
    row = torch.tensor([[[[1.0, 5.0, 2.0, 8.0]]]])
    gaps = torch.tensor([[[False, True, False, True]]])
    assert noisy_linear_imputation(row, gaps, noise=0.0).flatten().tolist() == pytest.approx([1, 1.5, 2, 2])
    nothing = torch.zeros(1, 1, 4, dtype=torch.bool)
    assert torch.equal(noisy_linear_imputation(row, nothing, noise=0.0), row)


def test_noise_is_seeded_scaled_and_only_on_imputed_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    removed = torch.rand(4, 32, 32, generator=g) < 0.5
    clean = noisy_linear_imputation(images, removed, noise=0.0)
    state = torch.get_rng_state()
    first = noisy_linear_imputation(images, removed, generator=torch.Generator().manual_seed(7))
    again = noisy_linear_imputation(images, removed, generator=torch.Generator().manual_seed(7))
    other = noisy_linear_imputation(images, removed, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never drawn from
    assert torch.equal(first, again) and not torch.allclose(first, other)
    inside = removed[:, None].expand_as(images)
    assert torch.equal(first[~inside], images[~inside])
    residual = (first - clean)[inside]
    assert residual.std().item() == pytest.approx(0.01, rel=0.05) and abs(residual.mean().item()) < 1e-3
    chunked_generator = torch.Generator().manual_seed(7)  # image i's noise is the i-th draw: chunks agree
    chunked = torch.cat([noisy_linear_imputation(images[i : i + 2], removed[i : i + 2], generator=chunked_generator)
                         for i in (0, 2)])
    torch.testing.assert_close(chunked, first, atol=1e-6, rtol=0)


def test_removal_order_and_ties():
    maps = torch.tensor([[[4.0, 1.0, 3.0], [2.0, 2.0, 0.0]]])  # ranks: 0, 4, 1 / 2, 3, 5 (tie: row-major)
    morf = removal_masks(maps, [100 / 6, 50, 5 / 6 * 100], "morf")[:, 0].int().tolist()
    assert morf == [[[1, 0, 0], [0, 0, 0]], [[1, 0, 1], [1, 0, 0]], [[1, 1, 1], [1, 1, 0]]]
    lerf = removal_masks(maps, [100 / 6, 50, 5 / 6 * 100], "lerf")[:, 0].int().tolist()
    assert lerf == [[[0, 0, 0], [0, 0, 1]], [[0, 1, 0], [0, 1, 1]], [[0, 1, 1], [1, 1, 1]]]
    flat = removal_masks(torch.zeros(1, 2, 2), [50], "morf")[0, 0].int().tolist()
    assert flat == [[1, 1], [0, 0]]  # ties: the earlier pixels count as more relevant
    assert removal_masks(torch.zeros(1, 2, 2), [50], "lerf")[0, 0].int().tolist() == [[0, 0], [1, 1]]
    assert removal_masks(torch.zeros(1, 3, 3), [30], "morf").sum() == math.floor(9 * 0.3)  # floor, as ROAD


class PixelSum(nn.Module):
    """Logits (sum / 10, 0): p(class 0) = sigmoid(pixel sum / 10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1) / 10
        return torch.stack([s, torch.zeros_like(s)], dim=1)


ROW = torch.tensor([[[[1.0, 5.0, 2.0, 8.0]]]])
ROW_MAP = torch.tensor([[[4.0, 1.0, 3.0, 2.0]]])  # relevance order: pixels 0, 2, 3, 1
# 1-row imputations by hand (a gap pixel is the mean of its in-row neighbours):
MORF_SUMS = [5 + 5 + 2 + 8, 5 + 5 + 6.5 + 8, 5 + 5 + 5 + 5]  # remove {0}, {0, 2}, {0, 2, 3}
LERF_SUMS = [1 + 1.5 + 2 + 8, 1 + 1.5 + 2 + 2, 1 + 1 + 1 + 1]  # remove {1}, {1, 3}, {1, 3, 2}


def test_curves_by_hand():
    model, target = PixelSum(), torch.tensor([0])
    for order, sums in (("morf", MORF_SUMS), ("lerf", LERF_SUMS)):
        curve = road_curves(model, ROW, target, ROW_MAP, (25, 50, 75), order, noise=0.0)
        assert curve.shape == (1, 3)
        expected = torch.sigmoid(torch.tensor(sums) / 10)
        torch.testing.assert_close(curve[0], expected, atol=1e-6, rtol=0)


def test_curves_do_not_depend_on_batch():
    g = torch.Generator().manual_seed(5)
    images, maps = torch.randn(3, 2, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    model, targets = PixelSum(), torch.tensor([0, 1, 0])
    one = road_curves(model, images, targets, maps, (20, 60), generator=torch.Generator().manual_seed(1), batch=1)
    many = road_curves(model, images, targets, maps, (20, 60), generator=torch.Generator().manual_seed(1), batch=64)
    torch.testing.assert_close(one, many, atol=1e-6, rtol=0)
    assert one.shape == (3, 2)


def test_combined_by_hand():
    morf = torch.sigmoid(torch.tensor(MORF_SUMS) / 10)
    lerf = torch.sigmoid(torch.tensor(LERF_SUMS) / 10)
    expected = ((lerf - morf).mean() / 2).item()
    score = road_combined(PixelSum(), ROW, torch.tensor([0]), ROW_MAP, (25, 50, 75), noise=0.0)
    assert score.shape == (1,) and score.item() == pytest.approx(expected, abs=1e-6)
    assert expected < 0  # this map ranks the pixels that raise the sum as least relevant


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(maps=torch.zeros(2, 1, 6, 6)), "maps must be"),
        (dict(maps=torch.zeros(2, 6, 5)), "maps must be"),
        (dict(maps=torch.full((2, 6, 6), float("nan"))), "maps holds NaN"),
        (dict(maps=torch.tensor([0.0, float("inf")]).repeat(36).view(2, 6, 6)), "maps holds NaN"),
        (dict(percentages=(0, 50)), "percentages must lie in"),
        (dict(percentages=(50, 100)), "percentages must lie in"),
        (dict(percentages=(-5,)), "percentages must lie in"),
        (dict(percentages=(float("nan"),)), "percentages must lie in"),
        (dict(percentages=()), "percentages must hold"),
        (dict(order="random"), "order must be"),
        (dict(targets=torch.tensor([0])), "targets must be"),
        (dict(batch=0), "batch must be"),
        (dict(images=torch.zeros(2, 6, 6)), "images must be"),
    ],
)
def test_bad_input_names_the_argument(change, message):
    arguments = dict(images=torch.zeros(2, 1, 6, 6), targets=torch.tensor([0, 1]), maps=torch.rand(2, 6, 6))
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        road_curves(PixelSum(), **arguments)


def test_bad_imputation_input():
    images = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match="removed must be"):
        noisy_linear_imputation(images, torch.zeros(1, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="every pixel"):
        noisy_linear_imputation(images, torch.ones(1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="noise must be"):
        noisy_linear_imputation(images, torch.zeros(1, 3, 3, dtype=torch.bool), noise=-0.1)
    with pytest.raises(RuntimeError, match="did not reach"):
        noisy_linear_imputation(torch.randn(1, 1, 20, 20), torch.rand(1, 20, 20) < 0.9, noise=0.0, max_iter=2)


def test_one_generator_per_image_gives_each_image_its_own_noise_stream():
    """With a generator per image, image i's imputation is the same alone or beside others, and its
    noise is the draw of its own stream (the kept pixels unchanged)."""
    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 2, 10, 12, generator=g)
    removed = torch.rand(3, 10, 12, generator=g) < 0.5

    def streams(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    together = noisy_linear_imputation(images, removed, 0.5, streams(11, 12, 13))
    alone = noisy_linear_imputation(images[1:2], removed[1:2], 0.5, streams(12))
    torch.testing.assert_close(together[1:2], alone, rtol=1e-6, atol=1e-6)
    clean = noisy_linear_imputation(images[1:2], removed[1:2], 0.0)
    expected_noise = 0.5 * torch.randn((2, 10, 12), generator=torch.Generator().manual_seed(12)) * removed[1]
    torch.testing.assert_close(alone[0] - clean[0], expected_noise.to(alone), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one per image"):
        noisy_linear_imputation(images, removed, 0.5, streams(1, 2))

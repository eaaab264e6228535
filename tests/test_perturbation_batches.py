"""The perturbed batches of occlusion (Zeiler & Fergus 2014) and of deletion / insertion (Petsiuk et
al. 2018) against straightforward references written here: one hand-built perturbed image per
window or per step, each through the model alone. Odd sizes (windows cut at the border, chunks that
split one image's windows or steps), chunk sizes that must not change the result, and the number of
tensor ops per chunk, which must not grow with the windows or steps it holds (no Python loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from gradcam_lib.metrics.deletion import deletion_insertion_curves, rise_blur
from gradcam_lib.metrics.occlusion import occlusion_map, perturbed_probabilities, window_starts

EXACT = {"rtol": 1e-12, "atol": 1e-14}  # float64 throughout: only the order of sums may differ


def _model() -> nn.Module:
    """A seeded float64 CNN whose score depends on where the pixels are (no global pooling)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                             nn.Linear(36, 5)).double().eval()


class _Recorder(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.model(x)


def _probability(model: nn.Module, image: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(torch.softmax(model(image[None]), 1)[0, target])


def _reference_occlusion(model, images, targets, patch, stride, fill) -> torch.Tensor:
    """Per window: a copy with a ``fill`` square at (top, left) (slicing cuts it at the border), the
    drop of p(target), added to the pixels it covers; each pixel's sum over its window count."""
    maps = []
    for image, target in zip(images, targets.tolist(), strict=True):
        total, count = torch.zeros(image.shape[1:], dtype=torch.float64), torch.zeros(image.shape[1:])
        base = _probability(model, image, target)
        for top in window_starts(image.shape[1], patch, stride):
            for left in window_starts(image.shape[2], patch, stride):
                occluded = image.clone()
                occluded[:, top:top + patch, left:left + patch] = fill
                total[top:top + patch, left:left + patch] += base - _probability(model, occluded, target)
                count[top:top + patch, left:left + patch] += 1
        maps.append(total / count)
    return torch.stack(maps)


def _reference_curves(model, images, targets, maps, n_steps, klen, sigma) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step k: the first round(k H W / n_steps) pixels of numpy's stable descending order set to
    0 (deletion) or put back into the blurred image (insertion)."""
    blurred = rise_blur(images, klen, sigma)
    curves: tuple[list, list] = ([], [])
    for i, target in enumerate(targets.tolist()):
        order = torch.from_numpy(np.argsort(-maps[i].numpy().ravel(), kind="stable"))
        pixels = maps[i].numel()
        for curve, start, fill in ((curves[0], images[i], torch.zeros_like(images[i])),
                                   (curves[1], blurred[i], images[i])):
            for k in range(n_steps + 1):
                first = order[: int(np.round(k * pixels / n_steps))]
                step = start.clone().flatten(1)
                step[:, first] = fill.flatten(1)[:, first]
                curve.append(_probability(model, step.view_as(start), target))
    shape = (len(images), n_steps + 1)
    return tuple(torch.tensor(c, dtype=torch.float64).view(shape) for c in curves)


# (H, W, patch, stride): windows that divide the side, that are cut at the border, stride = patch,
# stride 1, and a side equal to the patch, where any stride (here 9 > 5) gives its one window.
OCCLUSION_CASES = [(12, 12, 4, 2), (13, 17, 5, 3), (11, 9, 4, 4), (7, 10, 3, 1), (5, 12, 5, 9)]


@pytest.mark.parametrize("height, width, patch, stride", OCCLUSION_CASES[:4])
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_occlusion_equals_one_window_at_a_time(height, width, patch, stride, batch_size):
    model = _model()
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height), dtype=torch.float64)
    targets = torch.tensor([1, 3])
    expected = _reference_occlusion(model, x, targets, patch, stride, -0.7)
    assert expected.abs().amax((1, 2)).min() > 1e-4  # both maps carry signal: equality is not vacuous
    torch.testing.assert_close(occlusion_map(model, x, targets, patch, stride, -0.7, batch_size), expected, **EXACT)


def test_occlusion_stride_beyond_the_patch():
    """Along a side equal to the patch there is one window whatever the stride; along a longer side
    a stride beyond the patch would leave pixels never occluded, and is refused."""
    model = _model()
    x = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    heat = occlusion_map(model, x, torch.tensor([2]), 5, 9, 0.0, 3)
    torch.testing.assert_close(heat, _reference_occlusion(model, x, torch.tensor([2]), 5, 9, 0.0), **EXACT)
    assert torch.unique(heat).numel() == 1  # one window covering everything: one drop everywhere
    with pytest.raises(ValueError, match="stride 9"):
        occlusion_map(model, torch.zeros(1, 3, 5, 12, dtype=torch.float64), torch.tensor([2]), 5, 9)


def test_occlusion_chunks_split_images_and_do_not_change_the_map():
    """3 images x 20 windows (13 x 17, patch 5, stride 3: 4 x 5 windows, the last row and column
    cut at the border) in chunks of 7: after one pass of the 3 originals, 60 pairs as 8 x 7 + 4,
    chunks holding windows of two images; the map is that of one chunk and of one pair per pass."""
    model = _Recorder(_model())
    x = torch.randn(3, 3, 13, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    targets = torch.tensor([0, 4, 2])
    maps = {}
    for batch_size in (1, 7, 60):
        model.sizes.clear()
        maps[batch_size] = occlusion_map(model, x, targets, 5, 3, 0.3, batch_size)
        assert model.sizes == [3] + [batch_size] * (60 // batch_size) + ([60 % batch_size] if 60 % batch_size else [])
    torch.testing.assert_close(maps[7], maps[60], **EXACT)
    torch.testing.assert_close(maps[1], maps[60], **EXACT)
    torch.testing.assert_close(maps[7], _reference_occlusion(model.model, x, targets, 5, 3, 0.3), **EXACT)


@pytest.mark.parametrize("height, width, n_steps", [(7, 11, 5), (9, 9, 9), (6, 13, 1)])
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_curves_equal_one_step_at_a_time(height, width, n_steps, batch_size):
    """Two images, one map with ties (a plateau of equal values: the stable order decides)."""
    model = _model()
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(2, 3, height, width, generator=gen, dtype=torch.float64)
    maps = torch.rand(2, height, width, generator=gen, dtype=torch.float64)
    maps[1, : height // 2] = 0.5
    targets = torch.tensor([4, 1])
    expected = _reference_curves(model, x, targets, maps, n_steps, 3, 1.0)
    assert (expected[0][:, 0] != expected[0][:, -1]).all() and (expected[1][:, 0] != expected[1][:, -1]).all()
    curves = deletion_insertion_curves(model, x, targets, maps, n_steps, 3, 1.0, batch_size)
    for ours, theirs in zip(curves, expected, strict=True):
        torch.testing.assert_close(ours, theirs, **EXACT)


def test_curve_chunks_split_images_and_do_not_change_the_curves():
    """3 images x 6 points in chunks of 4: 18 inputs per curve as 4 + 4 + 4 + 4 + 2 (deletion, then
    insertion), chunks holding steps of two images; curves equal those of one chunk per curve."""
    model = _Recorder(_model())
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 3, 7, 11, generator=gen, dtype=torch.float64)
    maps = torch.rand(3, 7, 11, generator=gen, dtype=torch.float64)
    targets = torch.tensor([0, 2, 3])
    split = deletion_insertion_curves(model, x, targets, maps, 5, 3, 1.0, batch_size=4)
    assert model.sizes == [4, 4, 4, 4, 2] * 2
    whole = deletion_insertion_curves(model.model, x, targets, maps, 5, 3, 1.0, batch_size=18)
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, **EXACT)


def test_an_empty_chunk_list_gives_an_empty_result():
    probabilities = perturbed_probabilities(_model(), 0, 4, lambda index: (torch.zeros(0, 3, 5, 5), index),
                                            torch.device("cpu"))
    assert probabilities.shape == (0,)


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops(fn) -> int:
    with _OpCounter() as counter:
        fn()
    return counter.count


def test_a_chunk_costs_the_same_ops_whatever_its_windows_or_steps():
    """One chunk of 4 windows and one of 64 (occlusion), or of 4 steps and of 40 (deletion /
    insertion), dispatch the same number of tensor ops: the perturbed batch is built by broadcast
    and indexing, not by a Python loop over the windows or steps it holds."""
    model = _model()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    targets = torch.tensor([1])
    few = _ops(lambda: occlusion_map(model, x, targets, 8, 8, 0.0, 1000))  # 2 x 2 windows
    many = _ops(lambda: occlusion_map(model, x, targets, 2, 2, 0.0, 1000))  # 8 x 8 windows
    assert few == many
    heat = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    few = _ops(lambda: deletion_insertion_curves(model, x, targets, heat, 3, 3, 1.0, 1000))
    many = _ops(lambda: deletion_insertion_curves(model, x, targets, heat, 39, 3, 1.0, 1000))
    assert few == many

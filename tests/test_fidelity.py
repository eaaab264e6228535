"""Fidelity and contrastivity against KTH's numpy formulas and closed forms on linear models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_lib.fidelity import (
    attribution_maps,
    contrastivity,
    deep_shap_top1,
    evaluate_fidelity,
    fidelity,
    mask_images,
    positive_percentile_mask,
    random_masks_like,
)


def _kth_mask(heatmap: np.ndarray, percentile: float) -> np.ndarray:
    """KTH's binarisation (contrastivity_and_fidelity.py), transcribed."""
    if heatmap.max() <= 0:
        return np.zeros_like(heatmap, dtype=bool)
    threshold = np.percentile(heatmap[np.nonzero(heatmap > 0)], percentile)
    return heatmap > threshold


def _kth_contrastivity(masks: np.ndarray, target: int) -> float:
    total = 0.0
    for j in range(masks.shape[0]):
        if j == target:
            continue
        union = np.count_nonzero(np.logical_or(masks[target], masks[j]))
        total += 0 if union == 0 else np.count_nonzero(masks[target] != masks[j]) / union
    return total / (masks.shape[0] - 1)


@pytest.mark.parametrize("p", [1, 10, 50])
def test_mask_matches_kths_numpy_rule(p):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 3, 9, 7))
    maps[1, 2] = -np.abs(maps[1, 2])  # no positive value
    ours = positive_percentile_mask(torch.from_numpy(maps), p).numpy()
    for index in np.ndindex(4, 3):
        np.testing.assert_array_equal(ours[index], _kth_mask(maps[index], p))
    assert not ours[1, 2].any()


def test_mask_rejects_nan_and_bad_percentiles():
    with pytest.raises(ValueError):
        positive_percentile_mask(torch.full((1, 2, 2), float("nan")), 10)
    with pytest.raises(ValueError):
        positive_percentile_mask(torch.ones(1, 2, 2), 101)


def test_contrastivity_matches_kth_and_hand_cases():
    rng = np.random.default_rng(1)
    masks = rng.random((5, 10, 6, 6)) > 0.6
    masks[0, 3] = False
    masks[0, 0] = False  # empty own mask: unions with empty masks count 0
    targets = rng.integers(0, 10, 5)
    ours = contrastivity(torch.from_numpy(masks), torch.from_numpy(targets)).numpy()
    np.testing.assert_allclose(ours, [_kth_contrastivity(masks[i], targets[i]) for i in range(5)])
    a = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    a[0, 0, 0, 0], a[0, 1, 1, 1] = True, True
    assert contrastivity(a).item() == 1.0  # disjoint
    assert contrastivity(a[:, [0, 0]]).item() == 0.0  # identical


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)  # a layer for the Grad-CAM argument
        self.fc = nn.Linear(4, 3)
        torch.manual_seed(0)
        nn.init.normal_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_fidelity_is_the_probability_drop_by_hand():
    model = _Linear().eval()
    images = torch.rand(2, 1, 2, 2)
    masks = torch.tensor([[[True, False], [False, False]], [[False, False], [True, True]]])
    targets = torch.tensor([2, 0])
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    expected = []
    for image, mask, t in zip(images, masks, targets):
        x = image.flatten()
        x_masked = torch.where(mask.flatten(), torch.tensor(0.5), x)
        expected.append(torch.softmax(w @ x + b, 0)[t] - torch.softmax(w @ x_masked + b, 0)[t])
    torch.testing.assert_close(fidelity(model, images, targets, masks, fill=0.5), torch.stack(expected))
    torch.testing.assert_close(mask_images(images, masks, 0.5)[0, 0, 0, 0], torch.tensor(0.5))


def test_random_masks_keep_the_size():
    masks = torch.rand(3, 2, 5, 5) > 0.7
    rand = random_masks_like(masks, seed=4)
    assert (rand.flatten(-2).sum(-1) == masks.flatten(-2).sum(-1)).all()
    assert torch.equal(rand, random_masks_like(masks, seed=4)) and not torch.equal(rand, masks)


def test_ig_map_is_input_times_weight_summed_over_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).eval()
    images = torch.randn(2, 2, 3, 3)
    classes = torch.tensor([[1, 3], [0, 2]])
    maps = attribution_maps("ig", model, model[1], images, classes, ig_steps=8)
    w = model[1].weight.detach().view(4, 2, 3, 3)
    expected = torch.stack([torch.stack([(images[b] * w[c]).sum(0) for c in row]) for b, row in enumerate(classes.tolist())])
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError):
        attribution_maps("lime", model, model[1], images, classes)


def test_deep_shap_of_a_linear_model_is_weight_times_distance_to_background_mean():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 3)).eval()
    images, background = torch.randn(2, 1, 3, 3), torch.randn(8, 1, 3, 3)
    maps, top = deep_shap_top1(model, images, background)
    with torch.no_grad():
        assert top.tolist() == model(images).argmax(1).tolist()
    w = model[1].weight.detach().view(3, 3, 3)
    expected = torch.stack([(images[i, 0] - background.mean(0)[0]) * w[top[i]] for i in range(2)])
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def test_evaluate_fidelity_rows():
    model = _Linear().eval()
    images = torch.rand(3, 1, 2, 2)
    rows = evaluate_fidelity(model, model.conv, images, "ig", (1, 10), n_classes=3, ig_steps=4)
    assert len(rows) == 6 and set(rows["percentile"]) == {1, 10}
    assert rows["contrastivity"].between(0, 1).all() and rows["kept"].between(0, 1).all()

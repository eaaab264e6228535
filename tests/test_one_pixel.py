"""One-pixel attack: the DE solver against scipy, the attack against a brute-force search and
torchattacks, the painting against torchvision's normalisation, map read-outs by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import differential_evolution as scipy_de
from torch import nn
from torchvision.transforms.v2 import functional as TF

from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from gradcam_lib.explain import grad_cam
from gradcam_lib.one_pixel import (
    DEConfig,
    decode_pixels,
    differential_evolution,
    map_value_at,
    one_pixel_attack,
    paint_pixels,
    sensitivity_rows,
    torchattacks_one_pixel,
)

CENTRES = torch.tensor([[0.2, 0.7, 0.4], [0.9, 0.1, 0.5]])


def _shifted_sphere(population: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    energy = ((population - CENTRES[rows][:, None]) ** 2).sum(-1)
    return energy, torch.zeros_like(energy, dtype=torch.bool)


@pytest.mark.parametrize("strategy,init", [("best1", "random"), ("rand1", "latinhypercube")])
def test_de_finds_the_same_minimum_as_scipy(strategy, init):
    config = DEConfig(popsize=30, maxiter=60, strategy=strategy, init=init, recombination=0.7)
    ours = differential_evolution(_shifted_sphere, 2, 3, config, seed=1)
    for b in range(2):
        centre = CENTRES[b].double().numpy()
        reference = scipy_de(lambda u: float(((u - centre) ** 2).sum()), [(0, 1)] * 3, seed=1, popsize=10,
                             maxiter=60, polish=False, tol=0)
        np.testing.assert_allclose(ours.x[b].numpy(), reference.x, atol=0.03)
    assert (ours.energy < 1e-3).all() and not ours.done.any()
    assert (ours.evaluations == 30 * 61).all() and (ours.generations == 60).all()


def test_de_is_seeded_and_stops_a_problem_when_done():
    def objective(population, rows):
        energy = ((population - 0.5) ** 2).sum(-1)
        return energy, (energy < 0.05) & (rows[:, None] == 0)

    config = DEConfig(popsize=20, maxiter=30)
    first, second = (differential_evolution(objective, 2, 2, config, seed=3) for _ in range(2))
    torch.testing.assert_close(first.x, second.x)
    assert first.done.tolist() == [True, False]
    assert first.generations[0] < first.generations[1] == 30
    assert ((first.x[0] - 0.5) ** 2).sum() < 0.05


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError):
        DEConfig(popsize=3)
    with pytest.raises(ValueError):
        DEConfig(strategy="best2")
    with pytest.raises(ValueError):
        DEConfig(recombination=1.5)


class _OnePixelFlips(nn.Module):
    """Two classes on 1 x 5 x 6 images: class 0 has logit 1; class 1 has logit 3 * pixel (row 2,
    column 4). Only that pixel, brighter than 1/3, flips the prediction of a black image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = torch.ones(len(x), device=x.device)
        return torch.stack([one, 3 * self.conv(x)[:, 0, 2, 4]], dim=1)


def _brute_force(model: nn.Module, image: torch.Tensor) -> list[tuple[int, int]]:
    """Every (x, y) whose pixel, set to black or white, flips the prediction (a linear model's
    optimum lies at a corner of the colour cube)."""
    label = model(image[None]).argmax(1)
    found = []
    for y in range(image.shape[1]):
        for x in range(image.shape[2]):
            for value in (0.0, 1.0):
                painted = image.clone()
                painted[:, y, x] = value
                if model(painted[None]).argmax(1) != label:
                    found.append((x, y))
    return sorted(set(found))


def test_attack_finds_the_only_flipping_pixel_found_by_brute_force():
    model = _OnePixelFlips().eval()
    images = torch.zeros(3, 1, 5, 6)
    with torch.no_grad():
        assert _brute_force(model, images[0]) == [(4, 2)]
    result = one_pixel_attack(model, images, (0.0,), (1.0,), DEConfig(popsize=30, maxiter=40), seed=0)
    assert result.success.all()
    assert result.x.tolist() == [4] * 3 and result.y.tolist() == [2] * 3
    assert (result.colour[:, 0] > 1 / 3).all()
    assert (result.class_before == 0).all() and (result.class_after == 1).all()
    assert (result.queries <= 30 * 41 + 1).all()


def test_torchattacks_agrees_on_the_toy_model():
    model = _OnePixelFlips().eval()
    images = torch.zeros(2, 1, 5, 6)
    theirs = torchattacks_one_pixel(model, images, (0.0,), (1.0,), popsize=30, maxiter=40)
    assert theirs.success.all() and theirs.x.tolist() == [4, 4] and theirs.y.tolist() == [2, 2]


def test_paint_uses_the_models_own_normalisation():
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images = TF.normalize(pixels, list(IMAGENET_MEAN), list(IMAGENET_STD))
    x, y = torch.tensor([1, 7]), torch.tensor([5, 0])
    colour = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]])
    painted = paint_pixels(images, x, y, colour, IMAGENET_MEAN, IMAGENET_STD)
    expected_pixels = pixels.clone()
    expected_pixels[0, :, 5, 1] = colour[0]
    expected_pixels[1, :, 0, 7] = colour[1]
    expected = TF.normalize(expected_pixels, list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(painted, expected)
    assert IMAGENET_STD[2] == 0.225  # KTH normalised the attack pixel's blue with 0.224
    torch.testing.assert_close(painted[0, 2, 5, 1], torch.tensor((0.9 - 0.406) / 0.225))
    torch.testing.assert_close(images, TF.normalize(pixels, list(IMAGENET_MEAN), list(IMAGENET_STD)))  # untouched


def test_decode_maps_the_unit_cube_onto_pixels():
    u = torch.tensor([[0.0, 0.0, 0.1], [0.999, 0.5, 0.7], [1.0, 1.0, 1.2]])
    x, y, colour = decode_pixels(u, height=4, width=6)
    assert x.tolist() == [0, 5, 5] and y.tolist() == [0, 2, 3]
    torch.testing.assert_close(colour[:, 0], torch.tensor([0.1, 0.7, 1.0]))


def test_map_value_and_percentile_rank_by_hand():
    maps = torch.tensor([[[0.0, 0.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 5.0]]])
    values, ranks = map_value_at(maps, torch.tensor([1, 0]), torch.tensor([1, 0]))
    torch.testing.assert_close(values, torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(ranks, torch.tensor([75.0, 0.0]))
    values, ranks = map_value_at(maps[:1], torch.tensor([0]), torch.tensor([0]))
    assert values.item() == 0 and ranks.item() == 0


def test_sensitivity_reads_grad_cam_at_the_attacked_pixel():
    from gradcam_lib.mnist import least_confident, load_mnist_cnn, mnist_split

    model = load_mnist_cnn()
    _, test = mnist_split()
    images = test.images[least_confident(model, test, 4)]
    result = one_pixel_attack(model, images, (0.0,), (1.0,), DEConfig(popsize=30, maxiter=10), seed=0)
    rows = sensitivity_rows(model, model.conv, images, result, (0.0,), (1.0,))
    assert 0 < len(rows) == int(result.success.sum())
    for row in rows:
        i = row["index"]
        painted = paint_pixels(images[i : i + 1], result.x[i : i + 1], result.y[i : i + 1], result.colour[i : i + 1],
                               (0.0,), (1.0,))
        for when, picture, cls in (("before", images[i : i + 1], result.class_before), ("after", painted, result.class_after)):
            heat = grad_cam(model, model.conv, picture, cls[i : i + 1])[0]
            assert row[f"{when}_value"] == pytest.approx(float(heat[result.y[i], result.x[i]]), abs=1e-7)

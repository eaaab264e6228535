"""gradcam_lib.attacks against hand-written FGSM / PGD steps, closed forms and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.attacks import (
    COLUMNS,
    AttackSpec,
    PixelSpaceModel,
    _box_iou,
    attack_batch,
    attack_success,
    attack_table,
    clean_pointing,
    correctly_classified,
    evaluate_attacks,
    points_at,
    random_targets,
    run_attack,
    to_pixels,
)
from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from gradcam_lib.models import ModelEntry


@pytest.fixture(scope="module")
def tiny() -> PixelSpaceModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    return PixelSpaceModel(net, IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    x[0, :, :3] = 0.0  # pixels on the border of [0, 1], where clipping must act
    x[1, :, -3:] = 1.0
    return x


def _input_grad(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), labels), x)[0]


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_is_one_signed_gradient_step(tiny, pixels, targeted):
    labels = torch.tensor([0, 1, 2, 3])
    eps = 8 / 255
    step = -1.0 if targeted else 1.0  # targeted: descend the loss of the target
    expected = (pixels + step * eps * _input_grad(tiny, pixels, labels).sign()).clamp(0, 1)
    got = run_attack(tiny, pixels, labels, AttackSpec("fgsm", eps, targeted))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_equals_hand_written_madry_pgd_with_the_same_start(tiny, pixels, targeted):
    labels = torch.tensor([4, 3, 2, 1])
    spec = AttackSpec("pgd", 4 / 255, targeted, steps=4)
    torch.manual_seed(123)
    x = (pixels + torch.empty_like(pixels).uniform_(-spec.eps, spec.eps)).clamp(0, 1)
    for _ in range(spec.steps):
        g = _input_grad(tiny, x, labels)
        x = x + (-1.0 if targeted else 1.0) * spec.step_size * g.sign()
        x = (pixels + (x - pixels).clamp(-spec.eps, spec.eps)).clamp(0, 1)
    got = run_attack(tiny, pixels, labels, spec, seed=123)
    assert spec.step_size == pytest.approx(2.5 * spec.eps / spec.steps)
    torch.testing.assert_close(got, x, rtol=0, atol=1e-6)


def test_pgd_stays_in_the_eps_ball_and_in_pixel_range(tiny, pixels):
    labels = torch.tensor([0, 1, 2, 3])
    for spec in (AttackSpec("pgd", 8 / 255, steps=10, alpha=4 / 255), AttackSpec("pgd", 2 / 255, True, steps=7)):
        adv = run_attack(tiny, pixels, labels, spec, seed=5)
        assert (adv - pixels).abs().max() <= spec.eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv != pixels).any()


def test_seeded_start_leaves_the_global_rng_and_the_model_alone(tiny, pixels):
    labels = torch.tensor([0, 1, 2, 3])
    spec = AttackSpec("pgd", 4 / 255, steps=2)
    tiny.train()
    state = torch.get_rng_state()
    first = run_attack(tiny, pixels, labels, spec, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first, run_attack(tiny, pixels, labels, spec, seed=7))
    assert not torch.equal(first, run_attack(tiny, pixels, labels, spec, seed=8))
    assert tiny.training and all(p.requires_grad for p in tiny.parameters())
    tiny.eval()


def test_bad_settings_are_refused(tiny, pixels):
    with pytest.raises(ValueError, match="unknown attack"):
        AttackSpec("cw", 0.1)
    with pytest.raises(ValueError, match="pixel units"):
        AttackSpec("fgsm", 2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run_attack(tiny, pixels * 2 - 1, torch.zeros(4, dtype=torch.long), AttackSpec("fgsm", 0.1))
    with pytest.raises(ValueError, match="parameters"):
        run_attack(nn.Flatten(), pixels, torch.zeros(4, dtype=torch.long), AttackSpec("fgsm", 0.1))


def test_pixel_space_wrapper_is_the_model_behind_its_normalisation(tiny):
    transform = ImageTransform()
    raw = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    normalised = transform.normalise(raw)
    pixels = to_pixels(normalised, transform.mean, transform.std)
    torch.testing.assert_close(pixels, raw.float() / 255, rtol=0, atol=1e-6)
    torch.testing.assert_close(tiny(pixels), tiny.model(normalised), rtol=0, atol=1e-5)
    torch.testing.assert_close(tiny.normalise(pixels), normalised, rtol=0, atol=1e-5)


def test_success_bookkeeping_by_hand():
    true = torch.tensor([1, 2, 3, 4])
    new = torch.tensor([1, 5, 3, 9])
    assert attack_success(new, true).tolist() == [False, True, False, True]
    assert attack_success(new, true, torch.tensor([1, 5, 7, 8])).tolist() == [True, True, False, False]


def test_random_targets_are_fixed_per_image_and_never_the_true_class():
    true = torch.arange(200) % 3
    ids = [f"img{i}" for i in range(200)]
    targets = random_targets(true, ids, 3, seed=0)
    assert (targets != true).all() and targets.min() >= 0 and targets.max() <= 2
    assert {0, 1, 2} == set(targets.tolist())
    order = list(reversed(range(200)))  # another batch order: the same target per image
    assert torch.equal(random_targets(true[order], [ids[i] for i in order], 3, seed=0), targets[order])
    assert not torch.equal(random_targets(true, ids, 3, seed=1), targets)


def test_box_iou_of_two_maps_and_of_a_vanished_map():
    a = torch.zeros(20, 20)
    a[2:6, 2:6] = 1.0  # box (2, 2, 5, 5)
    b = torch.zeros(20, 20)
    b[4:8, 2:6] = 1.0  # box (2, 4, 5, 7): 8 shared pixels of 24
    assert _box_iou(a, b, 0.15) == pytest.approx(8 / 24)
    assert _box_iou(a, torch.zeros(20, 20), 0.15) == 0.0
    assert math.isnan(_box_iou(torch.zeros(20, 20), torch.zeros(20, 20), 0.15))


def test_pointing_with_a_15_pixel_tolerance_and_without_a_box():
    heat = torch.zeros(50, 50)
    heat[10, 30] = 1.0  # maximum at x = 30, y = 10
    assert points_at(heat, torch.tensor([[0, 0, 14, 9]])) == 0.0  # 16 px left, 1 px up
    assert points_at(heat, torch.tensor([[0, 0, 15, 25]])) == 1.0  # exactly 15 px
    assert points_at(heat, torch.tensor([[0, 0, 20, 0]])) == 1.0  # sqrt(200) ~ 14.1 px
    assert points_at(heat, torch.tensor([[0, 0, 20, 0], [40, 40, 49, 49]]), tolerance=0) == 0.0
    assert points_at(torch.zeros(50, 50), torch.tensor([[0, 0, 9, 9]])) == 0.0  # points nowhere: a miss
    assert math.isnan(points_at(heat, torch.zeros((0, 4), dtype=torch.long)))  # nothing to point at


class ChannelMeans(nn.Module):
    """logit_c = mean of pixel channel c: the FGSM step and the Grad-CAM maps are known by hand.
    (A unit scale parameter: torchattacks reads the device from the model's parameters.)"""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(-2, -1)) * self.scale


def _means_entry() -> ModelEntry:
    model = ChannelMeans()
    transform = ImageTransform(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # pixels = model input
    return ModelEntry("means", model, model.features, "features", transform, ("a", "b", "c"))


def _means_samples() -> list[Sample]:
    image = torch.empty(3, 10, 10)
    steps = torch.arange(10.0) - 4.5
    image[0] = 0.5 + 0.002 * steps + 0.0002 * steps[:, None]  # a faint ramp: no two pixels tie
    image[0, 2:7, 3:8] += 0.4  # channel 0: mean ~0.6, a bright square at x 3..7, y 2..6
    image[1] = 0.5
    image[2] = 0.1
    square = torch.tensor([[3, 2, 7, 6]])
    right = Sample(image, (0,), square, torch.tensor([0]), "right")
    wrong = Sample(image, (2,), square, torch.tensor([2]), "wrong")
    return [right, wrong]


def test_attack_batch_bookkeeping_on_a_model_known_by_hand():
    entry = _means_entry()
    samples = _means_samples()
    images = torch.stack([s.image for s in samples])
    specs = [AttackSpec("fgsm", 0.1), AttackSpec("fgsm", 0.01), AttackSpec("fgsm", 0.1, targeted=True)]
    raw = attack_batch(entry, images, samples, specs, ("gradcam",), tolerance=0)
    assert all(list(row) == list(COLUMNS) for row in raw)  # batches append to one CSV without a header
    rows = pd.DataFrame(raw)
    none = rows[rows.attack == "none"]
    assert none[["image_id", "attacked", "true_class"]].values.tolist() == [["wrong", False, 0], ["right", True, 0]]
    assert none.points_before.tolist()[1] == 1.0  # clean baseline: the map peaks on the square
    attacked = rows[rows.attack != "none"]
    assert set(attacked.image_id) == {"right"}
    # FGSM 0.1: channel 0 falls by 0.1 (mean 0.5), channels 1 and 2 rise (0.6, 0.2): class 1 wins.
    big = attacked[(attacked.eps == 0.1) & (attacked["mode"] == "untargeted")].iloc[0]
    assert (big.success, big.new_class, big.target, big.linf) == (True, 1, -1, pytest.approx(0.1))
    # the true-class map only shifts by a constant: same ranks, same 15 % box (the whole image)
    # (on ties, float rounding in the resize would decide the ranks: hence the ramp)
    assert big.rank_corr == pytest.approx(1.0, abs=1e-4) and big.box_iou == pytest.approx(1.0)
    # true-class maps peak on the square; class 1's map is flat, its argmax is pixel (0, 0): a miss
    assert (big.points_before, big.points_after_true, big.points_new, big.vanished) == (1.0, 1.0, 0.0, 0.0)
    small = attacked[attacked.eps == 0.01].iloc[0]  # 0.59 vs 0.51: no change
    assert not small.success and small.new_class == 0 and not small.explained and math.isnan(small.rank_corr)
    # targeted: the target channel rises by 0.1, the others fall -- success only for target 1
    target = int(random_targets(torch.tensor([0]), ["right"], 3)[0])
    hit = attacked[attacked["mode"] == "targeted"].iloc[0]
    assert hit.target == target and hit.success == (target == 1)


def test_table_averages_successes_only_and_counts_images(tmp_path):
    entry = _means_entry()
    dataset = _means_samples()
    assert correctly_classified(entry, dataset) == [0]
    specs = [AttackSpec("fgsm", 0.1), AttackSpec("fgsm", 0.01)]
    # batch_size 1: the misclassified image's batch has no attack rows, yet its columns line up
    run = lambda: evaluate_attacks(entry, dataset, "hand", tmp_path, specs, ("gradcam",), batch_size=1, tolerance=0)
    rows, again = run(), run()
    pd.testing.assert_frame_equal(rows, again)  # read back from the CSV, nothing recomputed
    table = attack_table(rows).set_index("eps")
    assert table.loc[0.1, ["images", "successes", "success_pct", "rank_corr", "points_new"]].tolist() == [
        1, 1, 100.0, pytest.approx(1.0, abs=1e-4), 0.0]
    assert table.loc[0.01, ["images", "successes", "success_pct"]].tolist() == [1, 0, 0.0]
    assert np.isnan(table.loc[0.01, "rank_corr"])
    assert clean_pointing(rows)[["method", "images", "points_before"]].values.tolist() == [["gradcam", 1, 100.0]]

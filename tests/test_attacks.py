"""FGSM / PGD (attacks.adversarial), the chapter's experiment (experiments.adversarial), the map
comparisons (metrics.stability) and the report's intervals (report.adversarial) against hand-written
FGSM / PGD steps, closed forms and hand-made cases."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from toy_models import means_entry

from gradcam_lib.attacks.adversarial import (
    AttackSpec,
    PixelSpaceModel,
    attack_and_explain,
    attack_success,
    random_targets,
    run_attack,
    to_pixels,
)
from gradcam_lib.datasets import build_dataset
from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from gradcam_lib.experiments.adversarial import (
    COLUMNS,
    AdversarialExperiment,
    AdversarialSettings,
    correctly_classified,
    photograph_of,
    with_clusters,
)
from gradcam_lib.metrics.stability import box_iou, points_at
from gradcam_lib.models import ModelEntry
from gradcam_lib.report.adversarial import attack_table, clean_pointing, compare_settings, paired_outcomes
from gradcam_lib.stats import MIN_UNITS, effective_units, mean_interval, share_interval, wilson_bounds


def batch_rows(entry: ModelEntry, images: torch.Tensor, samples: list[Sample], specs: list[AttackSpec],
                 methods: tuple[str, ...] = ("gradcam", "guided_backprop"), tolerance: float = 15.0) -> list[dict]:
    """The rows of one batch, as the experiment computes them (:meth:`AdversarialExperiment.batch`)."""
    settings = AdversarialSettings(tuple(specs), tuple(methods), tolerance=tolerance)
    return AdversarialExperiment(entry, samples, "batch", settings).batch(images, samples)


def run_experiment(entry: ModelEntry, dataset: list[Sample], name: str, results_dir, specs: list[AttackSpec],
                     methods: tuple[str, ...] = ("gradcam", "guided_backprop"), batch_size: int = 8,
                     tolerance: float = 15.0) -> pd.DataFrame:
    """A whole resumable run of :class:`AdversarialExperiment`."""
    settings = AdversarialSettings(tuple(specs), tuple(methods), tolerance=tolerance)
    return AdversarialExperiment(entry, dataset, name, settings).run(results_dir, batch_size=batch_size)


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
    assert box_iou(a, b, 0.15) == pytest.approx(8 / 24)
    assert box_iou(a, torch.zeros(20, 20), 0.15) == 0.0
    assert math.isnan(box_iou(torch.zeros(20, 20), torch.zeros(20, 20), 0.15))


def test_pointing_with_a_15_pixel_tolerance_and_without_a_box():
    heat = torch.zeros(50, 50)
    heat[10, 30] = 1.0  # maximum at x = 30, y = 10
    assert points_at(heat, torch.tensor([[0, 0, 14, 9]])) == 0.0  # 16 px left, 1 px up
    assert points_at(heat, torch.tensor([[0, 0, 15, 25]])) == 0.0  # exactly 15 px: TorchRay's test is strict
    assert points_at(heat, torch.tensor([[0, 0, 16, 25]])) == 1.0  # 14 px
    assert points_at(heat, torch.tensor([[0, 0, 20, 0]])) == 1.0  # sqrt(200) ~ 14.1 px
    assert points_at(heat, torch.tensor([[0, 0, 20, 0], [40, 40, 49, 49]]), tolerance=1) == 0.0  # inside only
    assert points_at(heat, torch.tensor([[25, 5, 35, 15]]), tolerance=1) == 1.0
    assert points_at(torch.zeros(50, 50), torch.tensor([[0, 0, 9, 9]])) == 0.0  # points nowhere: a miss
    assert math.isnan(points_at(heat, torch.zeros((0, 4), dtype=torch.long)))  # nothing to point at


def _means_entry() -> ModelEntry:
    return means_entry()


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
    raw = batch_rows(entry, images, samples, specs, ("gradcam",), tolerance=1)
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
    run = lambda: run_experiment(entry, dataset, "hand", tmp_path, specs, ("gradcam",), batch_size=1, tolerance=1)
    rows, again = run(), run()
    pd.testing.assert_frame_equal(rows, again)  # read back from the CSV, nothing recomputed
    assert len(list(tmp_path.glob("*.csv"))) == 1
    moved = ModelEntry(entry.name, entry.model, entry.layer, "another.layer", entry.transform, entry.class_names)
    run_experiment(moved, dataset, "hand", tmp_path, specs, ("gradcam",), batch_size=1, tolerance=1)
    assert len(list(tmp_path.glob("*.csv"))) == 2  # another Grad-CAM layer: never the old rows
    table = attack_table(rows).set_index("eps")
    assert table.loc[0.1, ["images", "successes", "success_pct", "rank_corr", "points_new"]].tolist() == [
        1, 1, 100.0, pytest.approx(1.0, abs=1e-4), 0.0]
    assert table.loc[0.01, ["images", "successes", "success_pct"]].tolist() == [1, 0, 0.0]
    assert np.isnan(table.loc[0.01, "rank_corr"])
    assert clean_pointing(rows)[["method", "images", "points_before"]].values.tolist() == [["gradcam", 1, 100.0]]


# --------------------------------------------------------------------------------------------
# Model flags and global RNG left alone
# --------------------------------------------------------------------------------------------


class NormDropNet(nn.Module):
    """BatchNorm and dropout: in train mode a forward pass updates the running statistics and
    drops units at random, so a function that forgets eval mode changes both the result and the
    model."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _norm_drop_entry(model: nn.Module) -> ModelEntry:
    return ModelEntry("normdrop", model, model.features[2], "features.2", ImageTransform(), ("a", "b", "c", "d"))


def _norm_drop_samples() -> list[Sample]:
    generator = torch.Generator().manual_seed(3)
    transform = ImageTransform()
    samples = []
    for i in range(4):
        image = transform.normalise(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=generator))
        boxes = torch.tensor([[2, 2, 9, 9]] * 4)
        samples.append(Sample(image, (0, 1, 2, 3), boxes, torch.arange(4), f"img{i}"))  # every class: always right
    return samples


def _state(model: nn.Module) -> dict:
    return {"training": [m.training for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "buffers": [b.clone() for b in model.buffers()],
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state()[1].copy()}


def _assert_unchanged(before: dict, model: nn.Module) -> None:
    after = _state(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(torch.equal(a, b) for a, b in zip(after["buffers"], before["buffers"]))  # BN running stats
    assert torch.equal(after["torch_rng"], before["torch_rng"])
    assert np.array_equal(after["numpy_rng"], before["numpy_rng"])


def test_every_entry_point_leaves_the_model_in_train_mode_and_the_global_rng_alone(tmp_path):
    torch.manual_seed(0)
    model = NormDropNet()
    with torch.no_grad():  # running statistics far from a batch's: forgetting eval mode shows
        model.features[1].running_mean.fill_(0.3)
        model.features[1].running_var.fill_(2.0)
    reference = copy.deepcopy(model).eval()  # what every result must equal: the model in eval mode
    model.train()
    entry, samples = _norm_drop_entry(model), _norm_drop_samples()
    images = torch.stack([s.image for s in samples])
    specs = [AttackSpec("pgd", 4 / 255, steps=2), AttackSpec("fgsm", 2 / 255, targeted=True)]

    state = _state(model)
    kept = correctly_classified(entry, samples, batch_size=2)
    _assert_unchanged(state, model)
    assert kept == correctly_classified(_norm_drop_entry(reference), samples, batch_size=2) == [0, 1, 2, 3]

    state = _state(model)
    rows = pd.DataFrame(batch_rows(entry, images, samples, specs))
    _assert_unchanged(state, model)
    expected = pd.DataFrame(batch_rows(_norm_drop_entry(reference), images, samples, specs))
    pd.testing.assert_frame_equal(rows, expected)

    state = _state(model)
    outcome = attack_and_explain(entry, images, torch.tensor([0, 1, 2, 3]), [s.image_id for s in samples], specs[0])
    _assert_unchanged(state, model)
    with torch.no_grad():
        new_class = reference(outcome.adversarial.sub(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
                              .div(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))).argmax(1)
    assert torch.equal(outcome.new_class, new_class)

    state = _state(model)
    evaluated = run_experiment(entry, samples, "fixture", tmp_path, specs, batch_size=2)
    _assert_unchanged(state, model)
    assert len(evaluated) == len(rows)

    state = _state(model)
    run_attack(PixelSpaceModel(model, IMAGENET_MEAN, IMAGENET_STD), to_pixels(images, IMAGENET_MEAN, IMAGENET_STD),
               torch.tensor([0, 1, 2, 3]), specs[0], seed=1)
    _assert_unchanged(state, model)


# --------------------------------------------------------------------------------------------
# Units, intervals, paired comparisons
# --------------------------------------------------------------------------------------------


def test_wilson_interval_against_scipy_and_a_hand_computed_case():
    for hits, n in [(0, 10), (3, 10), (9, 10), (10, 10), (1, 3)]:
        ref = stats.binomtest(hits, n).proportion_ci(method="wilson")
        assert wilson_bounds(hits / n, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
    # share 1/2 on 4 units, z = 1.959964: centre 1/2, half-width z / (1 + z^2/4) * sqrt(1/16 + z^2/64)
    z = 1.959963984540054
    half = z / (1 + z**2 / 4) * math.sqrt(1 / 16 + z**2 / 64)
    assert wilson_bounds(0.5, 4) == pytest.approx((0.5 - half, 0.5 + half))
    assert all(math.isnan(v) for v in wilson_bounds(0.5, 0))


def test_effective_units_is_kish_with_perfectly_correlated_clusters():
    assert effective_units(["a"] * 5 + ["b"] * 2 + ["c", "d", "e"]) == pytest.approx(100 / 32)
    assert effective_units(list("abcdef")) == 6
    assert effective_units(list("aabbcc")) == pytest.approx(3)


def test_share_interval_over_images_and_over_clusters():
    hits = [1, 1, 1, 1, 0, 1, float("nan")]
    independent = stats.binomtest(5, 6).proportion_ci(method="wilson")
    assert share_interval(hits) == pytest.approx((5 / 6, independent.low, independent.high))
    assert share_interval(hits, list("abcdefg")) == pytest.approx((5 / 6, independent.low, independent.high))
    # clusters a a a a b c (+ the NaN's g): Kish n = 36 / (16 + 1 + 1) = 2
    clustered = share_interval(hits, list("aaaabcg"))
    assert clustered == pytest.approx((5 / 6, *wilson_bounds(5 / 6, 2.0)))
    assert clustered[2] - clustered[1] > independent.high - independent.low
    # every image a hit: still an interval, not a point
    share, low, high = share_interval([1, 1, 1, 1], list("aabb"))
    assert share == 1.0 and high == 1.0 and low == pytest.approx(stats.binomtest(2, 2).proportion_ci(method="wilson").low)


def test_mean_interval_needs_enough_units_and_resamples_clusters():
    values = np.array([0.1, 0.2, 0.9, 0.8, 0.5, 0.4, 0.7, 0.3])
    mean, low, high = mean_interval(values[: MIN_UNITS - 1])
    assert mean == pytest.approx(values[: MIN_UNITS - 1].mean()) and math.isnan(low) and math.isnan(high)
    reference = stats.bootstrap((values,), np.mean, n_resamples=10_000, method="BCa", rng=np.random.default_rng(0))
    assert mean_interval(values)[1:] == pytest.approx(
        (reference.confidence_interval.low, reference.confidence_interval.high))
    clusters = np.array(list("aabbccdd"))
    assert math.isnan(mean_interval(values, np.array(list("aaaabbbb")))[1])  # 2 clusters: no interval
    # brute force: resample the 4 pairs with replacement, percentile interval of the pooled mean
    rng = np.random.default_rng(123)
    groups = [values[clusters == c] for c in "abcd"]
    means = [np.concatenate([groups[i] for i in rng.integers(0, 4, 4)]).mean() for _ in range(20_000)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gradcam_lib.stats.MIN_UNITS", 4)
        got = mean_interval(values, clusters)
    assert got[0] == pytest.approx(values.mean())
    assert got[1:] == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=0.02)


def _hand_rows() -> pd.DataFrame:
    """Two FGSM settings on six images (own clusters), Grad-CAM only; a vanished map at eps 0.1."""
    nan = float("nan")
    # image: (success, vanished, rank_corr, box_iou, points_before, points_after_true, points_new)
    small = {"i0": (1, 0, 0.9, 0.8, 1, 1, 1), "i1": (1, 0, 0.7, 0.6, 1, 1, 0), "i2": (1, 0, 0.5, 0.4, 0, 0, 1),
             "i3": (1, 0, 0.8, 0.9, 1, 1, 1), "i4": (1, 0, 0.6, 0.5, 1, 1, 1), "i5": (0, nan, nan, nan, nan, nan, nan)}
    large = {"i0": (1, 0, 0.3, 0.2, 1, 0, 0), "i1": (1, 0, 0.5, 0.4, 1, 1, 0), "i2": (1, 1, nan, 0.0, 0, 0, 1),
             "i3": (1, 0, 0.4, 0.5, 1, 1, 0), "i4": (0, nan, nan, nan, nan, nan, nan), "i5": (1, 0, 0.2, 0.1, 1, 1, 1)}
    rows = []
    for eps, table in ((0.01, small), (0.1, large)):
        for image, (success, vanished, rho, box, before, after, new) in table.items():
            rows.append({**{c: nan for c in COLUMNS}, "image_id": image, "attack": "fgsm", "mode": "untargeted",
                         "eps": eps, "method": "gradcam", "attacked": True, "success": bool(success),
                         "explained": bool(success), "vanished": vanished, "rank_corr": rho, "box_iou": box,
                         "points_before": before, "points_after_true": after, "points_new": new})
    return pd.DataFrame(rows).assign(model="m")


def test_table_counts_vanished_maps_apart_and_averages_the_rest():
    table = attack_table(_hand_rows()).set_index("eps")
    large = table.loc[0.1]
    assert (large.images, large.successes, large.vanished, large.n) == (6, 5, 1, 4)
    assert large.rank_corr == pytest.approx(np.mean([0.3, 0.5, 0.4, 0.2]))
    assert large.box_iou == pytest.approx(np.mean([0.2, 0.4, 0.5, 0.1]))  # the vanished map's 0 left out
    assert large.points_after_true == pytest.approx(100 * 3 / 4)  # over n, not over the successes
    assert large.points_new == pytest.approx(100 * 2 / 5)  # over every success
    ref = stats.binomtest(5, 6).proportion_ci(method="wilson")
    assert (large.success_low, large.success_high) == pytest.approx((100 * ref.low, 100 * ref.high))
    assert math.isnan(large.rank_corr_low)  # 4 values < MIN_UNITS: no interval
    small = table.loc[0.01]
    assert (small.successes, small.vanished, small.n) == (5, 0, 5)
    boot = stats.bootstrap((np.array([0.9, 0.7, 0.5, 0.8, 0.6]),), np.mean, n_resamples=10_000, method="BCa",
                           rng=np.random.default_rng(0)).confidence_interval
    assert (small.rank_corr_low, small.rank_corr_high) == pytest.approx((boot.low, boot.high))


def test_paired_comparisons_use_the_same_images_only():
    rows = _hand_rows()
    a = {"attack": "fgsm", "mode": "untargeted", "eps": 0.01, "method": "gradcam"}
    b = {**a, "eps": 0.1}
    pairs = paired_outcomes(rows, "rank_corr", a, b)
    # i2 vanished at 0.1, i4 failed at 0.1, i5 failed at 0.01: left out
    assert pairs["image_id"].tolist() == ["i0", "i1", "i3"]
    assert pairs["a"].tolist() == [0.9, 0.7, 0.8] and pairs["b"].tolist() == [0.3, 0.5, 0.4]
    box = paired_outcomes(rows, "box_iou", a, b)
    assert "i2" not in box["image_id"].tolist()  # a vanished map's IoU of 0 is no comparison
    # with five images from as many clusters: a paired bootstrap interval
    more = pd.concat([rows, rows.assign(image_id=rows["image_id"] + "x")], ignore_index=True)
    comparison = compare_settings(more, "rank_corr", a, b)
    assert comparison.difference.n == 6 and comparison.difference.mean == pytest.approx(np.mean([0.6, 0.2, 0.4]))
    assert comparison.shown and comparison.mcnemar is None
    # hit / miss: McNemar on the images that have both values, counted by hand
    hits = compare_settings(rows, "points_after_true", a, b)
    assert (hits.mcnemar.only_a, hits.mcnemar.only_b, hits.mcnemar.n) == (1, 0, 3)  # i0: 1 -> 0
    assert math.isnan(hits.difference.low) and not hits.shown  # 3 images < MIN_UNITS
    # another column under b: the new class's map after vs the clean map before, same images
    cross = paired_outcomes(rows, "points_new", b, b, column_b="points_before")
    assert cross["image_id"].tolist() == ["i0", "i1", "i2", "i3", "i5"]
    assert cross["a"].tolist() == [0, 0, 1, 0, 1] and cross["b"].tolist() == [1, 1, 0, 1, 1]
    with pytest.raises(ValueError, match="several rows per image"):
        paired_outcomes(rows, "rank_corr", {"attack": "fgsm"}, b)


def test_a_composite_image_is_resampled_with_the_photograph_of_its_object():
    transform = ImageTransform()
    composite = build_dataset("composite", transform, 6, None, 0)
    photos = build_dataset("photos", transform)
    checked = 0
    for index in range(len(composite)):
        sample = composite[index]
        for label in sample.labels:
            source = composite.source_of(sample.image_id, label)
            assert photograph_of(sample.image_id, label, [photos, composite]) == source.split("#")[0]
            checked += 1
    assert checked >= 6
    assert photograph_of("chelsea", 281, [photos, composite]) == "chelsea"  # a photo is its own unit
    assert photograph_of("composite-99-0", 281, [composite]) == "composite-99-0"  # not this data set's image
    first = composite[0]
    rows = pd.DataFrame({"image_id": [first.image_id, "chelsea"], "true_class": [first.labels[0], 281]})
    expected = composite.source_of(first.image_id, first.labels[0]).split("#")[0]
    assert with_clusters(rows, [composite])["cluster"].tolist() == [expected, "chelsea"]

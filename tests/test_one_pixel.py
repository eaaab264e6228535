"""One-pixel attack: the DE solver against scipy, Su et al.'s DE/rand/1 update against a brute-force
search of the parents, the attack against a brute-force search and torchattacks, the painting
against torchvision's normalisation, map read-outs by hand, the random-pixel null of the
percentile against its closed form and a simulation, and no global RNG state touched."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import differential_evolution as scipy_de
from torch import nn
from torchvision.transforms.v2 import functional as TF

from gradcam_lib.attacks.differential_evolution import SU2019, DEConfig, differential_evolution, torchattacks_config
from gradcam_lib.attacks.one_pixel import (
    attacked_maps,
    decode_pixels,
    one_pixel_attack,
    paint_pixels,
    torchattacks_one_pixel,
)
from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from gradcam_lib.experiments.sensitivity import sensitivity_rows
from gradcam_lib.methods import grad_cam
from gradcam_lib.metrics.sensitivity import map_value_at, null_percentile, pixel_percentiles, random_pixel_test
from gradcam_lib.report.sensitivity import sensitivity_table

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
    with pytest.raises(ValueError):
        DEConfig(init="sobol")


def test_defaults_are_su_et_al_and_torchattacks_setting():
    assert (SU2019.popsize, SU2019.maxiter, SU2019.mutation, SU2019.strategy, SU2019.recombination) == (
        400, 100, 0.5, "rand1", 1.0)
    assert SU2019 == DEConfig() and SU2019.init == "su2019"
    ta = torchattacks_config(63, 10)
    assert (ta.strategy, ta.mutation, ta.recombination, ta.init) == ("best1", (0.5, 1.0), 1.0, "random")


def _first_generation(config: DEConfig, popsize: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    seen = []

    def objective(population, rows):
        seen.append(population.clone())
        energy = population.sum(-1)
        return energy, torch.zeros_like(energy, dtype=torch.bool)

    differential_evolution(objective, 2, dim, config, seed=5)
    return seen[0], seen[1]


def _unexplained_children(parents: torch.Tensor, children: torch.Tensor) -> tuple[int, int]:
    """(children that are no x_r1 + 0.5 (x_r2 - x_r3) of three distinct parents other than their
    own -- out-of-cube coordinates excepted, which are redrawn --, children that are one exactly)."""
    popsize = parents.shape[1]
    unexplained = exact = 0
    for b in range(parents.shape[0]):
        for i in range(popsize):
            others = [j for j in range(popsize) if j != i]
            found = pure = False
            for r1, r2, r3 in itertools.permutations(others, 3):
                m = parents[b, r1] + 0.5 * (parents[b, r2] - parents[b, r3])
                outside = (m < 0) | (m > 1)
                if (((children[b, i] - m).abs() < 1e-6) | outside).all():
                    found = True
                    pure = pure or not outside.any()
            unexplained += not found
            exact += pure
    return unexplained, exact


def test_su_update_is_rand1_with_f_half_and_no_crossover():
    """Every child of the first generation is x_r1 + 0.5 (x_r2 - x_r3) for three distinct parents
    other than its own (coordinates that left the cube redrawn): brute force over all triples of
    the initial population, which the objective records. With crossover (CR = 0: one mutant
    coordinate, the others the parent's) the same check fails, so it can tell the two apart."""
    popsize, dim = 7, 3
    su = DEConfig(popsize=popsize, maxiter=1, init="random", mutation=0.5, recombination=1.0, strategy="rand1")
    unexplained, exact = _unexplained_children(*_first_generation(su, popsize, dim))
    assert unexplained == 0 and exact >= popsize  # most children stay inside the cube
    crossed = DEConfig(popsize=popsize, maxiter=1, init="random", mutation=0.5, recombination=0.0, strategy="rand1")
    unexplained, _ = _unexplained_children(*_first_generation(crossed, popsize, dim))
    assert unexplained > 0


def test_su_initialisation_uniform_coordinates_gaussian_colours():
    captured = []

    def objective(population, rows):
        captured.append(population.clone())
        return population.sum(-1), torch.ones(population.shape[:2], dtype=torch.bool)

    differential_evolution(objective, 50, 5, DEConfig(popsize=400, maxiter=0), seed=0)
    pop = captured[0].reshape(-1, 5).double()
    coords, colours = pop[:, :2], pop[:, 2:]
    assert stats.kstest(coords[:, 0].numpy(), "uniform").pvalue > 1e-3
    # N(128/255, 127/255) clipped: P(0) = Phi(-128/127), P(1) = 1 - Phi(127/127)
    n = colours.numel()
    for share, expected in (((colours == 0).double().mean(), stats.norm.cdf(-128 / 127)),
                            ((colours == 1).double().mean(), stats.norm.sf(1.0))):
        assert abs(float(share) - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    inner = colours[(colours > 0) & (colours < 1)]
    assert abs(float(inner.mean()) - 0.5) < 0.01


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
    from gradcam_lib.datasets.mnist import mnist_split
    from gradcam_lib.models import load_model
    from gradcam_lib.models.mnist import least_confident

    entry = load_model("mnist_cnn")
    model, layer = entry.model, entry.layer
    assert entry.layer_name == "relu1"
    _, test = mnist_split()
    images = test.images[least_confident(model, test, 4)]
    result = one_pixel_attack(model, images, (0.0,), (1.0,), DEConfig(popsize=30, maxiter=10), seed=0)
    rows = sensitivity_rows(model, layer, images, result, (0.0,), (1.0,))
    assert 0 < len(rows) == int(result.success.sum())
    hit = result.success.nonzero().squeeze(1)
    maps = attacked_maps(model, layer, images[hit], result.x[hit], result.y[hit], result.colour[hit],
                         result.class_before[hit], result.class_after[hit], (0.0,), (1.0,))
    for k, row in enumerate(rows):
        i = row["index"]
        painted = paint_pixels(images[i : i + 1], result.x[i : i + 1], result.y[i : i + 1], result.colour[i : i + 1],
                               (0.0,), (1.0,))
        for when, picture, cls, batch_maps in (("before", images[i : i + 1], result.class_before, maps[0]),
                                               ("after", painted, result.class_after, maps[1])):
            heat = grad_cam(model, layer, picture, cls[i : i + 1])[0]
            assert row[f"{when}_value"] == pytest.approx(float(heat[result.y[i], result.x[i]]), abs=1e-7)
            # the null by brute force over every pixel of the same (batch-computed) map
            flat = batch_maps[k].flatten().numpy()
            brute = 100.0 * (flat[None, :] < flat[:, None]).mean()  # all pairs of pixels
            assert row[f"{when}_null_percentile"] == pytest.approx(brute, abs=1e-9)
            assert row[f"{when}_zero_share"] == pytest.approx(float((flat == 0).mean()), abs=1e-12)


def test_sensitivity_experiment_is_resumable_complete_and_leaves_the_model_alone(tmp_path):
    from gradcam_lib.datasets.mnist import as_samples, mnist_split
    from gradcam_lib.experiments.sensitivity import MEASURES, SensitivityExperiment, SensitivitySettings
    from gradcam_lib.models import load_model
    from gradcam_lib.models.mnist import least_confident

    entry = load_model("mnist_cnn")
    _, test = mnist_split()
    samples = as_samples(test, "mnist_test", least_confident(entry.model, test, 4))
    settings = SensitivitySettings(DEConfig(popsize=30, maxiter=10), seed=0, batch_size=2)
    experiment = SensitivityExperiment(entry, samples, "mnist", settings, eval_batch=64)
    entry.model.train()
    rows = experiment.run(tmp_path)
    assert entry.model.training  # the run's scope restored the caller's mode
    entry.model.eval()
    again = SensitivityExperiment(entry, samples, "mnist", settings).run(tmp_path)  # read back, not recomputed
    assert len(list(tmp_path.glob("*.csv"))) == 1
    assert rows.equals(again)
    assert len(rows) == 4 and rows["image_id"].tolist() == [s.image_id for s in samples]
    assert {"model", "dataset", "popsize", "maxiter"} <= set(rows) and not any("second" in c for c in rows)
    measured = [f"{w}_{m}" for w in ("before", "after") for m in MEASURES]
    assert set(measured) <= set(rows)
    failed = rows[~rows["success"].astype(bool)]
    assert failed[measured].isna().all().all()
    # each batch as the experiment defines it: seed + crc32 of its first id, read-outs of its successes
    import zlib

    for start in (0, 2):
        images = torch.stack([s.image for s in samples[start : start + 2]])
        result = one_pixel_attack(entry.model, images, (0.0,), (1.0,), settings.config,
                                  zlib.crc32(samples[start].image_id.encode()), 64)
        assert rows["success"].iloc[start : start + 2].astype(bool).tolist() == result.success.tolist()
        for row in sensitivity_rows(entry.model, entry.layer, images, result, (0.0,), (1.0,)):
            stored = rows.iloc[start + row["index"]]
            assert stored["before_value"] == pytest.approx(row["before_value"], rel=1e-6, abs=1e-9)
            assert stored["after_percentile"] == pytest.approx(row["after_percentile"], rel=1e-6)
    with pytest.raises(ValueError, match="batch size"):
        experiment.run(tmp_path, batch_size=4)


# ---------------------------------------------------------------------------------------------
# The random-pixel null of the percentile rank
# ---------------------------------------------------------------------------------------------


def _relu_maps(batch: int, side: int, shift: float, seed: int) -> torch.Tensor:
    """Rectified maps with a share of exact zeros set by ``shift`` (as Grad-CAM's ReLU makes)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, side, side, generator=g, dtype=torch.float64) - shift).clamp(min=0)


def test_null_percentile_by_hand_and_closed_form():
    maps = torch.tensor([[[0.0, 0.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 5.0]], [[1.0, 2.0], [3.0, 4.0]]])
    # ranks: (0, 0, 50, 75) -> 31.25; (0, 0, 0, 75) -> 18.75; (0, 25, 50, 75) -> 37.5
    torch.testing.assert_close(null_percentile(maps), torch.tensor([31.25, 18.75, 37.5], dtype=torch.float64))
    maps = _relu_maps(6, 16, 0.3, seed=1)
    for heat, null in zip(maps, null_percentile(maps)):
        _, counts = torch.unique(heat, return_counts=True)
        p = counts.double() / heat.numel()
        assert float(null) == pytest.approx(50.0 * (1.0 - float((p**2).sum())), abs=1e-9)
        z = float((heat == 0).double().mean())  # zeros tie, the other values are distinct
        assert float(null) == pytest.approx(50.0 * (1 - z**2 - (1 - z) / heat.numel()), abs=1e-9)


def test_pixel_percentiles_match_map_value_at_for_every_pixel():
    maps = _relu_maps(3, 7, 0.5, seed=2)
    ranks = pixel_percentiles(maps)
    for b in range(3):
        for yy in range(7):
            for xx in range(7):
                _, rank = map_value_at(maps[b : b + 1], torch.tensor([xx]), torch.tensor([yy]))
                assert float(ranks[b, yy, xx]) == pytest.approx(float(rank), abs=1e-4)


def test_null_percentile_against_a_simulation_of_random_pixels():
    """A random pixel's mean percentile, simulated with map_value_at, agrees with the null within
    Monte-Carlo error, and lies well below 50 when half of the map is zero."""
    maps = _relu_maps(4, 20, 0.0, seed=3)  # about half zeros
    rng = np.random.default_rng(0)
    draws = 20_000
    for b in range(4):
        x = torch.as_tensor(rng.integers(0, 20, draws))
        y = torch.as_tensor(rng.integers(0, 20, draws))
        _, ranks = map_value_at(maps[b].expand(draws, 20, 20), x, y)
        se = float(ranks.double().std()) / np.sqrt(draws)
        null = float(null_percentile(maps[b : b + 1])[0])
        assert abs(float(ranks.double().mean()) - null) < 4 * se
        assert null < 45  # z ~ 0.5 -> ~37.5, not 50


def _exact_two_sided(scores: np.ndarray, index: np.ndarray) -> float:
    """The exact p of random_pixel_test's statistic by enumerating every choice of pixels."""
    centre = scores.mean(1)
    t = (scores[np.arange(len(scores)), index] - centre).mean()
    all_t = np.array([np.mean([scores[b, j] - centre[b] for b, j in enumerate(choice)])
                      for choice in itertools.product(range(scores.shape[1]), repeat=len(scores))])
    lower, upper = np.mean(all_t <= t + 1e-12), np.mean(all_t >= t - 1e-12)
    return min(1.0, 2 * min(lower, upper))


def test_random_pixel_test_against_exact_enumeration():
    maps = torch.tensor([[[0.0, 0.0], [1.0, 3.0]], [[0.0, 2.0], [4.0, 5.0]], [[0.0, 0.0], [0.0, 7.0]]])
    scores = pixel_percentiles(maps)
    for x, y in (([1, 1, 1], [1, 1, 1]), ([0, 0, 0], [0, 0, 0]), ([1, 0, 1], [0, 1, 1])):
        test = random_pixel_test(scores, torch.tensor(x), torch.tensor(y), draws=40_000, seed=1)
        flat = scores.flatten(1).numpy()
        index = np.array(y) * 2 + np.array(x)
        exact = _exact_two_sided(flat, index)
        assert test.p_value == pytest.approx(exact, abs=0.02)
        assert test.observed == pytest.approx(flat[np.arange(3), index].mean())
        assert test.null == pytest.approx(float(null_percentile(maps).mean()))


def test_random_pixel_test_holds_its_level_and_detects_the_peak():
    maps = _relu_maps(30, 10, 0.2, seed=4)
    scores = pixel_percentiles(maps)
    rng = np.random.default_rng(5)
    p_values = []
    for k in range(200):
        x = torch.as_tensor(rng.integers(0, 10, 30))
        y = torch.as_tensor(rng.integers(0, 10, 30))
        p_values.append(random_pixel_test(scores, x, y, draws=1000, seed=k).p_value)
    rejections = int((np.array(p_values) < 0.05).sum())
    assert stats.binomtest(rejections, 200, 0.05).pvalue > 0.01  # level about 5 %
    peak = maps.flatten(1).argmax(1)
    test = random_pixel_test(scores, peak % 10, peak // 10, draws=2000)
    assert test.p_value < 0.01 and test.difference > 30 and test.excludes_zero
    zeros = random_pixel_test((maps == 0).double(), peak % 10, peak // 10, draws=2000)
    assert zeros.observed == 0 and zeros.difference < 0 and zeros.p_value < 0.01


def test_sensitivity_table_intervals():
    import pandas as pd

    rows = pd.DataFrame({
        "dataset": "d", "model": "m", "popsize": 20, "maxiter": 1, "queries": 10,
        "success": [True, True, True, False],
        "before_value": [0.0, 0.5, 1.0, np.nan], "after_value": [0.2, 0.0, 0.0, np.nan],
        "before_percentile": [0.0, 50.0, 90.0, np.nan], "after_percentile": [10.0, 0.0, 0.0, np.nan],
        "before_null_percentile": [40.0, 40.0, 40.0, np.nan], "after_null_percentile": [30.0, 30.0, 30.0, np.nan],
        "before_zero_share": [0.5, 0.5, 0.2, np.nan], "after_zero_share": [0.4, 0.4, 0.4, np.nan]})
    row = sensitivity_table(rows).iloc[0]
    wilson = stats.binomtest(3, 4).proportion_ci(method="wilson")
    assert row["success_%"] == 75 and row["success_low"] == pytest.approx(100 * wilson.low)
    assert row["success_high"] == pytest.approx(100 * wilson.high)
    assert row["before_zero_%"] == pytest.approx(100 / 3) and row["after_zero_%"] == pytest.approx(200 / 3)
    assert row["before_zero_null_%"] == pytest.approx(40.0) and row["before_pct"] == pytest.approx(140 / 3)
    assert row["before_null_pct"] == 40 and row["before_mean"] == pytest.approx(0.5)
    assert row["before_mean_low"] <= 0.5 <= row["before_mean_high"]


# ---------------------------------------------------------------------------------------------
# No global random state
# ---------------------------------------------------------------------------------------------


def _global_states():
    return torch.get_rng_state().clone(), np.random.get_state(), random.getstate()


def _assert_same_states(before, after):
    assert torch.equal(before[0], after[0])
    assert before[1][0] == after[1][0] and np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
    assert before[2] == after[2]


def test_attacks_and_tests_leave_global_rng_state_unchanged():
    import torchattacks.attacks.onepixel as ta_module

    model = _OnePixelFlips().eval()
    images = torch.zeros(2, 1, 5, 6)
    original_solver = ta_module.differential_evolution
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = _global_states()
    one_pixel_attack(model, images, (0.0,), (1.0,), DEConfig(popsize=10, maxiter=3), seed=4)
    differential_evolution(_shifted_sphere, 2, 3, DEConfig(popsize=10, maxiter=3, init="latinhypercube"), seed=2)
    first = torchattacks_one_pixel(model, images, (0.0,), (1.0,), popsize=30, maxiter=5, seed=7)
    maps = _relu_maps(3, 5, 0.0, seed=0)
    random_pixel_test(pixel_percentiles(maps), torch.tensor([0, 1, 2]), torch.tensor([2, 1, 0]), draws=100)
    _assert_same_states(states, _global_states())
    assert ta_module.differential_evolution is original_solver  # the private seeding is undone
    # and torchattacks is still seeded: the same seed gives the same colours, another seed others
    np.random.seed(999)
    again = torchattacks_one_pixel(model, images, (0.0,), (1.0,), popsize=30, maxiter=5, seed=7)
    other = torchattacks_one_pixel(model, images, (0.0,), (1.0,), popsize=30, maxiter=5, seed=8)
    torch.testing.assert_close(first.colour, again.colour)
    assert not torch.equal(first.colour, other.colour)


def test_attacks_restore_the_callers_train_mode():
    model = _OnePixelFlips().train()
    images = torch.zeros(2, 1, 5, 6)
    one_pixel_attack(model, images, (0.0,), (1.0,), DEConfig(popsize=10, maxiter=2), seed=0)
    assert model.training and all(p.requires_grad for p in model.parameters())
    torchattacks_one_pixel(model, images, (0.0,), (1.0,), popsize=30, maxiter=2, seed=0)
    assert model.training and all(p.requires_grad for p in model.parameters())

"""Fidelity and contrastivity against KTH's numpy formulas, hand-computed cases of Pope et al.'s
definitions, closed forms on linear models, and the support-restricted random-mask null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.fidelity import FidelityExperiment, FidelitySettings
from gradcam_lib.methods import attribute, maps
from gradcam_lib.methods.attributions import completeness_gap, integrated_gradients
from gradcam_lib.metrics.fidelity import (
    accuracy_drop,
    contrastivity,
    deep_shap_top1,
    fidelity,
    input_support,
    mask_images,
    method_options,
    normalised_saliency_mask,
    pairwise_contrastivity,
    positive_percentile_mask,
    random_masks_like,
    top1_hits,
)
from gradcam_lib.models import ModelEntry
from gradcam_lib.report.fidelity import METRICS, sign_flip_p, summary_table


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ig_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, steps: tuple[int, ...],
            tolerance: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The chapter's IG maps (channels summed), completeness gaps and step count, by the registry."""
    explained = attribute("ig", model, None, images, classes, reduction="sum",
                          **method_options("ig", None, steps, 0, 0, 0.0, tolerance))
    return explained.maps, explained.info["gaps"], explained.info["steps"]


def evaluate_fidelity(model: nn.Module, layer: nn.Module, images: torch.Tensor, method: str,
                      percentiles: tuple[float, ...], tmp_path, labels: torch.Tensor | None = None,
                      background: torch.Tensor | None = None, **settings) -> pd.DataFrame:
    """:class:`FidelityExperiment` over ``images`` in one batch (no labels: samples without labels)."""
    entry = ModelEntry("toy", model, layer, "layer", None, tuple("abc"))  # type: ignore[arg-type]
    empty = torch.zeros(0, 4, dtype=torch.long)
    samples = [Sample(image, () if labels is None else (int(labels[i]),), empty, torch.zeros(0, dtype=torch.long),
                      f"x{i}") for i, image in enumerate(images)]
    config = FidelitySettings(method, percentiles, batch_size=len(images), **settings)
    return FidelityExperiment(entry, samples, "toy", config, background).run(tmp_path)


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
        nn.init.normal_(self.fc.weight, generator=_gen(0))
        nn.init.normal_(self.fc.bias, generator=_gen(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_fidelity_is_the_probability_drop_by_hand():
    model = _Linear().eval()
    images = torch.rand(2, 1, 2, 2, generator=_gen(2))
    masks = torch.tensor([[[True, False], [False, False]], [[False, False], [True, True]]])
    targets = torch.tensor([2, 0])
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    expected = []
    for image, mask, t in zip(images, masks, targets, strict=False):
        x = image.flatten()
        x_masked = torch.where(mask.flatten(), torch.tensor(0.5), x)
        expected.append(torch.softmax(w @ x + b, 0)[t] - torch.softmax(w @ x_masked + b, 0)[t])
    torch.testing.assert_close(fidelity(model, images, targets, masks, fill=0.5), torch.stack(expected))
    torch.testing.assert_close(mask_images(images, masks, 0.5)[0, 0, 0, 0], torch.tensor(0.5))


@pytest.mark.parametrize("targets, message", [
    ([2, -1], "class indices in \\[0, 3\\) for this model, got -1"),  # before: silently the last class
    ([2, 3], "class indices in \\[0, 3\\) for this model, got 3"),
    ([1.7, 0.0], "whole class indices, got 1.7"),  # before: truncated to class 1
    ([[2], [0], [1]], "targets must be \\(B,\\) = \\(2,\\)"),
    ([2], "targets must be \\(B,\\) = \\(2,\\)"),
    ([True, False], "integer class indices"),
])
def test_fidelity_refuses_targets_that_are_not_class_indices(targets, message):
    model = _Linear().eval()
    images = torch.rand(2, 1, 2, 2, generator=_gen(2))
    masks = torch.zeros(2, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=message):
        fidelity(model, images, torch.tensor(targets), masks)
    # whole-valued floats are the same classes as their integers (the hand case above)
    exact = fidelity(model, images, torch.tensor([2, 0]), masks | True)
    torch.testing.assert_close(fidelity(model, images, torch.tensor([2.0, 0.0]), masks | True), exact)


def test_random_masks_keep_the_size():
    masks = torch.rand(3, 2, 5, 5, generator=_gen(3)) > 0.7
    rand = random_masks_like(masks, seed=4)
    assert (rand.flatten(-2).sum(-1) == masks.flatten(-2).sum(-1)).all()
    assert torch.equal(rand, random_masks_like(masks, seed=4)) and not torch.equal(rand, masks)


def _sequential_linear(inputs: int, outputs: int, seed: int) -> nn.Sequential:
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, outputs))
    nn.init.normal_(model[1].weight, generator=_gen(seed))
    return model.eval()


def test_ig_map_is_input_times_weight_summed_over_channels():
    model = _sequential_linear(2 * 3 * 3, 4, 0)
    images = torch.randn(2, 2, 3, 3, generator=_gen(4))
    classes = torch.tensor([[1, 3], [0, 2]])
    maps_ = maps("ig", model, model[1], images, classes, reduction="sum", **method_options("ig", None, 8, 50, 0))
    w = model[1].weight.detach().view(4, 2, 3, 3)
    expected = torch.stack([torch.stack([(images[b] * w[c]).sum(0) for c in row])
                            for b, row in enumerate(classes.tolist())])
    torch.testing.assert_close(maps_, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError):
        maps("lime", model, model[1], images, classes, reduction="sum")


def test_deep_shap_of_a_linear_model_is_weight_times_distance_to_background_mean():
    model = _sequential_linear(9, 3, 1)
    images, background = torch.randn(2, 1, 3, 3, generator=_gen(5)), torch.randn(8, 1, 3, 3, generator=_gen(6))
    maps, top = deep_shap_top1(model, images, background)
    with torch.no_grad():
        assert top.tolist() == model(images).argmax(1).tolist()
    w = model[1].weight.detach().view(3, 3, 3)
    expected = torch.stack([(images[i, 0] - background.mean(0)[0]) * w[top[i]] for i in range(2)])
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)



# ---------------------------------------------------------------------------------------------
# Pope et al. (CVPR 2019): normalised-saliency binarisation, accuracy drop, pairwise contrastivity
# ---------------------------------------------------------------------------------------------


def test_normalised_saliency_mask_by_hand():
    maps = torch.tensor([[[0.0, 0.005, 0.5], [1.0, -1.0, 0.02]],      # max 1: keep 0.5, 1.0, 0.02
                         [[-3.0, -1.0, 0.0], [-0.5, -2.0, -1.0]]])    # max <= 0: keep nothing
    expected = torch.tensor([[[False, False, True], [True, False, True]],
                             [[False, False, False], [False, False, False]]])
    assert torch.equal(normalised_saliency_mask(maps, 0.01), expected)
    assert torch.equal(normalised_saliency_mask(7.0 * maps, 0.01), expected)  # a scale 0 to 1: scale-free
    expected_03 = torch.tensor([[False, False, True], [True, False, False]])
    assert torch.equal(normalised_saliency_mask(maps, 0.3)[0], expected_03)
    assert torch.equal(normalised_saliency_mask(maps, 0.0)[0], maps[0] > 0)
    with pytest.raises(ValueError):
        normalised_saliency_mask(maps, 1.0)
    with pytest.raises(ValueError):
        normalised_saliency_mask(torch.full((1, 2, 2), float("nan")))


def test_pairwise_contrastivity_by_hand_and_as_kths_with_two_classes():
    a = torch.zeros(3, 2, 3, dtype=torch.bool)
    b = torch.zeros(3, 2, 3, dtype=torch.bool)
    a[0, 0, :3] = True                  # {0, 1, 2}
    b[0, 0, 2], b[0, 1, 0] = True, True  # {2, 3}: d_H = |{0, 1, 3}| = 3, union 4
    a[1, 1, 1] = b[1, 1, 1] = True       # identical: 0
    # image 2: both empty -> 0
    np.testing.assert_allclose(pairwise_contrastivity(a, b).numpy(), [0.75, 0.0, 0.0])
    rng = np.random.default_rng(7)
    masks = torch.from_numpy(rng.random((6, 2, 5, 5)) > 0.5)
    torch.testing.assert_close(pairwise_contrastivity(masks[:, 0], masks[:, 1]), contrastivity(masks, 0))


def test_accuracy_drop_by_hand():
    model = _Linear().eval()
    images = torch.rand(4, 1, 2, 2, generator=_gen(8))
    masks = torch.rand(4, 2, 2, generator=_gen(9)) > 0.5
    labels = torch.tensor([0, 1, 2, 0])
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    expected = []
    for image, mask, label in zip(images, masks, labels.tolist(), strict=False):
        x = image.flatten()
        before = int((w @ x + b).argmax()) == label
        after = int((w @ torch.where(mask.flatten(), torch.tensor(0.0), x) + b).argmax()) == label
        expected.append(float(before) - float(after))
    np.testing.assert_array_equal(accuracy_drop(model, images, labels, masks).numpy(), expected)
    # label sets: a hit is a top-1 class in the set
    top = model(images).argmax(1).tolist()
    assert top1_hits(model, images, [(t, 5) for t in top]).all()
    assert not top1_hits(model, images, [((t + 1) % 3,) for t in top]).any()
    with pytest.raises(ValueError):
        top1_hits(model, images, labels[:2])


def test_fidelity_leaves_the_models_state_alone():
    model = _Linear().train()
    images = torch.rand(2, 1, 2, 2, generator=_gen(10))
    masks = torch.zeros(2, 2, 2, dtype=torch.bool)
    fidelity(model, images, torch.tensor([0, 1]), masks)
    accuracy_drop(model, images, torch.tensor([0, 1]), masks)
    assert model.training and all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(fidelity(model, images, torch.tensor([0, 1]), masks), torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# The null: random masks inside the support
# ---------------------------------------------------------------------------------------------


def test_input_support_is_the_pixels_that_filling_changes():
    images = torch.zeros(1, 2, 2, 2)
    images[0, 1, 0, 1] = 0.3   # one channel differs from the fill
    images[0, :, 1, 0] = 0.5
    assert torch.equal(input_support(images, 0.0), torch.tensor([[[False, True], [True, False]]]))
    assert input_support(images, 0.5)[0, 0, 0] and not input_support(images, 0.5)[0, 1, 0]


def test_support_random_masks_same_support_size_inside_seeded():
    rng = np.random.default_rng(11)
    masks = torch.from_numpy(rng.random((4, 3, 8, 8)) > 0.6)
    support = torch.from_numpy(rng.random((4, 1, 8, 8)) > 0.5)  # broadcast over the 3 maps
    rand = random_masks_like(masks, 5, support)
    inside = (masks & support).flatten(-2).sum(-1)
    assert torch.equal(rand.flatten(-2).sum(-1), inside)          # as many support pixels as the mask
    assert not (rand & ~support).any()                            # none outside the support
    assert torch.equal(rand, random_masks_like(masks, 5, support))  # seeded
    assert not torch.equal(rand, random_masks_like(masks, 6, support))
    assert torch.equal(random_masks_like(masks, _gen(5), support), rand)  # a generator seeds the same way
    full = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    assert torch.equal(random_masks_like(masks, 5, full), random_masks_like(masks, 5))  # full support = uniform
    empty_inside = torch.zeros(1, 4, 4, dtype=torch.bool)
    empty_inside[0, 0] = True
    assert not random_masks_like(empty_inside, 0, ~empty_inside).any()  # a mask off the support: nothing to change


def test_support_random_masks_are_uniform_over_the_support():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, :2, :] = True                 # 12 pixels, 6 of them inside the support below
    support = torch.zeros(1, 6, 6, dtype=torch.bool)
    support[0, 1:4, :] = True             # 18 support pixels
    generator = _gen(12)
    draws = torch.stack([random_masks_like(mask, generator, support)[0] for _ in range(3000)])
    counts = draws[:, support[0]].sum(0).numpy()  # each support pixel: expected 3000 * 6 / 18
    assert draws[:, ~support[0]].sum() == 0
    assert stats.chisquare(counts).pvalue > 1e-3


def test_support_null_on_background_masks_changes_nothing():
    model = _Linear().eval()
    images = torch.zeros(3, 1, 2, 2)
    images[:, 0, 0, 0] = torch.tensor([0.2, 0.7, 1.0])   # one stroke pixel per image
    masks = torch.tensor([[[False, True], [True, True]]] * 3)   # all background
    support = input_support(images)
    null = random_masks_like(masks, 0, support)
    torch.testing.assert_close(fidelity(model, images, torch.tensor([0, 1, 2]), null), torch.zeros(3))
    uniform = random_masks_like(masks, 0)
    assert (uniform.flatten(1).sum(1) == 3).all()


# ---------------------------------------------------------------------------------------------
# Integrated Gradients with its completeness gap
# ---------------------------------------------------------------------------------------------


class _Bumpy(nn.Module):
    """A small ReLU network: IG needs steps on it (a linear model converges at any count)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        for i, layer in enumerate((self.net[1], self.net[3])):
            nn.init.normal_(layer.weight, generator=_gen(20 + i), std=2.0)
            nn.init.normal_(layer.bias, generator=_gen(30 + i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_ig_maps_report_the_gap_and_pick_the_steps():
    model = _Bumpy().eval()
    images = torch.rand(3, 1, 2, 2, generator=_gen(13))
    classes = torch.tensor([[0, 1], [2, 0], [1, 2]])
    maps, gaps, steps = ig_maps(model, images, classes, (2, 4, 512), tolerance=1e9)
    assert steps == 2  # first count meets an infinite tolerance
    maps, gaps, steps = ig_maps(model, images, classes, (2, 4), tolerance=0.0)
    assert steps == 4  # never met: the last count is kept
    flat = classes.reshape(-1)
    values = integrated_gradients(model, images.repeat_interleave(2, 0), flat, 4)
    torch.testing.assert_close(maps, values.sum(1).view(3, 2, 2, 2))
    torch.testing.assert_close(gaps, completeness_gap(model, images.repeat_interleave(2, 0), flat, values).view(3, 2))
    _, fine, steps = ig_maps(model, images, classes, (1, 2, 4, 8, 16, 32, 64, 128), tolerance=0.05)
    assert fine[:, 0].max() < 0.05 and steps in (1, 2, 4, 8, 16, 32, 64, 128)
    linear = _sequential_linear(4, 3, 2)
    _, gaps, steps = ig_maps(linear, images, classes, (1, 64))
    assert steps == 1 and gaps.max() < 1e-4  # completeness is exact for a linear model


# ---------------------------------------------------------------------------------------------
# The chapter's evaluation
# ---------------------------------------------------------------------------------------------


def test_evaluate_fidelity_rows_and_rules(tmp_path):
    model = _Linear().train()
    images = torch.rand(3, 1, 2, 2, generator=_gen(14))
    labels = torch.tensor([0, 1, 2])
    rows = evaluate_fidelity(model, model.conv, images, "ig", (1, 10), tmp_path / "a", n_classes=3, ig_steps=(4, 8),
                             labels=labels, random_draws=3)
    assert model.training  # state restored
    assert len(rows) == 9 and set(rows["rule"]) == {"KTH", "Pope"} and set(rows["level"]) == {1.0, 10.0, 0.01}
    assert rows["contrastivity"].between(0, 1).all() and rows["kept"].between(0, 1).all()
    assert rows["contrastivity_pair"].between(0, 1).all() and rows["kept_support"].between(0, 1).all()
    assert rows["accuracy_drop"].isin([-1.0, 0.0, 1.0]).all() and (rows["ig_gap"] < 0.05).all()
    pope = rows[rows["rule"] == "Pope"]
    with torch.no_grad():
        top = model.eval()(images).topk(3, 1).indices
    maps = ig_maps(model, images, top, (4, 8))[0]
    own = normalised_saliency_mask(maps, 0.01)[:, 0]
    np.testing.assert_allclose(pope["fidelity"], fidelity(model, images, top[:, 0], own).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(pope["accuracy_drop"], accuracy_drop(model, images, labels, own).numpy())
    table = summary_table(rows)
    assert len(table) == 3 and {f"{m}_lo" for m in METRICS} <= set(table.columns)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).eval()
    no_labels = evaluate_fidelity(cnn, cnn[1], images, "gradcam", (10,), tmp_path / "b", n_classes=2, random_draws=1)
    assert no_labels["accuracy_drop"].isna().all() and no_labels["ig_gap"].isna().all()


def test_evaluate_fidelity_leaves_global_rngs_alone(tmp_path):
    model = _Linear().eval()
    images = torch.rand(2, 1, 2, 2, generator=_gen(15))
    background = torch.rand(4, 1, 2, 2, generator=_gen(16))
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = evaluate_fidelity(model, model.conv, images, "shap", (10,), tmp_path / "a", n_classes=2,
                              background=background, shap_samples=4, seed=3, random_draws=2)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    again = evaluate_fidelity(model, model.conv, images, "shap", (10,), tmp_path / "b", n_classes=2,
                              background=background, shap_samples=4, seed=3, random_draws=2)
    pd_equal = (first.drop(columns=["method"]).fillna(-9).to_numpy()
                == again.drop(columns=["method"]).fillna(-9).to_numpy())
    assert pd_equal.all()  # seeded: the same rows twice


def test_sign_flip_p_against_brute_force_enumeration():
    import itertools

    rng = np.random.default_rng(17)
    a, b = rng.normal(0.4, 1.0, 7), rng.normal(0.0, 1.0, 7)
    d = a - b
    observed = abs(d.mean())
    flips = [abs((np.array(signs) * d).mean()) for signs in itertools.product((1, -1), repeat=len(d))]
    brute = np.mean([f >= observed - 1e-12 for f in flips])  # all 2^7 sign assignments
    assert sign_flip_p(a, b) == pytest.approx(brute)
    assert sign_flip_p(np.ones(7), np.zeros(7)) == pytest.approx(2 / 128)  # all 7 agree: the smallest p
    assert sign_flip_p([1.0, 2.0], [1.0, 2.0]) == 1.0
    big = rng.normal(0.0, 1.0, 40)
    assert 0.0 < sign_flip_p(big, np.zeros(40), seed=1) <= 1.0
    assert sign_flip_p(big, np.zeros(40), seed=1) == sign_flip_p(big, np.zeros(40), seed=1)  # seeded


def test_fidelity_experiment_is_resumable_and_keeps_its_batch(tmp_path):
    """A second run reads the file back (nothing recomputed); the batch size is a setting, so another
    one is refused; the model's mode is restored."""
    model = _Linear().train()
    images = torch.rand(3, 1, 2, 2, generator=_gen(17))
    labels = torch.tensor([0, 1, 2])
    first = evaluate_fidelity(model, model.conv, images, "ig", (10,), tmp_path, labels=labels, n_classes=2,
                              random_draws=2, ig_steps=(4,))
    assert model.training and len(list(tmp_path.glob("*.csv"))) == 1
    again = evaluate_fidelity(model, model.conv, images, "ig", (10,), tmp_path, labels=labels, n_classes=2,
                              random_draws=2, ig_steps=(4,))
    pd.testing.assert_frame_equal(first, again)
    assert first["image"].tolist() == [0, 1, 2, 0, 1, 2] and set(first["model"]) == {"toy"}
    entry = ModelEntry("toy", model, model.conv, "layer", None, tuple("abc"))  # type: ignore[arg-type]
    samples = [Sample(image, (0,), torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long), f"x{i}")
               for i, image in enumerate(images)]
    settings = FidelitySettings("ig", n_classes=2, ig_steps=(4,), batch_size=2)
    experiment = FidelityExperiment(entry, samples, "toy", settings)
    with pytest.raises(ValueError, match="batch size"):
        experiment.run(tmp_path, batch_size=3)
    rows = experiment.run(tmp_path / "two")  # two batches: positions still index the data set
    assert sorted(set(rows["image"])) == [0, 1, 2]

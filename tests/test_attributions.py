"""Attribution wrappers against closed forms on a linear model and the completeness axiom."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_lib.methods.attributions import (
    black_baseline,
    completeness_gap,
    converged_integrated_gradients,
    gradient_shap,
    integrated_gradients,
    shap_expected_gradients,
)


@pytest.fixture()
def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).eval()


def _weights(model: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    return model[1].weight.detach()[targets].view(len(targets), 2, 3, 3)


def test_integrated_gradients_of_a_linear_model_is_input_times_weight(linear):
    x = torch.randn(3, 2, 3, 3)
    targets = torch.tensor([0, 3, 1])
    expected = x * _weights(linear, targets)
    torch.testing.assert_close(integrated_gradients(linear, x, targets, steps=8), expected, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_on_a_nonlinear_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    targets = torch.tensor([2, 4])
    attributions = integrated_gradients(model, x, targets, steps=300)
    rows = torch.arange(len(x))
    with torch.no_grad():
        gap = model(x)[rows, targets] - model(torch.zeros_like(x))[rows, targets]
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), gap, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("method", ["captum", "shap"])
def test_expected_gradients_of_a_linear_model_with_one_reference(linear, method):
    x = torch.randn(2, 2, 3, 3)
    reference = torch.randn(1, 2, 3, 3)
    targets = torch.tensor([1, 2])
    if method == "captum":
        values = gradient_shap(linear, x, targets, reference, n_samples=5)
    else:
        values = shap_expected_gradients(linear, x, targets, reference, n_samples=5)
    torch.testing.assert_close(values, (x - reference) * _weights(linear, targets), rtol=1e-4, atol=1e-5)


def test_model_state_is_restored(linear):
    linear.train()
    integrated_gradients(linear, torch.randn(1, 2, 3, 3), torch.tensor([0]), steps=4)
    assert linear.training and all(p.requires_grad for p in linear.parameters())


def _nonlinear() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def test_completeness_gap_agrees_with_captums_convergence_delta():
    from captum.attr import IntegratedGradients

    model = _nonlinear()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([2, 4])
    attributions, delta = IntegratedGradients(model).attribute(x, target=targets, n_steps=6,
                                                               return_convergence_delta=True)
    with torch.no_grad():
        rows = torch.arange(2)
        difference = model(x)[rows, targets] - model(torch.zeros_like(x))[rows, targets]
    gap = completeness_gap(model, x, targets, attributions)
    torch.testing.assert_close(gap, (delta.abs() / difference.abs()).float(), rtol=1e-4, atol=1e-6)
    # a linear model: the Riemann/Gauss sum is exact, the gap ~0; a wrong attribution has gap 1
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    exact = integrated_gradients(linear, x, targets, steps=4)
    assert completeness_gap(linear, x, targets, exact).max() < 1e-4
    assert completeness_gap(linear, x, targets, torch.zeros_like(x)).min() == pytest.approx(1.0)


def test_converged_integrated_gradients_raises_the_step_count_until_the_gap_is_small():
    model = _nonlinear()
    x = 3 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([0, 1])
    attributions, gaps, steps = converged_integrated_gradients(model, x, targets, tolerance=0.05, steps=(1, 2, 300))
    assert gaps.max() < 0.05 and steps in (1, 2, 300)
    for fewer in (1, 2):
        if fewer < steps:  # every smaller budget really failed the check
            coarse = integrated_gradients(model, x, targets, steps=fewer)
            assert completeness_gap(model, x, targets, coarse).max() >= 0.05
    torch.testing.assert_close(attributions, integrated_gradients(model, x, targets, steps=steps))


def test_black_baseline_is_pixel_zero_in_normalised_space():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    base = black_baseline(mean, std, torch.empty(2, 3, 4, 4))
    pixels = base * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels, torch.zeros(2, 3, 4, 4), rtol=0, atol=1e-6)


def test_gradient_shap_leaves_the_global_rng_alone(linear):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gradient_shap(linear, torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0]),
                  torch.zeros(1, 2, 3, 3), n_samples=3, stdevs=0.1)
    torch.testing.assert_close(torch.rand(3), expected)


def test_gradient_shap_is_reproducible_and_leaves_numpy_alone():
    import numpy as np

    model = _nonlinear()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    references = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    np.random.seed(5)
    expected = np.random.rand(3)
    np.random.seed(5)
    first = gradient_shap(model, x, torch.tensor([0, 1]), references, n_samples=6, stdevs=0.1, seed=3)
    torch.testing.assert_close(torch.from_numpy(np.random.rand(3)), torch.from_numpy(expected))
    second = gradient_shap(model, x, torch.tensor([0, 1]), references, n_samples=6, stdevs=0.1, seed=3)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_shap_expected_gradients_leaves_numpy_alone(linear):
    import numpy as np

    np.random.seed(11)
    expected = np.random.rand(2)
    np.random.seed(11)
    shap_expected_gradients(linear, torch.randn(1, 2, 3, 3), torch.tensor([0]), torch.zeros(1, 2, 3, 3), n_samples=3)
    np.testing.assert_array_equal(np.random.rand(2), expected)

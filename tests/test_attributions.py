"""Attribution wrappers against closed forms on a linear model and the completeness axiom."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_lib.attributions import gradient_shap, integrated_gradients, shap_expected_gradients


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

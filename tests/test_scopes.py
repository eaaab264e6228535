"""The explanation scopes and argument checks of :mod:`gradcam_lib.methods`: each test pins one rule
and names its source. References are hand-computed gradients of two-layer networks and captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torch import nn

from gradcam_lib.methods import (
    explanation_scope,
    grad_cam,
    grad_cam_pp,
    guided_backprop,
    guided_grad_cam,
    heatmaps,
    input_gradient,
    maps,
)
from gradcam_lib.methods.arguments import check_class_range, targets_2d
from gradcam_lib.methods.registry import reduce_channels
from gradcam_lib.methods.scopes import guided_relus

W1 = torch.tensor([[1.0, -2.0], [3.0, 1.0], [2.0, 2.0], [-1.0, 0.5]])
W2 = torch.tensor([[1.0, -1.0, 2.0, 3.0], [-2.0, 1.0, 1.0, 0.5]])


class TwoLayer(nn.Module):
    """logits = W2 act(W1 x), with the rectifier ``act`` given as a function (functional forms)."""

    def __init__(self, act) -> None:
        super().__init__()
        self.a = nn.Linear(2, 4, bias=False)
        self.b = nn.Linear(4, 2, bias=False)
        self.a.weight.data, self.b.weight.data = W1.clone(), W2.clone()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.act(self.a(x)))


def _guided_by_hand(x: torch.Tensor, target: int, lower: float, upper: float) -> torch.Tensor:
    """Springenberg et al. (2015), Fig. 1: through a rectifier the gradient passes only where its
    input lies in the linear region (lower < z < upper) and the incoming gradient is positive."""
    z = W1 @ x
    passes = (z > lower) & (z < upper)
    return W1.T @ (W2[target].clamp(min=0) * passes)


def _plain_by_hand(x: torch.Tensor, target: int, lower: float, upper: float) -> torch.Tensor:
    z = W1 @ x
    return W1.T @ (W2[target] * ((z > lower) & (z < upper)))


POINTS = [torch.tensor([1.5, 1.0]), torch.tensor([2.0, 1.2])]  # z = [-.5, 5.5, 5, -1], [-.4, 7.2, 6.4, -1.4]


# ---------------------------------------------------------------- explanation_scope


def test_the_scope_switches_to_eval_and_restores_train_mode():
    """Explanations are of the deployed (eval-mode) network: dropout off, BatchNorm on its running
    statistics; the caller's train flags come back afterwards."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.LazyLinear(3))
    model(torch.randn(2, 3, 6, 6))
    model.train()
    with explanation_scope(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_a_train_mode_model_is_explained_as_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.9),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model[1].running_mean.uniform_(-1, 1)
    images = torch.randn(2, 3, 6, 6)
    expected = grad_cam(model.eval(), model[2], images, [0, 2])
    model.train()
    torch.testing.assert_close(grad_cam(model, model[2], images, [0, 2]), expected)
    torch.testing.assert_close(input_gradient(model, images, [0, 2]), input_gradient(model.eval(), images, [0, 2]))


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_pp", "input_gradient", "guided_backprop", "guided_grad_cam"])
def test_entry_points_work_under_no_grad(method, cnn, toy_images):
    """``torch.no_grad()`` around a call (as in evaluation loops) must not change the maps: the scope
    switches gradients on itself."""
    expected = maps(method, cnn, "2", toy_images, [0, 1, 2], reduction="none")
    with torch.no_grad():
        inside = maps(method, cnn, "2", toy_images, [0, 1, 2], reduction="none")
    assert torch.is_grad_enabled()
    torch.testing.assert_close(inside, expected)
    assert expected.abs().sum() > 0


# ---------------------------------------------------------------- the guided rule, every rectifier


@pytest.mark.parametrize(
    "act, lower, upper",
    [
        (F.relu, 0.0, np.inf),
        (torch.relu, 0.0, np.inf),
        (torch.Tensor.relu, 0.0, np.inf),
        (lambda z: torch.relu_(z.clone()), 0.0, np.inf),
        (lambda z: z.clone().relu_(), 0.0, np.inf),
        (lambda z: F.relu(z.clone(), inplace=True), 0.0, np.inf),
        (F.relu6, 0.0, 6.0),
        (lambda z: F.relu6(z.clone(), inplace=True), 0.0, 6.0),
        (nn.ReLU6(), 0.0, 6.0),
        (lambda z: nn.ReLU6(inplace=True)(z.clone()), 0.0, 6.0),
        (lambda z: F.hardtanh(z, 0.0, 6.0), 0.0, 6.0),
        (lambda z: F.hardtanh_(z.clone(), 0.0, 6.0), 0.0, 6.0),
    ],
    ids=["F.relu", "torch.relu", "Tensor.relu", "torch.relu_", "Tensor.relu_", "F.relu-inplace", "F.relu6",
         "F.relu6-inplace", "nn.ReLU6", "nn.ReLU6-inplace", "hardtanh-0-6", "hardtanh_-0-6"],
)
def test_every_rectifier_is_guided_and_keeps_its_forward_value(act, lower, upper):
    model = TwoLayer(act)
    for x in POINTS:
        for target in (0, 1):
            ours = guided_backprop(model, x[None], [target])[0]
            torch.testing.assert_close(ours, _guided_by_hand(x, target, lower, upper))
            torch.testing.assert_close(input_gradient(model, x[None], [target])[0],
                                       _plain_by_hand(x, target, lower, upper))
        with guided_relus():  # the forward pass is the rectifier's own: ReLU6 stays capped at 6
            value = model(x[None])[0]
        expected = W2 @ (W1 @ x).clamp(min=lower, max=upper)
        torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("act", [F.hardtanh, nn.Hardtanh(), lambda z: F.hardtanh(z, -2.0, 6.0)],
                         ids=["F.hardtanh", "nn.Hardtanh", "hardtanh(-2, 6)"])
def test_a_hardtanh_that_is_not_a_rectifier_is_left_alone(act):
    """Only hardtanh(0, t) is a (capped) ReLU; hardtanh(-1, 1) passes negative values and keeps its
    own backward under the guided rule."""
    model = TwoLayer(act)
    x = torch.tensor([0.3, 0.2])  # z = [-0.1, 1.1, 1.0, -0.2]: inside (-1, 1) but negative for two units
    with guided_relus():
        value = model(x[None])[0]
    torch.testing.assert_close(value, model(x[None])[0])
    for target in (0, 1):
        torch.testing.assert_close(guided_backprop(model, x[None], [target]), input_gradient(model, x[None], [target]))


# ---------------------------------------------------------------- K classes in input space


@pytest.mark.parametrize("method", [input_gradient, guided_backprop])
def test_each_of_k_targets_gets_its_own_input_gradient(method):
    """With (B, K) targets, column k is the gradient of logit targets[:, k] (captum's Saliency, one
    call per class, for the plain gradient; the hand-computed guided rule for Guided Backprop)."""
    model = TwoLayer(F.relu)
    x = torch.stack(POINTS)
    targets = torch.tensor([[1, 0], [0, 1]])
    ours = method(model, x, targets)
    assert ours.shape == (2, 2, 2)
    for b in range(2):
        for k in range(2):
            c = int(targets[b, k])
            if method is input_gradient:
                reference = Saliency(model).attribute(x[b : b + 1].clone().requires_grad_(), c, abs=False)[0]
            else:
                reference = _guided_by_hand(x[b], c, 0.0, np.inf)
            torch.testing.assert_close(ours[b, k], reference)


# ---------------------------------------------------------------- targets


def test_targets_must_cover_the_batch_and_lie_in_the_class_range(cnn, toy_images):
    with pytest.raises(ValueError, match="B=3"):
        grad_cam(cnn, "2", toy_images, [0, 1])
    with pytest.raises(ValueError, match="B=3"):
        input_gradient(cnn, toy_images, [[0], [1]])
    for bad in (6, -1):  # toy_cnn has 6 classes: 6 == num_classes is out of range, so is -1
        with pytest.raises(IndexError, match=r"\[0, 6\)"):
            grad_cam(cnn, "2", toy_images, [0, 1, bad])
        with pytest.raises(IndexError, match=r"\[0, 6\)"):
            guided_backprop(cnn, toy_images, [bad, 1, 0])
    check_class_range(torch.tensor([[0, 5]]), 6)  # the edges are valid
    check_class_range(torch.zeros((0, 1), dtype=torch.long), 6)  # so is nothing at all


def test_targets_2d_shapes_by_hand():
    values, single = targets_2d(2, 3)
    assert values.tolist() == [[2], [2], [2]] and single
    values, single = targets_2d([[1, 2], [0, 0]], 2)
    assert values.tolist() == [[1, 2], [0, 0]] and not single
    values, single = targets_2d(torch.tensor([1.0, 2.0]), 2)
    assert values.dtype == torch.long and values.tolist() == [[1], [2]] and single
    with pytest.raises(ValueError, match="at least one class"):
        targets_2d(torch.zeros((2, 0)), 2)
    with pytest.raises(ValueError, match="whole class indices"):
        targets_2d([1.5, 2.0], 2)
    with pytest.raises(TypeError, match="integer"):
        targets_2d(torch.tensor([True, False]), 2)


# ---------------------------------------------------------------- reductions and dispatch


def test_channel_reductions_by_hand():
    """Simonyan et al. (2014), Sec. 3.1: the saliency of a pixel is max over channels of |w|."""
    m = torch.tensor([[[1.0, -3.0]], [[-2.0, 0.5]], [[0.5, 2.0]]])  # (C=3, H=1, W=2)
    assert reduce_channels(m, "max_abs").tolist() == [[2.0, 3.0]]
    assert reduce_channels(m, "sum").tolist() == [[-0.5, -0.5]]
    assert reduce_channels(m, "none") is m


def test_heatmaps_dispatch_each_key_to_its_own_method(cnn, toy_images):
    targets = [0, 1, 2]
    assert not torch.allclose(grad_cam(cnn, "2", toy_images, targets), grad_cam_pp(cnn, "2", toy_images, targets))
    torch.testing.assert_close(heatmaps("gradcam", cnn, "2", toy_images, targets), grad_cam(cnn, "2", toy_images, targets))
    torch.testing.assert_close(heatmaps("gradcam_pp", cnn, "2", toy_images, targets),
                               grad_cam_pp(cnn, "2", toy_images, targets))
    for key, method in (("backprop", input_gradient), ("guided_backprop", guided_backprop)):
        torch.testing.assert_close(heatmaps(key, cnn, "2", toy_images, targets),
                                   method(cnn, toy_images, targets).abs().amax(dim=1))
    torch.testing.assert_close(heatmaps("guided_gradcam", cnn, "2", toy_images, targets),
                               guided_grad_cam(cnn, "2", toy_images, targets).abs().amax(dim=1))


# ---- mutation tests: grad_cam_top_k's arguments


def test_grad_cam_top_k_defaults_to_5_and_checks_k_and_the_batch(cnn, toy_images):
    """The localisation protocol's top-5 by default; k may be every class (6 here) but not a bool, a
    float or more than the classes; the batch must be (B, C, H, W)."""
    from gradcam_lib.methods import grad_cam_top_k

    logits, classes, maps = grad_cam_top_k(cnn, "2", toy_images)
    assert classes.shape == (3, 5) and maps.shape == (3, 5, 12, 12)
    assert classes.tolist() == cnn(toy_images).topk(5, dim=1).indices.tolist()
    _, every, _ = grad_cam_top_k(cnn, "2", toy_images, k=6)
    assert sorted(every[0].tolist()) == list(range(6))
    for bad in (True, 1.5, -1):
        with pytest.raises(ValueError, match="k must be"):
            grad_cam_top_k(cnn, "2", toy_images, k=bad)
    with pytest.raises(ValueError, match="larger than"):
        grad_cam_top_k(cnn, "2", toy_images, k=7)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        grad_cam_top_k(cnn, "2", torch.randn(3, 12))

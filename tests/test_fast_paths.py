"""The fast paths of :mod:`gradcam_lib.methods.gradients`: Guided Grad-CAM from one forward pass
(the rectifiers' backward rule switched between its two halves) and K classes from one batched
backward, against the old paths written out here (a forward and a backward per class; Guided
Backprop times a separate Grad-CAM, paper Sec. 3.1) and against captum's ``GuidedGradCam``."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedGradCam
from torch import nn
from toy_models import toy_cnn

from gradcam_lib.methods import grad_cam, guided_backprop, guided_grad_cam, input_gradient
from gradcam_lib.methods.scopes import guided_relus

RTOL = 1e-5  # relative to the largest |value| of the reference: batched matrix products round differently


def _assert_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.shape == reference.shape
    assert reference.abs().max() > 0  # a reference of zeros would compare nothing
    ours, reference = ours.detach(), reference.detach()
    torch.testing.assert_close(ours, reference, rtol=0.0, atol=RTOL * float(reference.abs().max()))


# ---------------------------------------------------------------- the old paths, written out


def _per_class_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, guided: bool) -> torch.Tensor:
    """(B, K, ...): for each class, its own forward pass (guided or plain) and backward pass."""
    model.eval()
    columns = []
    for k in range(targets.shape[1]):
        inputs = images.clone().requires_grad_(True)
        with guided_relus() if guided else torch.enable_grad():
            score = model(inputs).gather(1, targets[:, k : k + 1]).sum()
        columns.append(torch.autograd.grad(score, inputs)[0])
    return torch.stack(columns, dim=1)


def _two_pass_guided_grad_cam(model: nn.Module, layer: str, images: torch.Tensor,
                              targets: torch.Tensor) -> torch.Tensor:
    """Guided Backprop times the upsampled Grad-CAM of a separate plain pass, class by class."""
    cams = torch.stack([grad_cam(model, layer, images, targets[:, k]) for k in range(targets.shape[1])], dim=1)
    return _per_class_gradients(model, images, targets, guided=True) * cams.unsqueeze(-3)


# ---------------------------------------------------------------- models


class _Block(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN, plus the shortcut, through the same in-place
    ReLU module (used twice, as torchvision's BasicBlock does)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


def _resnet_like() -> nn.Sequential:
    """stem, two residual blocks (the Grad-CAM layer ``"1"`` is the first), pool, linear."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()), _Block(6), _Block(6),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 7))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _vgg_like() -> nn.Sequential:
    """convolutions with ReLUs (the layer ``"3"`` is an in-place ReLU, as VGG-16's ``features.29``),
    then a head with ReLU6 and dropout: rectifiers after the layer, where the two rules differ."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, padding=1),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 6, 16), nn.ReLU6(),
                         nn.Dropout(0.5), nn.Linear(16, 7)).eval()


MODELS = {"vgg_like": (_vgg_like, "3", 12), "resnet_like": (_resnet_like, "1", 12), "toy_cnn": (toy_cnn, "2", 12),
          "resnet18": (lambda: torchvision.models.resnet18(num_classes=9).eval(), "layer4", 64)}
TARGETS = torch.tensor([[3, 1, 5], [0, 3, 3]])  # K = 3, a class repeated


@pytest.fixture(scope="module", params=list(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[nn.Module, str, torch.Tensor]:
    build, layer, size = MODELS[request.param]
    with torch.random.fork_rng():
        model = build()
    return model, layer, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------- equality with the old paths


def test_guided_grad_cam_from_one_pass_equals_the_two_pass_product(case):
    model, layer, images = case
    reference = _two_pass_guided_grad_cam(model, layer, images, TARGETS)
    _assert_close(guided_grad_cam(model, layer, images, TARGETS), reference)
    _assert_close(guided_grad_cam(model, layer, images, TARGETS[:, 1]), reference[:, 1])


@pytest.mark.parametrize("name", ["vgg_like", "resnet_like", "toy_cnn"])
def test_without_the_switch_to_the_plain_rule_the_one_pass_product_would_differ(name, monkeypatch):
    """Rectifiers run after these layers, so Grad-CAM's half must back-propagate by the plain rule:
    with the switch made a no-op (the guided rule in both halves) the maps are not the paper's."""
    build, layer, size = MODELS[name]
    model = build()
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    reference = _two_pass_guided_grad_cam(model, layer, images, TARGETS)
    monkeypatch.setattr(guided_relus, "plain_backward", lambda self: contextlib.nullcontext())
    assert not torch.allclose(guided_grad_cam(model, layer, images, TARGETS), reference, rtol=1e-3, atol=0.0)


@pytest.mark.parametrize("method, guided", [(input_gradient, False), (guided_backprop, True)])
def test_k_classes_from_one_batched_backward_equal_one_pass_per_class(case, method, guided):
    model, _, images = case
    reference = _per_class_gradients(model, images, TARGETS, guided)
    _assert_close(method(model, images, TARGETS), reference)
    for k in range(TARGETS.shape[1]):  # and the single-class call (the plain backward) is column k
        _assert_close(method(model, images, TARGETS[:, k]), reference[:, k])


def test_guided_grad_cam_matches_captum_on_vgg11():
    """captum's GuidedGradCam (bilinear up-sampling) guides VGG's nn.ReLU modules, which are not
    reused: an independent reference, class by class."""
    torch.manual_seed(5)
    model = torchvision.models.vgg11(num_classes=10).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([[3, 7, 1], [1, 3, 3]])
    ours = guided_grad_cam(model, "features.18", images, targets)
    reference = GuidedGradCam(model, model.features[18])
    for k in range(targets.shape[1]):
        theirs = reference.attribute(images.clone().requires_grad_(), targets[:, k], interpolate_mode="bilinear")
        _assert_close(ours[:, k], theirs)


@pytest.mark.parametrize("name", ["toy_cnn", "resnet_like", "resnet18"])
def test_guided_grad_cam_matches_captum_on_models_of_nn_relu_modules(name):
    """captum guides nn.ReLU modules (a reused one too: the residual blocks), not ReLU6: these
    models have only nn.ReLU."""
    build, layer, size = MODELS[name]
    model = build()
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        targets = model(images).topk(2, dim=1).indices  # the top classes: their Grad-CAM is not all zero
    ours = guided_grad_cam(model, layer, images, targets)
    reference = GuidedGradCam(model, model.get_submodule(layer))
    for k in range(2):
        theirs = reference.attribute(images.clone().requires_grad_(), targets[:, k], interpolate_mode="bilinear")
        _assert_close(ours[:, k], theirs)


# ---------------------------------------------------------------- one forward pass, one chooser call


def test_guided_grad_cam_runs_one_forward_pass_and_calls_a_chooser_once():
    model = _vgg_like()
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    forwards: list[int] = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    calls: list[torch.Tensor] = []

    def top2(logits: torch.Tensor) -> torch.Tensor:
        calls.append(logits)
        return logits.topk(2, dim=1).indices

    try:
        ours = guided_grad_cam(model, "3", images, top2)
    finally:
        handle.remove()
    assert len(forwards) == 1 and len(calls) == 1
    chosen = top2(calls[0])
    _assert_close(ours, _two_pass_guided_grad_cam(model, "3", images, chosen))


def test_guided_argument_reuses_the_callers_guided_backprop():
    model = _vgg_like()
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(8))
    guided = guided_backprop(model, images, TARGETS)
    _assert_close(guided_grad_cam(model, "3", images, TARGETS, guided=guided),
                  guided_grad_cam(model, "3", images, TARGETS))
    with pytest.raises(ValueError, match="fixed targets"):
        guided_grad_cam(model, "3", images, lambda logits: logits.argmax(1), guided=guided)


# ---------------------------------------------------------------- the rule and its switch


@pytest.mark.parametrize(
    "rectifier, upper",
    [(F.relu, None), (lambda z: F.relu(z, inplace=True), None), (nn.ReLU6(), 6.0), (lambda z: F.relu6(z, True), 6.0)],
    ids=["relu", "relu-inplace", "ReLU6", "relu6-inplace"],
)
def test_the_guided_rule_passes_only_positive_gradients_where_the_input_was_in_the_linear_region(rectifier, upper):
    """Springenberg et al. (2015), Fig. 1, one unit per case, through a batched backward of two
    seeds (the vmapped path of K classes): input x -- negative, in (0, 6), above 6 -- times
    incoming gradient g -- positive, negative."""
    x = torch.tensor([-1.0, -1.0, 2.0, 2.0, 7.0, 7.0])
    g = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    linear = x > 0 if upper is None else (x > 0) & (x < upper)
    expected = {True: g.clamp(min=0) * linear, False: g * linear}
    rectifiers = guided_relus()
    leaf = x.clone().requires_grad_(True)
    with rectifiers:
        y = rectifier(leaf * 1.0)  # a non-leaf: in-place rectifiers may overwrite it
    torch.testing.assert_close(y, x.clamp(min=0, max=upper))
    seeds = torch.stack([g, 2 * g])
    (guided,) = torch.autograd.grad(y, leaf, seeds, is_grads_batched=True, retain_graph=True)
    with rectifiers.plain_backward():
        (plain,) = torch.autograd.grad(y, leaf, seeds, is_grads_batched=True, retain_graph=True)
    torch.testing.assert_close(guided, torch.stack([expected[True], 2 * expected[True]]))
    torch.testing.assert_close(plain, torch.stack([expected[False], 2 * expected[False]]))
    assert expected[True].tolist() == [0, 0, 1, 0, 0 if upper else 1, 0]  # the hand-read rule itself


def test_the_rule_switch_is_restored_after_an_exception():
    rectifiers = guided_relus()
    leaf = torch.tensor([1.0, -1.0], requires_grad=True)
    with rectifiers:
        y = F.relu(leaf * 1.0)
    with pytest.raises(RuntimeError, match="inside"), rectifiers.plain_backward():
        assert not rectifiers.guided
        raise RuntimeError("inside")
    assert rectifiers.guided
    (gradient,) = torch.autograd.grad(y, leaf, torch.tensor([-1.0, 1.0]))
    assert gradient.tolist() == [0.0, 0.0]  # guided again: the negative gradient is stopped


def test_a_failing_chooser_leaves_no_mode_and_no_hook():
    model = _vgg_like()
    images = torch.randn(2, 3, 12, 12)

    def refuse(logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("chooser failed")

    with pytest.raises(RuntimeError, match="chooser failed"):
        guided_grad_cam(model, "3", images, refuse)
    assert not torch.overrides._get_current_function_mode_stack()
    assert not model[3]._forward_hooks
    assert all(p.requires_grad for p in model.parameters())

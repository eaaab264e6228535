"""Every sentence of the README, the docstrings and the book that compares gradcam_lib with captum or
pytorch-grad-cam, as a test that fails when the sentence stops being true. Random-weight models
(offline), small inputs."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import GuidedBackprop, LayerGradCam
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from gradcam_lib.methods import grad_cam, grad_cam_pp, guided_backprop, input_gradient
from gradcam_lib.models import load_model


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _captum_guided(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    return GuidedBackprop(model).attribute(x.clone().requires_grad_(), torch.tensor([target]))[0]


def _pytorch_grad_cam_guided(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """pytorch-grad-cam's guided backprop of image 0, as (3, H, W); it swaps the model's nn.ReLU
    modules while it runs and accumulates parameter gradients, which are cleared here."""
    try:
        out = GuidedBackpropReLUModel(model, device="cpu")(x.clone(), target_category=target)
    finally:
        model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def _hooking_libraries(model: nn.Module, x: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    return {"captum": _captum_guided(model, x, target), "pytorch-grad-cam": _pytorch_grad_cam_guided(model, x, target)}


# ------------------------------------------- guided backprop: which rectifiers get guided


def test_googlenet_module_hooking_guided_backprop_is_the_plain_gradient():
    """torchvision's GoogLeNet calls F.relu (no nn.ReLU module): captum and pytorch-grad-cam return
    the plain gradient; ours guides and equals captum on a copy whose rectifiers are modules."""
    torch.manual_seed(5)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    plain = input_gradient(model, x, 4)[0]
    for name, theirs in _hooking_libraries(model, x, 4).items():
        torch.testing.assert_close(theirs, plain, msg=name)
    ours = guided_backprop(model, x, 4)[0]
    assert _relative(ours, plain) > 0.1

    def forward(self, inputs):
        return self.relu(self.bn(self.conv(inputs)))

    for module in model.modules():
        if type(module).__name__ == "BasicConv2d":
            module.relu = nn.ReLU()
            module.forward = types.MethodType(forward, module)
    assert _relative(ours, _captum_guided(model, x, 4)) < 1e-5


def test_efficientnet_lite_module_hooking_guided_backprop_is_the_plain_gradient():
    """EfficientNet-Lite rectifies with nn.ReLU6, which captum and pytorch-grad-cam do not guide."""
    torch.manual_seed(6)
    model = load_model("efficientnet_lite0", pretrained=False).model
    x = torch.randn(1, 3, 32, 32)
    plain = input_gradient(model, x, 7)[0]
    for name, theirs in _hooking_libraries(model, x, 7).items():
        torch.testing.assert_close(theirs, plain, msg=name)
    assert _relative(guided_backprop(model, x, 7)[0], plain) > 0.1


def test_densenet_module_hooking_misses_only_the_final_functional_relu():
    """DenseNet's 120 nn.ReLU modules are guided by captum, its final F.relu is not: captum's map is
    neither the plain gradient nor ours, and it equals ours once that F.relu is an nn.ReLU module."""
    torch.manual_seed(7)
    model = torchvision.models.densenet121(weights=None, num_classes=10).eval()
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 120
    x = torch.randn(1, 3, 32, 32)
    theirs = _captum_guided(model, x, 3)
    ours = guided_backprop(model, x, 3)[0]
    plain = input_gradient(model, x, 3)[0]
    assert _relative(theirs, ours) > 0.05
    assert _relative(theirs, plain) > 0.05
    with_module = nn.Sequential(model.features, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.classifier)
    assert _relative(ours, _captum_guided(with_module, x, 3)) < 1e-5
    torch.testing.assert_close(_pytorch_grad_cam_guided(model, x, 3), theirs, rtol=1e-4, atol=1e-6)


def test_module_hooking_guides_a_reused_relu_module_correctly():
    """Why guided_relus does not claim otherwise: captum and pytorch-grad-cam guide an nn.ReLU module
    that runs twice exactly as ours does."""
    torch.manual_seed(8)

    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
            self.fc = nn.Linear(6, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.act(self.b(self.act(self.a(x)))).mean(dim=(-2, -1)))

    model = Reused().eval()
    x = torch.randn(1, 3, 8, 8)
    ours = guided_backprop(model, x, 1)[0]
    assert _relative(ours, input_gradient(model, x, 1)[0]) > 0.1
    for name, theirs in _hooking_libraries(model, x, 1).items():
        torch.testing.assert_close(theirs, ours, msg=name)


# ------------------------------------------- Grad-CAM: passes, calls, parameter gradients


class _PooledLinear(nn.Module):
    """logit_c = sum_k W_ck mean_ij(A_k), A = ReLU(conv(x)): dlogit_c / dA_kij = W_ck / (h w)."""

    def __init__(self, channels: int = 4, classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(-2, -1)))


def test_captum_layergradcam_needs_the_target_before_its_pass():
    """captum's LayerGradCam refuses to run without targets on a multi-class output: the predicted
    classes take a forward pass of their own first."""
    torch.manual_seed(9)
    model = _PooledLinear().eval()
    with pytest.raises(AssertionError, match="Target not provided"):
        LayerGradCam(model, model.features).attribute(torch.randn(2, 3, 8, 8))


def test_pytorch_grad_cam_maps_the_top1_in_its_pass_but_one_class_per_call():
    """targets=None maps the predicted class in the same pass (so top-1 needs no second pass); the
    result is one map per image, so k > 1 classes take k calls. It also backpropagates into every
    parameter (gradcam_lib leaves .grad untouched)."""
    torch.manual_seed(10)
    model = _PooledLinear().eval()
    x = torch.randn(2, 3, 8, 8)
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    cam = GradCAM(model=model, target_layers=[model.features])
    try:
        top1 = cam(x, targets=None)
        handle.remove()
        predicted = model(x).argmax(1)
        explicit = cam(x, targets=[ClassifierOutputTarget(int(c)) for c in predicted])
    finally:
        handle.remove()
        cam.activations_and_grads.release()
    assert len(calls) == 1 and top1.shape == (2, 8, 8)
    np.testing.assert_allclose(top1, explicit, rtol=1e-6, atol=1e-7)
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    grad_cam(model, "features", x, predicted)
    assert all(p.grad is None for p in model.parameters())


def test_pytorch_grad_cam_pp_epsilon_changes_maps_at_real_gradient_sizes():
    """pytorch-grad-cam adds 1e-7 to the Grad-CAM++ denominator: with layer gradients of ~1e-3 its
    map moves by > 10 % of the maximum from the exact closed form, which ours matches; with the
    logits scaled by 1000 (gradients ~1, where 1e-7 is negligible) the two agree."""
    torch.manual_seed(11)
    model = _PooledLinear(channels=8).eval()
    with torch.no_grad():
        model.fc.weight.copy_(torch.rand(6, 8) * 0.064)  # dlogit/dA = W / 64 ~ 5e-4
    x = torch.rand(1, 3, 8, 8)

    def theirs(net: nn.Module) -> torch.Tensor:
        cam = GradCAMPlusPlus(model=net, target_layers=[model.features])
        try:
            outputs = cam.activations_and_grads(x)
            net.zero_grad()
            outputs[0, 2].backward()
            a = cam.activations_and_grads.activations[-1].numpy()
            g = cam.activations_and_grads.gradients[-1].numpy()
            raw = cam.get_cam_image(x, model.features, [ClassifierOutputTarget(2)], a, g, False)
        finally:
            cam.activations_and_grads.release()
            net.zero_grad(set_to_none=True)
        return torch.from_numpy(np.maximum(raw, 0)).float()

    ours = grad_cam_pp(model, model.features, x, 2, upsample=False)
    a = model.features(x).detach().double()[0]
    g = (model.fc.weight.detach().double()[2] / 64.0)[:, None, None].expand_as(a)
    alpha = g**2 / (2 * g**2 + a.sum(dim=(1, 2), keepdim=True) * g**3)
    exact = torch.einsum("k,khw->hw", (alpha * g.clamp(min=0)).sum(dim=(1, 2)), a).clamp(min=0)
    assert _relative(ours[0].double(), exact) < 1e-5
    assert _relative(theirs(model)[0], exact.float()) > 0.1

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return 1000.0 * self.inner(inputs)

    scaled = Scaled()
    assert _relative(theirs(scaled)[0], grad_cam_pp(scaled, model.features, x, 2, upsample=False)[0]) < 1e-4

"""gradcam_lib.methods against independent references: captum, pytorch-grad-cam, and closed forms."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from gradcam_lib.methods import grad_cam, grad_cam_pp, grad_cam_top_k, guided_backprop, guided_grad_cam, input_gradient
from gradcam_lib.models import load_model


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.detach(), reference.detach()
    return float((ours - reference).abs().max() / reference.abs().max())


class PooledLinear(nn.Module):
    """logit_c = sum_k W_ck mean_ij(A_k) + b_c with A = the input: Grad-CAM's weights are W_ck / (hw)."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(-2, -1)))


# ---------------------------------------------------------------- Grad-CAM


def test_grad_cam_closed_form_on_global_pooling_head():
    torch.manual_seed(1)
    model = PooledLinear()
    x = torch.rand(2, 4, 5, 6)
    targets = torch.tensor([0, 2])
    maps = grad_cam(model, model.features, x, targets, upsample=False)
    w = model.fc.weight.detach().numpy()[targets.numpy()] / 30.0
    expected = np.maximum(np.einsum("bk,bkhw->bhw", w, x.numpy()), 0)
    np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-5, atol=1e-7)


def _grad_cam_pp_closed_form(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Chattopadhyay et al. 2018, Eq. 19, in float64, with no epsilon."""
    alpha = g**2 / (2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    return np.maximum(np.einsum("k,khw->hw", weights, a), 0)


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_grad_cam_pp_closed_form_on_global_pooling_head(scale):
    """Exact Eq. 19; at scale 1e-4 the gradients are ~1e-5 (g^2 ~ 1e-10), where an additive eps of
    1e-6 in the denominator would shrink every alpha by orders of magnitude."""
    torch.manual_seed(2)
    model = PooledLinear()
    with torch.no_grad():
        model.fc.weight.mul_(scale)
    x = torch.rand(1, 4, 3, 3, dtype=torch.float64)
    model = model.double()
    target = torch.tensor([1])
    maps = grad_cam_pp(model, model.features, x, target, upsample=False)
    a = x.numpy()[0]
    g = np.broadcast_to(model.fc.weight.detach().numpy()[1][:, None, None] / 9.0, a.shape)
    np.testing.assert_allclose(maps.numpy()[0], _grad_cam_pp_closed_form(a, g), rtol=1e-10, atol=0)
    assert maps.max() > 0


def test_grad_cam_pp_zero_denominator_gives_zero_weight():
    """A channel whose gradient is 0 (or whose denominator 2 g^2 + sum(A) g^3 vanishes) gets alpha = 0,
    not NaN."""
    model = PooledLinear(channels=2, classes=1)
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[0.0, -4.0]]))  # channel 0: g = 0; channel 1: g = -1 on 2x2
        model.fc.bias.zero_()
    x = torch.full((1, 2, 2, 2), 0.5)  # channel 1: sum A = 2 -> 2 g^2 + 2 g^3 = 2 - 2 = 0
    maps = grad_cam_pp(model, model.features, x, torch.tensor([0]), upsample=False)
    assert torch.isfinite(maps).all() and (maps == 0).all()


def test_grad_cam_matches_captum_layergradcam_bilinear(lite0, images):
    targets = torch.tensor([285, 967])
    ours = grad_cam(lite0.model, lite0.layer, images, targets)
    captum = LayerGradCam(lite0.model, lite0.layer).attribute(images, targets, relu_attributions=True)
    captum = LayerAttribution.interpolate(captum, (224, 224), interpolate_mode="bilinear")[:, 0]
    assert ours.shape == (2, 224, 224)
    assert _relative_error(ours, captum) < 1e-5


def test_counterfactual_negates_the_gradients(lite0, images):
    targets = torch.tensor([285, 967])
    ours = grad_cam(lite0.model, lite0.layer, images, targets, counterfactual=True, upsample=False)
    raw = LayerGradCam(lite0.model, lite0.layer).attribute(images, targets, relu_attributions=False)[:, 0]
    assert _relative_error(ours, (-raw).clamp(min=0)) < 1e-5


def _pytorch_grad_cam_raw(cam_class, entry, images, targets) -> np.ndarray:
    """pytorch-grad-cam's map before its min-max normalisation and resize."""
    cam = cam_class(model=entry.model, target_layers=[entry.layer])
    try:
        outputs = cam.activations_and_grads(images)
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        entry.model.zero_grad()
        sum(target(output) for target, output in zip(chosen, outputs)).backward()
        activations = cam.activations_and_grads.activations[-1].numpy()  # the last call (a reused module)
        gradients = cam.activations_and_grads.gradients[-1].numpy()
        raw = cam.get_cam_image(images, entry.layer, chosen, activations, gradients, False)
    finally:
        cam.activations_and_grads.release()
        entry.model.zero_grad(set_to_none=True)
    return np.maximum(raw, 0)


class _ScaledLogits(nn.Module):
    """logits x 1000: real layer gradients of ~1e-3 become ~1, where pytorch-grad-cam's additive
    1e-7 in the Grad-CAM++ denominator is negligible, so it can serve as a reference."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1000.0 * self.model(x)


@pytest.mark.parametrize("ours, theirs", [(grad_cam, GradCAM), (grad_cam_pp, GradCAMPlusPlus)])
def test_matches_pytorch_grad_cam_before_its_normalisation(lite0, images, ours, theirs):
    targets = torch.tensor([285, 967])
    scaled = types.SimpleNamespace(model=_ScaledLogits(lite0.model), layer=lite0.layer)
    reference = torch.from_numpy(_pytorch_grad_cam_raw(theirs, scaled, images, targets))
    mine = ours(scaled.model, lite0.layer, images, targets, upsample=False)
    assert _relative_error(mine, reference) < 1e-4


def test_k_targets_equal_separate_calls_and_one_forward(lite0, images):
    targets = torch.tensor([[285, 281, 1], [967, 968, 504]])
    calls = []  # per forward pass: how many parameters require a gradient during it
    handle = lite0.model.register_forward_pre_hook(
        lambda module, _: calls.append(sum(p.requires_grad for p in module.parameters())))
    try:
        maps = grad_cam(lite0.model, lite0.layer, images, targets)
    finally:
        handle.remove()
    assert maps.shape == (2, 3, 224, 224)
    assert calls == [0]  # one forward pass for the K classes, with every parameter frozen
    assert all(p.requires_grad for p in lite0.model.parameters())  # and unfrozen again afterwards
    assert all(p.grad is None for p in lite0.model.parameters())  # .grad untouched (no .backward())
    for k in range(3):
        torch.testing.assert_close(maps[:, k], grad_cam(lite0.model, lite0.layer, images, targets[:, k]))


def test_batch_members_are_independent(lite0, images):
    targets = torch.tensor([285, 967])
    together = grad_cam(lite0.model, lite0.layer, images, targets)
    alone = grad_cam(lite0.model, lite0.layer, images[1:], targets[1:])
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-6)


def test_top_k_uses_the_predicted_classes(lite0, images):
    logits, classes, maps = grad_cam_top_k(lite0.model, lite0.layer, images, k=5)
    assert torch.equal(classes, lite0.model(images).topk(5).indices)
    torch.testing.assert_close(maps, grad_cam(lite0.model, lite0.layer, images, classes))
    assert logits.shape == (2, 1000)


# ---------------------------------------------------------------- model state and clean-up


def test_state_restored_and_hooks_removed_after_an_exception(lite0, images):
    model = lite0.model
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    with pytest.raises(IndexError):
        grad_cam(model, lite0.layer, images, torch.tensor([0, 5000]))
    with pytest.raises(IndexError):
        guided_backprop(model, images, torch.tensor([0, 5000]))
    try:
        assert all(m.training for m in model.modules())
        assert frozen.requires_grad is False
        assert all(p.requires_grad for p in list(model.parameters())[1:])
        assert not lite0.layer._forward_hooks
        assert not torch.overrides._get_current_function_mode_stack()
        assert torch.is_grad_enabled()
    finally:
        model.eval()
        frozen.requires_grad_(True)


def test_bad_target_shape_is_reported(lite0, images):
    with pytest.raises(ValueError, match="targets must be"):
        grad_cam(lite0.model, lite0.layer, images, torch.tensor([1, 2, 3]))


# ---------------------------------------------------------------- input handling (issues 11, 19)


def _closed_form(model: PooledLinear, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM of PooledLinear in float64: ReLU(sum_k W_ck / (hw) A_k)."""
    a = x.detach().double().numpy()
    w = model.fc.weight.detach().double().numpy()[targets] / (a.shape[-1] * a.shape[-2])
    return np.maximum(np.einsum("bk,bkhw->bhw", w, a), 0)


@pytest.fixture
def pooled() -> PooledLinear:
    torch.manual_seed(12)
    return PooledLinear()


@pytest.fixture
def x4() -> torch.Tensor:
    return torch.rand(2, 4, 5, 7, generator=torch.Generator().manual_seed(13))


@pytest.mark.parametrize(
    "layer, targets, expected",
    [
        ("features", torch.tensor([0, 2]), [0, 2]),  # the layer by its dotted name
        ("features", 2, [2, 2]),  # one int: the same class for every image
        ("features", torch.tensor(1), [1, 1]),  # a 0-d tensor
        ("features", torch.tensor([2.0, 0.0]), [2, 0]),  # whole-number floats
        ("features", [1, 0], [1, 0]),  # a list
    ],
)
def test_layer_names_and_target_forms(pooled, x4, layer, targets, expected):
    maps = grad_cam(pooled, layer, x4, targets, upsample=False)
    np.testing.assert_allclose(maps.numpy(), _closed_form(pooled, x4, expected), rtol=1e-5, atol=1e-7)


def test_a_single_image_with_an_int_target(pooled, x4):
    maps = grad_cam(pooled, pooled.features, x4[:1], 2, upsample=False)
    np.testing.assert_allclose(maps.numpy(), _closed_form(pooled, x4[:1], [2]), rtol=1e-5, atol=1e-7)


def test_float64_images_are_computed_in_the_models_dtype(pooled, x4):
    maps = grad_cam(pooled, "features", x4.double(), [0, 2], upsample=False)
    assert maps.dtype == torch.float32
    np.testing.assert_allclose(maps.numpy(), _closed_form(pooled, x4, [0, 2]), rtol=1e-5, atol=1e-7)


def test_tensors_made_in_inference_mode_are_explained(pooled, x4):
    with torch.inference_mode():
        frozen = x4.clone()
    maps = grad_cam(pooled, "features", frozen, [0, 2], upsample=False)
    np.testing.assert_allclose(maps.numpy(), _closed_form(pooled, x4, [0, 2]), rtol=1e-5, atol=1e-7)
    assert input_gradient(pooled, frozen, [0, 2]).shape == x4.shape


class _TupleOut(nn.Module):
    def __init__(self, inner: nn.Module, as_dict: bool) -> None:
        super().__init__()
        self.inner, self.as_dict = inner, as_dict

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        logits = self.inner(x)
        return {"logits": logits} if self.as_dict else (logits, logits)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, x: grad_cam(m, "fc.nope", x, [0, 1]), ValueError, r"layer 'fc.nope' is not a submodule of PooledLinear"),
        (lambda m, x: grad_cam(m, nn.Identity(), x, [0, 1]), ValueError, r"layer Identity is not a submodule of PooledLinear"),
        (lambda m, x: grad_cam(m, 3, x, [0, 1]), TypeError, r"layer must be an nn.Module of the model or its dotted name"),
        (lambda m, x: grad_cam(m, "features", x[0], 1), ValueError, r"add the batch dimension with images\[None\]"),
        (lambda m, x: guided_backprop(m, x[0], 1), ValueError, r"add the batch dimension with images\[None\]"),
        (lambda m, x: grad_cam(m, "features", x[:0], 1), ValueError, r"images is an empty batch"),
        (lambda m, x: grad_cam(m, "features", (x * 255).to(torch.uint8), 1), TypeError,
         r"images are torch.uint8.*entry.transform"),
        (lambda m, x: grad_cam(m, "features", x.numpy(), 1), TypeError, r"images must be a torch.Tensor"),
        (lambda m, x: grad_cam(m, "features", x, torch.tensor([1.7, 1.0])), ValueError,
         r"targets must be whole class indices, got \['1.7'\]; fractional values are refused"),
        (lambda m, x: grad_cam(m, "features", x, torch.zeros(2, 0, dtype=torch.long)), ValueError,
         r"targets has shape \(2, 0\): give at least one class per image"),
        (lambda m, x: grad_cam(m, "features", x, [0, 1, 2]), ValueError, r"targets must be \(B,\) or \(B, K\) with B=2"),
        (lambda m, x: grad_cam(m, "features", x, [0, 3]), IndexError, r"targets must be class indices in \[0, 3\)"),
        (lambda m, x: grad_cam_top_k(m, "features", x, 4), ValueError, r"k=4 is larger than the model's 3 classes"),
        (lambda m, x: grad_cam_top_k(m, "features", x, 0), ValueError, r"k must be >= 1"),
        (lambda m, x: grad_cam_top_k(m, "features", x, -1), ValueError, r"k must be a whole number of classes >= 1"),
        (lambda m, x: grad_cam_top_k(m, "features", x, 1, also=[0.5, 1]), ValueError, r"also must be whole class"),
        (lambda m, x: grad_cam(_TupleOut(m, False), "inner.features", x, 1), TypeError,
         r"_TupleOut returned a tuple, not a logits tensor.*self.model\(x\)\[0\]"),
        (lambda m, x: guided_backprop(_TupleOut(m, True), x, 1), TypeError,
         r"_TupleOut returned a dict.*\['logits'\]"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(pooled, x4, call, error, message):
    with pytest.raises(error, match=message):
        call(pooled, x4)
    assert not pooled.features._forward_hooks


def test_a_foreign_layer_is_refused_before_the_forward_pass(pooled, x4):
    calls = []
    handle = pooled.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match="not a submodule"):
            grad_cam(pooled, PooledLinear().features, x4, [0, 1])
    finally:
        handle.remove()
    assert calls == []


def test_inference_mode_is_refused_with_a_clear_message(pooled, x4):
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inside torch.inference_mode\(\)"):
        grad_cam(pooled, "features", x4, [0, 1])
    with torch.no_grad():  # no_grad is fine: the scope switches gradients on
        maps = grad_cam(pooled, "features", x4, [0, 1], upsample=False)
    np.testing.assert_allclose(maps.numpy(), _closed_form(pooled, x4, [0, 1]), rtol=1e-5, atol=1e-7)


def test_top_k_zero_with_also_maps_only_those(pooled, x4):
    _, classes, maps = grad_cam_top_k(pooled, "features", x4, 0, also=[2, 1])
    assert classes.tolist() == [[2], [1]]
    torch.testing.assert_close(maps[:, 0], grad_cam(pooled, "features", x4, [2, 1]))


# ---------------------------------------------------------------- Guided Backprop


def _hand_guided_gradient(w1: np.ndarray, w2: np.ndarray, x: np.ndarray, upper: float, target: int) -> np.ndarray:
    z = w1 @ x
    passes = (z > 0) & (z < upper)
    g = np.maximum(w2[target], 0) * passes
    return w1.T @ g


@pytest.mark.parametrize("activation, upper", [(nn.ReLU6(), 6.0), (nn.ReLU(inplace=True), np.inf)])
def test_guided_rule_hand_computed(activation, upper):
    w1 = np.array([[1.0, -2.0], [3.0, 1.0], [2.0, 2.0], [-1.0, 0.5]], dtype=np.float32)
    w2 = np.array([[1.0, -1.0, 2.0, 3.0], [-2.0, 1.0, 1.0, 0.5]], dtype=np.float32)
    x = np.array([1.5, 1.0], dtype=np.float32)  # z = [-0.5, 5.5, 5.0, -1.0]: the 6-cap matters for z > 6
    x_big = np.array([2.0, 1.0], dtype=np.float32)  # z = [0, 7, 6, -1.5]
    model = nn.Sequential(nn.Linear(2, 4, bias=False), activation, nn.Linear(4, 2, bias=False))
    model[0].weight.data = torch.from_numpy(w1)
    model[2].weight.data = torch.from_numpy(w2)
    for point in (x, x_big):
        for target in (0, 1):
            ours = guided_backprop(model, torch.from_numpy(point)[None], torch.tensor([target]))
            np.testing.assert_allclose(ours[0].numpy(), _hand_guided_gradient(w1, w2, point, upper, target), rtol=1e-6)


def test_guided_rule_on_a_reused_module_and_functional_relu():
    torch.manual_seed(3)

    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(torch.relu(self.b(self.act(self.a(x)))) + F.relu(self.b(self.act(self.a(x)))))

    class Separate(nn.Module):  # the same network with one nn.ReLU per use: captum handles it
        def __init__(self, src: Reuse) -> None:
            super().__init__()
            self.src = src
            self.r1, self.r2, self.r3, self.r4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.src
            return s.c(self.r2(s.b(self.r1(s.a(x)))) + self.r4(s.b(self.r3(s.a(x)))))

    model = Reuse()
    x = torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 0])
    reference = GuidedBackprop(Separate(model)).attribute(x.clone().requires_grad_(), targets)
    ours = guided_backprop(model, x, targets)
    torch.testing.assert_close(ours, reference)
    assert not torch.allclose(ours, input_gradient(model, x, targets))


def test_guided_backprop_matches_captum_where_captum_is_valid(images):
    torch.manual_seed(4)
    model = torchvision.models.vgg11(num_classes=10).eval()
    targets = torch.tensor([3, 7])
    reference = GuidedBackprop(model).attribute(images.clone().requires_grad_(), targets)
    ours = guided_backprop(model, images, targets)
    assert ours.shape == (2, 3, 224, 224)
    assert _relative_error(ours, reference) < 1e-5


# The captum / pytorch-grad-cam plain-gradient facts (GoogLeNet, EfficientNet-Lite, DenseNet) are
# in tests/test_comparisons.py.


def test_guided_backprop_through_relu6_differs_from_plain_gradient(lite0, images):
    target = torch.tensor([285, 967])
    plain = input_gradient(lite0.model, images, target)
    assert _relative_error(guided_backprop(lite0.model, images, target), plain) > 0.1


def test_guided_grad_cam_matches_captum_where_captum_is_valid(images):
    """Paper Sec. 3.1: Guided Backprop times the up-sampled Grad-CAM, against captum's GuidedGradCam
    (bilinear up-sampling) on VGG-11, whose nn.ReLU modules captum guides; K = 2 classes per image."""
    from captum.attr import GuidedGradCam

    torch.manual_seed(5)
    model = torchvision.models.vgg11(num_classes=10).eval()
    layer = model.features[18]  # the last convolution
    x = images[:, :, :96, :96]  # 3 x 3 at that layer
    targets = torch.tensor([[3, 7], [1, 3]])
    ours = guided_grad_cam(model, layer, x, targets)
    assert ours.shape == (2, 2, 3, 96, 96)
    reference = GuidedGradCam(model, layer)
    for k in range(2):
        theirs = reference.attribute(x.clone().requires_grad_(), targets[:, k], interpolate_mode="bilinear")
        assert _relative_error(ours[:, k], theirs) < 1e-4

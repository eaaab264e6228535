"""The modern CAM family (gradcam_lib.methods.cam_family): each method against pytorch-grad-cam 1.5.7
before its min-max normalisation (a toy CNN and a random-weight ResNet-18), against a case computed
by hand, K classes from one pass against K calls; Score-CAM's chunking and Eigen-CAM's
class-agnostic maps. (The registry's conformance test, tests/test_methods.py, covers shapes, signs,
state and choosers.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import EigenCAM, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from torch import nn
from toy_models import ChannelMeans, toy_cnn

from gradcam_lib.methods import maps, method
from gradcam_lib.methods.cam_family import eigen_cam, hires_cam, layer_cam, score_cam, xgrad_cam

OURS = {"hires_cam": hires_cam, "xgrad_cam": xgrad_cam, "layer_cam": layer_cam, "score_cam": score_cam,
        "eigen_cam": eigen_cam}
THEIRS = {"hires_cam": HiResCAM, "xgrad_cam": XGradCAM, "layer_cam": LayerCAM, "score_cam": ScoreCAM,
          "eigen_cam": EigenCAM}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _pgc_raw(key: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor):
    """pytorch-grad-cam's cam at the layer's resolution before its ReLU and normalisation (its
    ``get_cam_image`` on its own activations and gradients), and the activations."""
    cam = THEIRS[key](model=model, target_layers=[layer])
    cam.batch_size = 64  # Score-CAM's masked images per pass
    try:
        outputs = cam.activations_and_grads(images)
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        grads = None
        if cam.uses_gradients:
            model.zero_grad()
            sum(t(o) for t, o in zip(chosen, outputs, strict=True)).backward()
            grads = cam.activations_and_grads.gradients[0].numpy()
        acts = cam.activations_and_grads.activations[0].numpy()
        return torch.from_numpy(np.asarray(cam.get_cam_image(images, layer, chosen, acts, grads, False))), acts
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def _resnet18() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _resnet18()


# --------------------------------------------------------------------------------------------
# (a) pytorch-grad-cam before its normalisation
# --------------------------------------------------------------------------------------------


def _compare(key: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> None:
    raw, acts = _pgc_raw(key, model, layer, images, targets)
    options = {"align_corners": True} if key == "score_cam" else {}  # pytorch-grad-cam's mask upsampling
    ours = OURS[key](model, layer, images, targets, upsample=False, **options)
    assert ours.shape == raw.shape and ours.abs().max() > 0
    if key == "eigen_cam":  # its EigenCAM keeps LAPACK's sign; ours is its sign-corrected projection
        torch.testing.assert_close(ours, torch.from_numpy(get_2d_projection_with_sign_correction(acts)).clamp(min=0),
                                   rtol=1e-4, atol=1e-4 * float(raw.abs().max()))
        for mine, theirs in zip(ours, raw, strict=True):  # and theirs up to each image's sign
            assert min(_relative(mine, theirs.clamp(min=0)), _relative(mine, (-theirs).clamp(min=0))) < 1e-4
    else:
        torch.testing.assert_close(ours, raw.clamp(min=0), rtol=1e-4, atol=1e-5 * float(raw.abs().max()))
    if key == "score_cam" and raw.shape[-2:] != images.shape[-2:]:  # upsampled masks: the default
        # (align_corners=False, the authors' code) is not theirs
        assert _relative(score_cam(model, layer, images, targets, upsample=False), raw.clamp(min=0)) > 1e-3


@pytest.mark.parametrize("key", list(OURS))
def test_the_maps_are_pytorch_grad_cams_before_normalisation_on_a_toy_cnn(key):
    model = toy_cnn()
    images = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    _compare(key, model, model[2], images, torch.tensor([1, 4, 0]))


@pytest.mark.parametrize("key", list(OURS))
def test_the_maps_are_pytorch_grad_cams_before_normalisation_on_resnet18(key, resnet):
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    if key == "score_cam":  # 256 masked images per image: one smaller image is enough
        images = images[:1, :, :32, :32]
    _compare(key, resnet, resnet.layer3, images, torch.tensor([3, 7])[: len(images)])


# --------------------------------------------------------------------------------------------
# (b) by hand
# --------------------------------------------------------------------------------------------


def _linear_head() -> nn.Sequential:
    """logit_c = sum_kij W[c, k, i, j] A[k, i, j] on a (2, 1, 2) input, so dlogit_c/dA = W[c]:
    W[0] = [[2, 1], [-1, 1]], W[1] = [[1, 0], [1, 2]] (channel rows, positions columns)."""
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[2.0, 1.0, -1.0, 1.0], [1.0, 0.0, 1.0, 2.0]]))
    return model.eval()


A = torch.tensor([[[[1.0, 3.0]], [[2.0, -2.0]]]])  # A^0 = [1, 3], A^1 = [2, -2] (sums to 0)


def test_hires_cam_by_hand():
    # class 0: [2*1 + -1*2, 1*3 + 1*-2] = [0, 1]; class 1: [1*1 + 1*2, 0*3 + 2*-2] = [3, -4] -> [3, 0]
    model = _linear_head()
    result = hires_cam(model, model[0], A, [[0, 1]], upsample=False)
    torch.testing.assert_close(result, torch.tensor([[[[0.0, 1.0]], [[3.0, 0.0]]]]), rtol=0, atol=0)


def test_layer_cam_by_hand():
    # class 0: ReLU(W) = [[2, 1], [0, 1]]: [2*1 + 0, 1*3 + 1*-2] = [2, 1]; class 1: W >= 0, as HiResCAM
    model = _linear_head()
    result = layer_cam(model, model[0], A, [[0, 1]], upsample=False)
    torch.testing.assert_close(result, torch.tensor([[[[2.0, 1.0]], [[3.0, 0.0]]]]), rtol=0, atol=0)


def test_xgrad_cam_by_hand_with_a_channel_that_sums_to_zero():
    """w_0 = (1*2 + 3*1) / 4 = 1.25 (class 0), (1*1 + 3*0) / 4 = 0.25 (class 1); A^1 sums to 0:
    w_1 = 0, where pytorch-grad-cam's epsilon gives (2*-1 + -2*1) / 1e-7 = -4e7 (class 0)."""
    model = _linear_head()
    result = xgrad_cam(model, model[0], A, [[0, 1]], upsample=False)
    torch.testing.assert_close(result, torch.tensor([[[[1.25, 3.75]], [[0.25, 0.75]]]]), rtol=0, atol=0)
    theirs, _ = _pgc_raw("xgrad_cam", model, model[0], A.clone().requires_grad_(), torch.tensor([0]))
    assert float(theirs.clamp(min=0).max()) > 1e7


def test_score_cam_by_hand():
    """ChannelMeans (logit_c = mean of channel c) on X^0 = [0, 2], X^1 = [1, 3], X^2 = [4, 4]: masks
    H^0 = H^1 = [0, 1], H^2 = 0 (constant); class c scores mean(X^c H^k) = (X^c_2 / 2, X^c_2 / 2, 0);
    w = softmax; map = w_0 X^0 + w_1 X^1 + w_2 X^2."""
    model = ChannelMeans()
    x = torch.tensor([[[[0.0, 2.0]], [[1.0, 3.0]], [[4.0, 4.0]]]])
    result = score_cam(model, model.features, x, [[0, 2]])
    expected = []
    for s in (1.0, 2.0):  # X^0_2 / 2 = 1 (class 0), X^2_2 / 2 = 2 (class 2)
        e = math.exp(s)
        expected.append([[(e + 4) / (2 * e + 1), (5 * e + 4) / (2 * e + 1)]])
    torch.testing.assert_close(result, torch.tensor([expected]), rtol=1e-6, atol=0)


def test_eigen_cam_by_hand_with_its_sign_fixed():
    """Positions x channels (A^2 constant, centred away): image 0 rows [0,0,1], [0,0,1], [3,6,1],
    centred [-1,-2,0], [-1,-2,0], [2,4,0]: V_1 = +-[1,2,0]/sqrt5, projection +-[-sqrt5, -sqrt5, 2 sqrt5];
    the larger magnitude positive: ReLU -> [0, 0, 2 sqrt5]. Image 1 is its mirror: the same map."""
    model = ChannelMeans()
    x = torch.tensor([[[[0.0, 0.0, 3.0]], [[0.0, 0.0, 6.0]], [[1.0, 1.0, 1.0]]],
                      [[[3.0, 3.0, 0.0]], [[6.0, 6.0, 0.0]], [[1.0, 1.0, 1.0]]]])
    result = eigen_cam(model, model.features, x, torch.tensor([[0, 2], [1, 0]]), upsample=False)
    expected = torch.tensor([[0.0, 0.0, 2 * math.sqrt(5)]])
    for image, k in ((0, 0), (0, 1), (1, 0), (1, 1)):
        torch.testing.assert_close(result[image, k], expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# (c) K classes from one forward pass; (d) Score-CAM's chunks, Eigen-CAM's targets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(OURS))
def test_k_classes_from_one_pass_equal_k_calls(key, cnn, toy_images):
    classes = torch.tensor([[1, 4, 0], [0, 2, 5], [5, 3, 3]])
    calls = []
    cnn.register_forward_pre_hook(lambda *_: calls.append(1))
    together = OURS[key](cnn, cnn[2], toy_images, classes)
    passes = len(calls)
    assert together.shape == (3, 3, 12, 12)
    for k in range(3):
        torch.testing.assert_close(together[:, k], OURS[key](cnn, cnn[2], toy_images, classes[:, k]),
                                   rtol=1e-5, atol=1e-6)
    masked = math.ceil(3 * 5 / 64) if key == "score_cam" else 0  # 3 images x 5 channels in chunks of 64
    assert passes == 1 + masked and method(key).one_pass


@pytest.mark.parametrize("chunk", [1, 7, 15])
def test_score_cam_does_not_depend_on_the_chunk(chunk, cnn, toy_images):
    classes = torch.tensor([[1, 4], [0, 2], [5, 3]])
    calls = []
    cnn.register_forward_pre_hook(lambda *_: calls.append(len(_[1][0])))
    result = score_cam(cnn, cnn[2], toy_images, classes, chunk=chunk)
    sizes = list(calls)  # the batch of every forward pass: the 3 images, then the 15 masked ones in chunks
    reference = score_cam(cnn, cnn[2], toy_images, classes, chunk=64)
    torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-7)
    assert sizes == [3] + [min(chunk, 15 - i) for i in range(0, 15, chunk)]


@pytest.mark.parametrize("chunk", [0, -1, 2.0, True])
def test_score_cam_refuses_a_bad_chunk(chunk, cnn, toy_images):
    with pytest.raises(ValueError, match="chunk"):
        score_cam(cnn, cnn[2], toy_images, 0, chunk=chunk)


def test_eigen_cam_is_the_same_map_for_every_target(cnn, toy_images):
    result = eigen_cam(cnn, cnn[2], toy_images, torch.tensor([[1, 4, 0], [0, 2, 5], [5, 3, 3]]))
    assert result.abs().max() > 0
    for k in range(3):
        assert torch.equal(result[:, k], result[:, 0])
    assert torch.equal(eigen_cam(cnn, cnn[2], toy_images, 2), result[:, 0])
    assert torch.equal(maps("eigen_cam", cnn, cnn[2], toy_images, torch.tensor([[3], [3], [1]]),
                            reduction="none")[:, 0], result[:, 0])
    with pytest.raises(IndexError, match="targets"):  # the targets are still checked
        eigen_cam(cnn, cnn[2], toy_images, 6)

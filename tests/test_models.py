"""Every registered model's Grad-CAM layer is the last rectified map, the tensor its head reads.

Checked with random weights (``pretrained=False``) on every entry of the registry, the MNIST CNN
and the chest X-ray stand-in: (1) the captured activations are >= 0 and not all zero; (2) the
logits are a function of exactly that tensor: with the layer's output replaced by a fixed tensor,
two different images give identical logits (nothing bypasses the layer), while the unreplaced
forward of the same two images differs.
"""

from __future__ import annotations

import pytest
import torch

from gradcam_lib.chestxray import load_xray_model
from gradcam_lib.explain import layer_capture
from gradcam_lib.mnist import MNIST_CLASSES, SmallCNN, small_entry
from gradcam_lib.models import MODEL_NAMES, ModelEntry, load_model


def _entries() -> list[tuple[str, callable]]:
    named = [(name, lambda name=name: load_model(name, pretrained=False)) for name in MODEL_NAMES]
    named.append(("mnist_cnn", lambda: small_entry("mnist_cnn", SmallCNN().eval(), MNIST_CLASSES, 1, 28)))
    named.append(("xray_standin", lambda: load_xray_model("standin")))
    return named


def _inputs(entry: ModelEntry, seed: int) -> torch.Tensor:
    channels = len(entry.transform.mean)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, entry.transform.crop, entry.transform.crop, generator=generator)


def _replaced_logits(entry: ModelEntry, images: torch.Tensor, replacement: torch.Tensor, calls: int) -> torch.Tensor:
    """Logits with the layer's last call (of ``calls`` per forward) returning ``replacement``."""
    seen = []

    def hook(_module, _inputs, output):
        seen.append(1)
        return replacement if len(seen) == calls else output

    handle = entry.layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return entry.model(images)
    finally:
        handle.remove()


@pytest.mark.parametrize("name, load", _entries(), ids=[name for name, _ in _entries()])
def test_grad_cam_layer_is_the_rectified_map_the_head_reads(name, load):
    torch.manual_seed(0)
    entry = load()
    x1, x2 = _inputs(entry, 1), _inputs(entry, 2)
    calls = []
    counter = entry.layer.register_forward_hook(lambda *_: calls.append(1))
    try:
        with layer_capture(entry.layer) as capture, torch.no_grad():
            logits1 = entry.model(x1)
    finally:
        counter.remove()
    activation = capture.activation
    assert activation is not None and activation.dim() == 4
    assert (activation >= 0).all(), f"{name}: {entry.layer_name} holds negative values (not rectified)"
    assert (activation > 0).any()
    with torch.no_grad():
        logits2 = entry.model(x2)
    assert not torch.equal(logits1, logits2)
    fixed = torch.rand(activation.shape, generator=torch.Generator().manual_seed(3))
    replaced1 = _replaced_logits(entry, x1, fixed, len(calls))
    replaced2 = _replaced_logits(entry, x2, fixed, len(calls))
    torch.testing.assert_close(replaced1, replaced2, rtol=0, atol=0)
    # and the replacement reaches the logits: they are not the unreplaced ones
    assert not torch.equal(replaced1, logits1)


def test_densenet_keeps_its_state_dict_keys_and_logits():
    """The appended relu5 has no parameters and changes no logit (ReLU is idempotent)."""
    import torchvision

    torch.manual_seed(0)
    plain = torchvision.models.densenet121(weights=None).eval()
    entry = load_model("densenet121", pretrained=False)
    assert set(entry.model.state_dict()) == set(plain.state_dict())
    entry.model.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(entry.model(x), plain(x))

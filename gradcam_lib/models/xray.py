"""The chest X-ray networks of chapter 5, registered in :mod:`gradcam_lib.models`:

* ``standin``: a small DenseNet trained on the generated stand-in
  (:class:`~gradcam_lib.datasets.xray_standin.StandinXrayDataset`) and shipped as
  ``gradcam_lib/data/xray_standin.pt`` (made by ``data_prep/make_xray_standin.py``); ``checkpoint=``
  reads another file;
* ``chexnet``: a CheXNet checkpoint (Rajpurkar et al. 2017; arnoweng/CheXNet ``model.pth.tar``), given
  by ``checkpoint=``;
* ``xrv:<weights>``: a torchxrayvision model (optional package; its weights download at first use).

Every model carries its own class list (``ModelEntry.class_names``) and the finding -> output index
map is built from it (:func:`finding_index`), never written down separately: the KTH project took its
label order from another model, so that only Effusion reached CheXNet's right output. Every
DenseNet's Grad-CAM layer is its last rectified feature map (``features`` with an appended ``relu5``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tv_models

from gradcam_lib.datasets.chestxray import canonical_finding
from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from gradcam_lib.datasets.xray_standin import STANDIN_FINDINGS, standin_transform
from gradcam_lib.models import register_model
from gradcam_lib.models.entry import ModelEntry, read_checkpoint
from gradcam_lib.models.imagenet import rectify_densenet_features

__all__ = ["CHEXNET_CLASSES", "STANDIN_ARCHITECTURE", "chexnet_state_dict", "finding_index", "load_chexnet",
           "load_standin", "load_xrv", "standin_densenet", "wrap_xrv_model"]

#: CheXNet's 14 outputs in its own order (arnoweng/CheXNet ``CLASS_NAMES``).
CHEXNET_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)


def finding_index(class_names: Sequence[str], finding: str) -> int:
    """The output of a model that predicts ``finding``, looked up in the model's own class list
    (names made canonical on both sides, so ``Infiltrate`` finds ``Infiltration``).

    Raises:
        KeyError: the model has no such output (torchxrayvision marks untrained outputs with '').
    """
    wanted = canonical_finding(finding)
    for index, name in enumerate(class_names):
        if name and canonical_finding(name) == wanted:
            return index
    raise KeyError(f"the model has no output for {finding!r}; its classes are {[n for n in class_names if n]}")


_OLD_DENSE_LAYER = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def chexnet_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A CheXNet checkpoint -> a state dict for ``torchvision.models.densenet121(num_classes=14)``.

    arnoweng/CheXNet saved ``{"state_dict": ...}`` from ``nn.DataParallel`` around a module whose
    DenseNet sits in ``.densenet121`` and whose head is ``Sequential(Linear, Sigmoid)``, with the
    torchvision < 0.3 layer names: ``module.densenet121.features.denseblock1.denselayer1.norm.1.weight``.
    This strips ``module.`` and ``densenet121.``, renames ``norm.1`` -> ``norm1`` (also ``conv.1``,
    ``norm.2``, ``conv.2``; the same rule as torchvision's own loader) and ``classifier.0.`` ->
    ``classifier.``. The Sigmoid is dropped: the model returns logits, which Grad-CAM differentiates.
    """
    state = checkpoint.get("state_dict", checkpoint)
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "densenet121."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        key = _OLD_DENSE_LAYER.sub(r"\1\2", key)
        key = key.replace("classifier.0.", "classifier.")
        out[key] = value
    return out


def _imagenet_transform(size: int) -> ImageTransform:
    """Resize to ``size`` without cropping (square X-rays keep every box), ImageNet statistics."""
    return ImageTransform(size, size, IMAGENET_MEAN, IMAGENET_STD)


def _entry(name: str, model: nn.Module, layer_name: str, transform: ImageTransform, classes: Sequence[str],
           device: str | torch.device) -> ModelEntry:
    model = model.eval().to(device)
    return ModelEntry(name, model, model.get_submodule(layer_name), layer_name, transform, tuple(classes))


def load_chexnet(path: str | Path, device: str | torch.device = "cpu", layer_name: str = "features") -> ModelEntry:
    """CheXNet (Rajpurkar et al. 2017) from a checkpoint file, read with ``weights_only=True``.

    Args:
        path: ``model.pth.tar`` of arnoweng/CheXNet, or any state dict of the same network.
        layer_name: the Grad-CAM layer; ``features`` is the last rectified feature map (1024
            channels: ``norm5``, then the appended ``relu5`` of
            :func:`gradcam_lib.models.rectify_densenet_features`); KTH used
            ``features.denseblock4.denselayer16.conv2`` (the last 32 channels only).

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: keys that do not fit densenet121 (the message lists them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CheXNet checkpoint {path} does not exist")
    state = chexnet_state_dict(
        read_checkpoint(path, "CheXNet checkpoint", "download arnoweng/CheXNet's model.pth.tar again")
    )
    model = tv_models.densenet121(weights=None, num_classes=len(CHEXNET_CLASSES))
    model.load_state_dict(state)
    return _entry(
        "chexnet", rectify_densenet_features(model), layer_name, _imagenet_transform(224), CHEXNET_CLASSES, device
    )


class _GreyInput(nn.Module):
    """Feeds the first channel of a grey image replicated to 3 channels to a 1-channel model, so
    every chapter's code sees ``(B, 3, H, W)``; attributions land on channel 0 only, and their sum
    over channels (:func:`to_grey`) is the 1-channel attribution."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, :1])


def wrap_xrv_model(model: nn.Module, name: str, device: str | torch.device = "cpu") -> ModelEntry:
    """A torchxrayvision DenseNet as a :class:`ModelEntry`: class list = its ``pathologies``
    (with '' for outputs it was not trained on), logits out (its calibration ``op_threshs`` and
    sigmoid are switched off), input scaled to [-1024, 1024] at 224 px as ``xrv.datasets.normalize``
    does, Grad-CAM on its ``features``."""
    xrv: Any = model  # torchxrayvision's attributes, which nn.Module's type does not declare
    xrv.op_threshs = None
    xrv.apply_sigmoid = False
    transform = ImageTransform(224, 224, (0.5,) * 3, (0.5 / 1024,) * 3)
    rectify_densenet_features(model)  # xrv's forward, too, applies F.relu after features (norm5)
    return _entry(name, _GreyInput(model), "model.features", transform, list(xrv.pathologies), device)


def load_xrv(weights: str = "densenet121-res224-nih", device: str | torch.device = "cpu") -> ModelEntry:
    """torchxrayvision's DenseNet trained on NIH ChestX-ray14 (or other ``weights``).

    Raises:
        ImportError: torchxrayvision is not installed (``pip install torchxrayvision``).
        FileNotFoundError: its weights are neither cached (``~/.torchxrayvision``) nor downloadable.
    """
    try:
        import torchxrayvision as xrv
    except ImportError as error:
        raise ImportError("model 'xrv:...' needs torchxrayvision: pip install torchxrayvision") from error
    try:
        model = xrv.models.DenseNet(weights=weights)
    except Exception as error:  # offline and not cached
        raise FileNotFoundError(f"torchxrayvision weights {weights!r} are not cached and could not be downloaded: "
                                f"{type(error).__name__}: {error}") from error
    return wrap_xrv_model(model, f"xrv:{weights}", device)


#: The stand-in network: torchvision's DenseNet with three small blocks (stride 16: 6 x 6 maps at 96 px).
STANDIN_ARCHITECTURE: dict[str, Any] = {"growth_rate": 8, "block_config": (3, 3, 3), "num_init_features": 16,
                                        "bn_size": 2, "drop_rate": 0.0}
STANDIN_CHECKPOINT = "data/xray_standin.pt"


def standin_densenet(num_classes: int = len(STANDIN_FINDINGS)) -> nn.Module:
    """The stand-in's small DenseNet (``torchvision.models.DenseNet``, ``STANDIN_ARCHITECTURE``)."""
    return tv_models.DenseNet(num_classes=num_classes, **STANDIN_ARCHITECTURE)


def load_standin(device: str | torch.device = "cpu", path: str | Path | None = None) -> ModelEntry:
    """The shipped stand-in model; its class list comes from its checkpoint."""
    shipped = resources.files("gradcam_lib").joinpath(STANDIN_CHECKPOINT)
    with resources.as_file(shipped) if path is None else nullcontext(Path(path)) as file:
        if not Path(file).is_file():
            raise FileNotFoundError(f"stand-in checkpoint {file} missing; run data_prep/make_xray_standin.py")
        checkpoint = read_checkpoint(
            file, "stand-in checkpoint", "run data_prep/make_xray_standin.py to write it again"
        )
    model = standin_densenet(len(checkpoint["class_names"]))
    model.load_state_dict(checkpoint["state_dict"])
    return _entry(
        "standin-densenet",
        rectify_densenet_features(model),
        "features",
        standin_transform(),
        checkpoint["class_names"],
        device,
    )


@register_model("standin")
def _load_standin_entry(name: str = "standin", device: str | torch.device = "cpu",
                        checkpoint: str | Path | None = None) -> ModelEntry:
    """``load_model("standin")``: :func:`load_standin` (the shipped checkpoint, or ``checkpoint``)."""
    return load_standin(device, checkpoint)


@register_model("chexnet")
def _load_chexnet_entry(name: str = "chexnet", device: str | torch.device = "cpu",
                        checkpoint: str | Path | None = None) -> ModelEntry:
    """``load_model("chexnet", checkpoint=...)``: :func:`load_chexnet`.

    Raises:
        ValueError: no ``checkpoint``.
    """
    if checkpoint is None:
        raise ValueError("model 'chexnet' needs checkpoint: the path of CheXNet's model.pth.tar")
    return load_chexnet(checkpoint, device)


@register_model(pattern=("xrv:<weights>", lambda name: name.startswith("xrv:")))
def _load_xrv_entry(name: str, device: str | torch.device = "cpu", checkpoint: str | Path | None = None
                    ) -> ModelEntry:
    """``load_model("xrv:<weights>")``: :func:`load_xrv` (``checkpoint`` must be None: the weights
    are torchxrayvision's)."""
    if checkpoint is not None:
        raise ValueError(f"model {name!r} takes no checkpoint: torchxrayvision loads its own weights")
    return load_xrv(name[len("xrv:"):], device)

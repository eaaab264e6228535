"""ImageNet architectures with a 20-class PASCAL VOC head, from a fine-tuned checkpoint (the
pointing game's networks; TorchRay's benchmark used VGG-16 / ResNet-50 fine-tuned on VOC)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gradcam_lib.datasets.voc import VOC_CLASSES
from gradcam_lib.models import register_model
from gradcam_lib.models.entry import ModelEntry, load_weights, read_checkpoint
from gradcam_lib.models.imagenet import load_imagenet_model


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
    base = load_imagenet_model(arch, "cpu", pretrained=False)
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
    load_weights(model, state, path, what)
    model = model.eval().to(device)
    return ModelEntry(
        arch + "_voc", model, model.get_submodule(base.layer_name), base.layer_name, base.transform, VOC_CLASSES
    )


@register_model(pattern=("<arch>_voc", lambda name: name.endswith("_voc")))
def _load_voc_by_name(name: str, device: str | torch.device = "cpu", checkpoint: str | None = None) -> ModelEntry:
    """``load_model("vgg16_voc", checkpoint=...)``: :func:`load_voc_model` of the architecture."""
    if checkpoint is None:
        raise ValueError(f"model {name!r} needs checkpoint=: the path of a {name.removesuffix('_voc')} state_dict "
                         "fine-tuned on VOC 2007 (20-class head)")
    return load_voc_model(name.removesuffix("_voc"), checkpoint, device)

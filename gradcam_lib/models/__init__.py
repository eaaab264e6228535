"""One registry of every network the book explains: ``load_model(name, device, **options)``.

Names (:func:`model_names`): the ImageNet classifiers (:mod:`~gradcam_lib.models.imagenet`:
``vgg16``, ``alexnet``, ``googlenet``, ``resnet50``, ``densenet121``, ``efficientnet_lite0`` /
``lite2``), ``<arch>_voc`` (:mod:`~gradcam_lib.models.voc`, needs ``checkpoint=``), ``mnist_cnn``
(:mod:`~gradcam_lib.models.mnist`), ``cluttered_mnist_cnn`` (:mod:`~gradcam_lib.models.cluttered_mnist`),
and the chest X-ray networks of :mod:`~gradcam_lib.models.xray` (``standin``, ``chexnet`` with
``checkpoint=``, ``xrv:<weights>``). Every loader returns a :class:`ModelEntry` in eval mode whose
Grad-CAM layer is the last rectified feature map; ``layer_name=`` overrides that layer for any model.
An unknown name raises ``KeyError`` listing the known ones.

A new network is one decorated loader in a module listed in ``_PROVIDERS``::

    @register_model("my_net")
    def load_my_net(device="cpu", **options) -> ModelEntry: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch

from gradcam_lib.models.entry import ModelEntry, load_weights, read_checkpoint

__all__ = ["MODEL_NAMES", "ModelEntry", "load_model", "load_weights", "model_names", "read_checkpoint",
           "register_model"]

Loader = Callable[..., ModelEntry]
_LOADERS: dict[str, Loader] = {}
_PATTERNS: dict[str, tuple[Callable[[str], bool], Loader]] = {}
_PROVIDERS = tuple(f"gradcam_lib.models.{m}" for m in ("imagenet", "voc", "mnist", "cluttered_mnist", "xray"))


def register_model(*names: str, pattern: tuple[str, Callable[[str], bool]] | None = None) -> Callable[[Loader], Loader]:
    """Register ``loader(name, device, **options)`` under ``names``, or for every name that
    ``pattern = (description, predicate)`` accepts (``("<arch>_voc", lambda n: n.endswith("_voc"))``)."""

    def decorate(loader: Loader) -> Loader:
        for name in names:
            if name in _LOADERS:
                raise ValueError(f"model {name!r} is registered twice")
            _LOADERS[name] = loader
        if pattern is not None:
            _PATTERNS[pattern[0]] = (pattern[1], loader)
        return loader

    return decorate


def _load_providers() -> None:
    for module in _PROVIDERS:
        importlib.import_module(module)


def model_names() -> tuple[str, ...]:
    """Every registered name, patterns as written (``<arch>_voc``)."""
    _load_providers()
    return (*_LOADERS, *_PATTERNS)


def load_model(name: str, device: str | torch.device = "cpu", layer_name: str | None = None,
               **options: Any) -> ModelEntry:
    """The network ``name`` in eval mode on ``device`` (options: ``pretrained=False`` for random
    ImageNet weights, ``checkpoint=`` for VOC / CheXNet / the X-ray stand-in); ``layer_name``
    replaces the Grad-CAM layer by another module of the returned model.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    _load_providers()
    loader = _LOADERS.get(name) or next((load for accepts, load in _PATTERNS.values() if accepts(name)), None)
    if loader is None:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    entry = loader(name, device, **options)
    if layer_name is not None:
        entry = ModelEntry(entry.name, entry.model, entry.model.get_submodule(layer_name), layer_name,
                           entry.transform, entry.class_names)
    return entry


def __getattr__(name: str) -> Any:
    if name == "MODEL_NAMES":  # the ImageNet classifiers (a constant of the first registry)
        from gradcam_lib.models.imagenet import MODEL_NAMES

        return MODEL_NAMES
    raise AttributeError(f"module 'gradcam_lib.models' has no attribute {name!r}")

"""The one registry of explanation methods: every map the book computes is looked up here by key.

A method is a function ``f(model, [layer,] images, targets, **options)`` registered with
:func:`register_method`; its key is the function's name (``"grad_cam"``, ``"input_gradient"``,
...). The keys that the chapters and their stored results used before the registry are kept as
aliases and resolve to the same entry (:data:`ALIASES`): ``gradcam`` -> ``grad_cam``,
``gradcam_pp`` -> ``grad_cam_pp``, ``backprop`` -> ``input_gradient``, ``guided_gradcam`` ->
``guided_grad_cam``, ``ig`` -> ``first_class_converged_ig``, ``shap`` ->
``shap_expected_gradients``. The function name is canonical; an alias is accepted wherever a key is
and a caller's result rows keep the key it was given (so old rows and notebooks still match).

:func:`maps` / :func:`attribute` run a method uniformly:

* ``targets`` is ``(B,)`` / ``(B, K)`` class indices, or a *chooser* ``logits (B, N) -> (B, K)``
  (e.g. :func:`top_k`): classes picked from the method's own forward pass, so top-k needs no special
  case (:attr:`Method.chooses`; for the other methods the registry runs one no-grad forward pass in
  :func:`~gradcam_lib.methods.scopes.explanation_scope` to choose);
* ``reduction`` (required: the metric chooses it) turns input-space maps ``(..., C, H, W)`` into
  2-D: ``"max_abs"`` (max over channels of ``|.|``, Simonyan et al. 2014: the localisation, pointing,
  occlusion and attack chapters), ``"sum"`` (channel sum, keeps completeness: fidelity and the chest
  X-rays) or ``"none"`` (the input-space maps as they are: the user study). Layer-space maps (the
  CAMs) are 2-D already and come back as they are;
* methods that take one class per image (:attr:`Method.per_class`) see ``(B, K)`` targets as
  ``B * K`` images (each image repeated K times), which is what fidelity did for SHAP.

Adding a method (a CAM, say): write it in :mod:`gradcam_lib.methods.cam` (or a module listed in
``_PROVIDERS``) and decorate it; its name is its key::

    @register_method(label="Score-CAM", space="layer", nonnegative=True, chooses=True)
    def score_cam(model, layer, images, targets: Classes) -> torch.Tensor:
        ...  # (B, [K,] H, W); inside explanation_scope; targets through Choice for choosers

Every chapter that takes a method key can then run it (``maps("score_cam", ...)``), and
``tests/test_methods.py`` checks it (shape, sign, passes, state) with no change to the test.

This module holds the registry only; :mod:`~gradcam_lib.methods.cam` (the CAMs),
:mod:`~gradcam_lib.methods.gradients` (input-space maps) and
:mod:`~gradcam_lib.methods.attributions` (IG, SHAP) register their functions, and are imported on the first
lookup, so ``method("grad_cam")`` works after ``import gradcam_lib.methods`` alone;
:mod:`~gradcam_lib.methods.cam_family` registers the later CAMs (HiResCAM, XGrad-CAM, LayerCAM,
Score-CAM, Eigen-CAM) the same way.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar, get_args

import torch
from torch import nn

from gradcam_lib.methods.scopes import explanation_scope

__all__ = [
    "ALIASES",
    "Attribution",
    "Chooser",
    "Method",
    "Reduction",
    "attribute",
    "canonical_key",
    "labels",
    "maps",
    "method",
    "method_keys",
    "reduce_channels",
    "register_method",
    "top_k",
]

Space = Literal["layer", "input"]
Reduction = Literal["max_abs", "sum", "none"]
Chooser = Callable[[torch.Tensor], torch.Tensor]
"""``logits (B, N) -> targets (B,) or (B, K)``: classes chosen from the forward pass's scores."""

F = TypeVar("F", bound=Callable[..., Any])

#: The modules that register methods, imported on the first lookup (in this order).
_PROVIDERS: tuple[str, ...] = (
    "gradcam_lib.methods.cam",
    "gradcam_lib.methods.cam_family",
    "gradcam_lib.methods.gradients",
    "gradcam_lib.methods.attributions",
)


@dataclass(frozen=True)
class Method:
    """One registered explanation method.

    Attributes:
        key: the canonical key, the function's name.
        label: the name tables and figures show.
        function: the public function, called as ``function(model, [layer,] images, targets, **options)``.
        space: ``"layer"``: 2-D maps ``(B, [K,] H, W)`` (class-activation maps);
            ``"input"``: input-space maps ``(B, [K,] C, H, W)``, made 2-D by the caller's reduction.
        uses_layer: the function takes the Grad-CAM layer (its second parameter is ``layer``).
        nonnegative: every map is >= 0 (promised, and checked by the conformance test).
        one_pass: the number of forward passes does not grow with K, the classes per image.
        chooses: the function accepts a chooser as ``targets`` and calls it once on its own logits.
        per_class: the function takes ``(B,)`` targets only (K classes run as B * K images).
        returns: names of the further outputs after the maps when the function returns a tuple
            (``("gaps", "steps")`` for the converged IGs): :attr:`Attribution.info`.
        aliases: older keys that resolve to this method.
    """

    key: str
    label: str
    function: Callable[..., Any] = field(repr=False)
    space: Space
    uses_layer: bool
    nonnegative: bool = False
    one_pass: bool = True
    chooses: bool = False
    per_class: bool = False
    returns: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


_REGISTRY: dict[str, Method] = {}
ALIASES: dict[str, str] = {}
"""Older key -> canonical key (the function name)."""


def register_method(
    *,
    label: str,
    space: Space,
    nonnegative: bool = False,
    one_pass: bool = True,
    chooses: bool = False,
    per_class: bool = False,
    returns: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Decorator: register ``function`` under its own name (see :class:`Method` for the fields)
    and return it unchanged.

    Raises:
        ValueError: a key or alias already taken, or an unknown ``space``.
    """
    if space not in get_args(Space):
        raise ValueError(f"space must be one of {get_args(Space)}, got {space!r}")

    def decorate(function: F) -> F:
        key = function.__name__
        parameters = list(inspect.signature(function).parameters)
        entry = Method(key, label, function, space, parameters[1:2] == ["layer"], nonnegative, one_pass, chooses,
                       per_class, returns, aliases)
        for name in (key, *aliases):
            if name in _REGISTRY or name in ALIASES:
                raise ValueError(f"method key {name!r} is registered already")
        _REGISTRY[key] = entry
        ALIASES.update({alias: key for alias in aliases})
        return function

    return decorate


def _load() -> None:
    for module in _PROVIDERS:
        importlib.import_module(module)


def canonical_key(key: str) -> str:
    """``key`` or the canonical key its alias stands for.

    Raises:
        KeyError: an unknown key, with the known keys (canonical, then aliases).
    """
    if key not in _REGISTRY and key not in ALIASES:
        _load()
    if key in _REGISTRY:
        return key
    if key in ALIASES:
        return ALIASES[key]
    raise KeyError(f"unknown method {key!r}; known: {', '.join([*sorted(_REGISTRY), *sorted(ALIASES)])}")


def method(key: str) -> Method:
    """The :class:`Method` registered as ``key`` (a function name or an older alias).

    Raises:
        KeyError: ``unknown method 'x'; known: ...``.
    """
    return _REGISTRY[canonical_key(key)]


def method_keys() -> tuple[str, ...]:
    """Every canonical key, in registration order."""
    _load()
    return tuple(_REGISTRY)


def labels(keys: Iterable[str]) -> dict[str, str]:
    """``{key: label}`` for ``keys`` as given (aliases stay aliases): the chapters' method tables
    (``explain.HEATMAP_METHODS`` ...) are such views of the registry."""
    return {key: method(key).label for key in keys}


def top_k(k: int, also: torch.Tensor | None = None) -> Chooser:
    """A chooser: each image's ``k`` highest-scoring classes in descending score, then the columns
    of ``also`` ``(B, E)`` (e.g. the ground truth)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a whole number of classes >= 0, got {k!r}")

    def choose(logits: torch.Tensor) -> torch.Tensor:
        if k > logits.shape[1]:
            raise ValueError(f"k={k} is larger than the model's {logits.shape[1]} classes")
        top = logits.topk(k, dim=1).indices
        return top if also is None else torch.cat([top, also.to(top.device).reshape(len(top), -1)], dim=1)

    return choose


def reduce_channels(maps: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Input-space maps ``(..., C, H, W)`` -> ``(..., H, W)`` by ``reduction`` (``"none"``: as is)."""
    if reduction == "max_abs":
        return maps.abs().amax(dim=-3)
    if reduction == "sum":
        return maps.sum(dim=-3)
    if reduction == "none":
        return maps
    raise ValueError(f"reduction must be one of {get_args(Reduction)}, got {reduction!r}")


class Attribution(NamedTuple):
    """What :func:`attribute` returns: the classes explained ``(B, K)`` (``(B,)`` when given so),
    the maps, and the method's further outputs by name (``{"gaps": ..., "steps": ...}`` for IG)."""

    targets: torch.Tensor
    maps: torch.Tensor
    info: Mapping[str, Any]


class _Recorded:
    """A chooser that remembers what it chose (the method calls it once, on its own logits)."""

    def __init__(self, choose: Chooser) -> None:
        self.choose = choose
        self.chosen: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        self.chosen = self.choose(logits)
        return self.chosen


def _choose_by_forward(model: nn.Module, images: torch.Tensor, choose: Chooser) -> torch.Tensor:

    with explanation_scope(model), torch.no_grad():
        return choose(model(images))


def attribute(
    key: str,
    model: nn.Module,
    layer: nn.Module | str | None,
    images: torch.Tensor,
    targets: torch.Tensor | int | Chooser | Any,
    *,
    reduction: Reduction,
    **options: Any,
) -> Attribution:
    """Run method ``key`` on ``images`` for ``targets`` and reduce its maps to 2-D by
    ``reduction`` (input-space methods only; see the module docstring). ``options`` go to the
    method's function unchanged (``steps=``, ``baseline=``, ``background=``, ...). ``layer`` is
    ignored by the methods that do not use one.

    Returns:
        :class:`Attribution` ``(targets, maps, info)``: maps ``(B, [K,] H, W)`` after a reduction,
        ``(B, [K,] C, H, W)`` for an input-space method with ``"none"``.

    Raises:
        KeyError: unknown ``key``; ValueError: unknown ``reduction``; the method's own errors.
    """
    entry = method(key)
    reduce_channels(torch.zeros(1, 1, 1), reduction)  # refuse an unknown reduction before any work
    recorder = None
    if callable(targets):
        if entry.chooses:
            recorder = _Recorded(targets)
            targets = recorder
        else:
            targets = _choose_by_forward(model, images, targets)
    head = (model, layer) if entry.uses_layer else (model,)
    batch, k = len(images), 1
    if entry.per_class:
        given = torch.as_tensor(targets)
        flat = given.reshape(-1)
        k = flat.numel() // batch if given.dim() == 2 else 1
        output = entry.function(*head, images if k == 1 else images.repeat_interleave(k, dim=0), flat, **options)
    else:
        output = entry.function(*head, images, targets, **options)
    values, extra = (output[0], output[1:]) if entry.returns else (output, ())
    if entry.space == "input":
        values = reduce_channels(values, reduction)
    if entry.per_class and given.dim() == 2:
        values = values.view(batch, k, *values.shape[1:])
    chosen = recorder.chosen if recorder is not None else targets
    return Attribution(torch.as_tensor(chosen), values, dict(zip(entry.returns, extra, strict=True)))


def maps(
    key: str,
    model: nn.Module,
    layer: nn.Module | str | None,
    images: torch.Tensor,
    targets: torch.Tensor | int | Chooser | Any,
    *,
    reduction: Reduction,
    **options: Any,
) -> torch.Tensor:
    """The maps of :func:`attribute` alone: ``(B, [K,] H, W)`` (or input-space with ``"none"``)."""
    return attribute(key, model, layer, images, targets, reduction=reduction, **options).maps

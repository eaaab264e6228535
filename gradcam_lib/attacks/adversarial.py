"""Gradient attacks (FGSM, PGD) in pixel space, from ``torchattacks``.

FGSM: Goodfellow et al. 2015, one signed-gradient step; PGD: Madry et al. 2018, L-inf, random
start, steps of 2.5 eps / steps. Both run on :class:`PixelSpaceModel` -- the model's normalisation
inside the attacked module -- so ``eps`` is a perturbation of the [0, 1] pixels and every
adversarial image is a valid image. (The KTH reproduction attacked the normalised tensor with
eps = 0.05, about 2.9/255 in pixels.)

Untargeted attacks push away from the true class, targeted ones towards a class drawn per image
(:func:`random_targets`: seeded by the image id, never the true class); a success is a changed
top-1 or the target as top-1 (:func:`attack_success`). :func:`attack_and_explain` attacks a batch
and computes the maps of the true class before / after and of the new class after.

Every function leaves the caller's model as it found it (train / eval flags, ``requires_grad``:
:func:`~gradcam_lib.methods.scopes.explanation_scope`) and the global RNGs untouched (PGD's start
inside ``torch.random.fork_rng``, targets from seeded numpy generators).
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchattacks
from torch import nn

from gradcam_lib.methods import explanation_scope, heatmaps
from gradcam_lib.models import ModelEntry

__all__ = [
    "ATTACKS",
    "AttackOutcome",
    "AttackSpec",
    "PixelSpaceModel",
    "attack_and_explain",
    "attack_success",
    "predict",
    "random_targets",
    "run_attack",
    "to_pixels",
]

ATTACKS: dict[str, str] = {"fgsm": "FGSM", "pgd": "PGD"}


def _channel_view(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


class PixelSpaceModel(nn.Module):
    """``x in [0, 1] -> model((x - mean) / std)``: the module that the attacks see, so that eps is
    measured in pixels and clipping to [0, 1] keeps the image valid."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> the model's input."""
        return (pixels - self.mean.to(pixels)) / self.std.to(pixels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalise(pixels))


def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised ``(B, C, H, W)`` images (a data set's ``Sample.image``) -> [0, 1] pixels
    (clamped: the round trip of a uint8 image is exact up to float rounding)."""
    return (images * _channel_view(std, images) + _channel_view(mean, images)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class AttackSpec:
    """One attack setting.

    Attributes:
        attack: ``fgsm`` or ``pgd``.
        eps: L-inf budget in [0, 1] pixel units (e.g. 4/255).
        targeted: towards a random class instead of away from the true class.
        steps: PGD iterations (ignored by FGSM).
        alpha: PGD step; None gives Madry et al.'s 2.5 * eps / steps.
    """

    attack: str
    eps: float
    targeted: bool = False
    steps: int = 10
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACKS)}")
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps is in [0, 1] pixel units, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"PGD needs at least one step, got {self.steps}")

    @property
    def step_size(self) -> float:
        return 2.5 * self.eps / self.steps if self.alpha is None else self.alpha

    @property
    def mode(self) -> str:
        return "targeted" if self.targeted else "untargeted"


def _torchattack(spec: AttackSpec, pixel_model: nn.Module) -> torchattacks.attack.Attack:
    if spec.attack == "fgsm":
        attack = torchattacks.FGSM(pixel_model, eps=spec.eps)
    else:
        attack = torchattacks.PGD(pixel_model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, random_start=True)
    if spec.targeted:
        with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints the mode change
            attack.set_mode_targeted_by_function(lambda _images, labels: labels)
    return attack


def run_attack(
    pixel_model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, spec: AttackSpec, seed: int = 0
) -> torch.Tensor:
    """Adversarial pixels from torchattacks' FGSM / PGD.

    Args:
        pixel_model: a :class:`PixelSpaceModel` (or any model taking [0, 1] pixels).
        pixels: ``(B, 3, H, W)`` in [0, 1].
        labels: ``(B,)`` -- the class to move away from (untargeted) or towards (targeted).
        spec: the attack.
        seed: PGD's random start is drawn from this seed (the global RNG is left untouched).

    Returns:
        ``(B, 3, H, W)`` in [0, 1] with ``|adv - pixels| <= eps``. The model's train/eval flags and
        parameters' ``requires_grad`` are restored on return.
    """
    if pixels.min() < 0 or pixels.max() > 1:
        raise ValueError("pixels must lie in [0, 1]; convert normalised images with to_pixels")
    if next(pixel_model.parameters(), None) is None:
        raise ValueError("torchattacks finds the device from the model's parameters; this model has none")
    devices = [pixels.device] if pixels.device.type == "cuda" else []
    with explanation_scope(pixel_model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # inside the fork: the caller's global state is restored on exit
        return _torchattack(spec, pixel_model)(pixels.detach(), torch.as_tensor(labels, device=pixels.device)).detach()


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Top-1 classes of ``images``, in eval mode (BatchNorm's running statistics, no dropout),
    without gradients; the model's flags are restored afterwards."""
    with explanation_scope(model), torch.no_grad():
        return model(images).argmax(dim=1)


def attack_success(
    new_class: torch.Tensor, true_class: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Untargeted (``target`` None): top-1 changed away from the true class. Targeted: top-1 is the
    target. Returns ``(B,)`` bool."""
    if target is None:
        return new_class != true_class
    return new_class == target


def random_targets(true_class: torch.Tensor, image_ids: Sequence[str], num_classes: int, seed: int = 0) -> torch.Tensor:
    """One target class per image, uniform over the classes other than its true class, drawn from
    ``(seed, image_id)`` alone: the same image gets the same target in any batch and any run."""
    targets = []
    for label, image_id in zip(true_class.tolist(), image_ids, strict=False):
        rng = np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])
        draw = int(rng.integers(num_classes - 1))
        targets.append(draw + (draw >= label))
    return torch.tensor(targets, dtype=torch.long, device=true_class.device)


@dataclass(frozen=True)
class AttackOutcome:
    """Tensors of one attack on a batch (all on the CPU).

    Attributes:
        pixels, adversarial: ``(B, 3, H, W)`` in [0, 1].
        true_class, target, new_class: ``(B,)``; ``target`` is -1 for untargeted attacks.
        success: ``(B,)`` bool.
        maps: method -> ``(B, 3, H, W)``: true class before, true class after, new class after
            (NaN for the images that were not explained, see ``explain_failures``).
    """

    pixels: torch.Tensor
    adversarial: torch.Tensor
    true_class: torch.Tensor
    target: torch.Tensor
    new_class: torch.Tensor
    success: torch.Tensor
    maps: dict[str, torch.Tensor]


def attack_and_explain(
    entry: ModelEntry,
    images: torch.Tensor,
    true_class: torch.Tensor,
    image_ids: Sequence[str],
    spec: AttackSpec,
    methods: Sequence[str] = ("gradcam", "guided_backprop"),
    seed: int = 0,
    start_seed: int = 0,
    before: dict[str, torch.Tensor] | None = None,
    explain_failures: bool = False,
) -> AttackOutcome:
    """Attack ``images`` (normalised, as a data set gives them) away from / towards a class, and
    compute each method's maps of the true class before and after, and of the new top-1 class.

    Args:
        seed: the targets' seed (:func:`random_targets`).
        start_seed: PGD's random start for this batch (:func:`run_attack`).
        before: precomputed true-class maps on the clean images per method (saves a pass when
            several attacks share a batch).
        explain_failures: also explain the failed attacks; by default their maps are NaN (the
            chapter's metrics are about successful attacks, and maps are the costly part).
    """
    mean, std = entry.transform.mean, entry.transform.std
    pixel_model = PixelSpaceModel(entry.model, mean, std).to(images.device)
    pixels = to_pixels(images, mean, std)
    true_class = true_class.to(images.device)
    target = random_targets(true_class, image_ids, len(entry.class_names), seed) if spec.targeted else None
    labels = target if target is not None else true_class  # target is None iff not spec.targeted
    adversarial = run_attack(pixel_model, pixels, labels, spec, start_seed)
    attacked = pixel_model.normalise(adversarial)
    new_class = predict(entry.model, attacked)
    success = attack_success(new_class, true_class, target)
    explained = torch.arange(len(images), device=images.device) if explain_failures else success.nonzero()[:, 0]
    maps = {}
    for method in methods:
        full = torch.full((len(images), 3, *images.shape[-2:]), float("nan"))
        if len(explained):
            clean = (
                before[method] if before is not None else heatmaps(method, entry.model, entry.layer, images, true_class)
            )
            classes = torch.stack([true_class, new_class], dim=1)[explained]
            after = heatmaps(method, entry.model, entry.layer, attacked[explained], classes)
            full[explained.cpu()] = torch.cat([clean.to(after.device)[explained][:, None], after], dim=1).cpu()
        maps[method] = full
    return AttackOutcome(
        pixels=pixels.cpu(),
        adversarial=adversarial.cpu(),
        true_class=true_class.cpu(),
        target=(target if target is not None else torch.full_like(true_class, -1)).cpu(),
        new_class=new_class.cpu(),
        success=success.cpu(),
        maps=maps,
    )

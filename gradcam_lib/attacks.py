"""Gradient attacks (FGSM, PGD) in pixel space, and what they do to the explanations.

Attacks come from ``torchattacks`` (FGSM: Goodfellow et al. 2015; PGD: Madry et al. 2018, L-inf,
random start). They run on :class:`PixelSpaceModel` -- the model's normalisation inside the
attacked module -- so ``eps`` is a perturbation of the [0, 1] pixels and every adversarial image
is a valid image. (The KTH reproduction attacked the normalised tensor with eps = 0.05, about
2.9/255 in pixels.)

Protocol of :func:`attack_batch`, per image: the model's clean top-1 class ``y`` must be one of the
image's ground-truth classes (only correctly classified images are attacked); the attack is
untargeted (push away from ``y``) or targeted (towards a class drawn at random per image, seeded,
never ``y``). A success is a changed top-1 (untargeted) or the target as top-1 (targeted). For each
successful attack and explanation method the rows hold (NaN for failed attacks, whose maps are not
computed unless asked):

* ``vanished``: the true-class map after the attack is all zero (Grad-CAM's ReLU: no positive
  evidence left for the true class);
* ``rank_corr``: Spearman correlation of the true-class map before vs after the attack
  (:func:`gradcam_lib.faithfulness.rank_correlation`: maps averaged down to 14 x 14, the size of
  the paper's occlusion correlation, ties averaged); NaN when a map is constant (e.g. vanished);
* ``box_iou``: IoU of the boxes of the two true-class maps, each binarised at 15 % of its maximum
  (:func:`gradcam_lib.localization.heatmap_to_box`, paper Sec. 4.1); 0 when the map vanished;
* ``points_before`` / ``points_after_true`` / ``points_new``: whether the maximum point of the
  true-class map before, the true-class map after, and the new top-1 class's map after lies inside
  or within 15 px (TorchRay's pointing-game tolerance) of a ground-truth box of ``y``
  (:func:`gradcam_lib.pointing.pointing_hit`, chapter 2).

Rows with ``attack == "none"`` record every image: one with ``attacked`` False for an image the
model misclassifies, one per method with ``points_before`` (the clean baseline) for an attacked
image, so every table can say how many images stand behind it. :func:`correctly_classified` picks the
attackable images of a data set beforehand, so that attack batches are full.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchattacks
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gradcam_lib.datasets.base import Sample, collate_samples
from gradcam_lib.explain import explanation_scope, heatmaps
from gradcam_lib.faithfulness import rank_correlation
from gradcam_lib.localization import heatmap_to_box, iou
from gradcam_lib.models import ModelEntry
from gradcam_lib.pointing import pointing_hit
from gradcam_lib.results import dataset_fingerprint, run_key, run_resumable

__all__ = [
    "ATTACKS",
    "COLUMNS",
    "AttackSpec",
    "AttackOutcome",
    "PixelSpaceModel",
    "to_pixels",
    "run_attack",
    "attack_success",
    "random_targets",
    "points_at",
    "attack_and_explain",
    "correctly_classified",
    "attack_batch",
    "evaluate_attacks",
    "attack_table",
    "clean_pointing",
]

ATTACKS: dict[str, str] = {"fgsm": "FGSM", "pgd": "PGD"}
NOT_ATTACKED = "none"
# Every row has every column, in this order: run_resumable appends each batch to the CSV without a
# header, so a batch with other columns would land under the wrong names.
COLUMNS = (
    "image_id", "attack", "mode", "eps", "method", "attacked", "true_class", "target", "new_class", "success",
    "linf", "explained", "vanished", "rank_corr", "box_iou", "points_before", "points_after_true", "points_new",
)


# --------------------------------------------------------------------------------------------
# Pixel space
# --------------------------------------------------------------------------------------------


def _channel_view(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


class PixelSpaceModel(nn.Module):
    """``x in [0, 1] -> model((x - mean) / std)``: the module that the attacks see, so that eps is
    measured in pixels and clipping to [0, 1] keeps the image valid."""

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
    """Normalised ``(B, 3, H, W)`` images (a data set's ``Sample.image``) -> [0, 1] pixels
    (clamped: the round trip of a uint8 image is exact up to float rounding)."""
    return (images * _channel_view(std, images) + _channel_view(mean, images)).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------


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
        torch.manual_seed(seed)
        return _torchattack(spec, pixel_model)(pixels.detach(), torch.as_tensor(labels, device=pixels.device)).detach()


def attack_success(new_class: torch.Tensor, true_class: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Untargeted (``target`` None): top-1 changed away from the true class. Targeted: top-1 is the
    target. Returns ``(B,)`` bool."""
    if target is None:
        return new_class != true_class
    return new_class == target


def random_targets(true_class: torch.Tensor, image_ids: Sequence[str], num_classes: int, seed: int = 0) -> torch.Tensor:
    """One target class per image, uniform over the classes other than its true class, drawn from
    ``(seed, image_id)`` alone: the same image gets the same target in any batch and any run."""
    targets = []
    for label, image_id in zip(true_class.tolist(), image_ids):
        rng = np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])
        draw = int(rng.integers(num_classes - 1))
        targets.append(draw + (draw >= label))
    return torch.tensor(targets, dtype=torch.long, device=true_class.device)


# --------------------------------------------------------------------------------------------
# Comparing maps
# --------------------------------------------------------------------------------------------


def points_at(heatmap: torch.Tensor, boxes: torch.Tensor, tolerance: float = 15.0) -> float:
    """Chapter 2's pointing test (:func:`gradcam_lib.pointing.pointing_hit`: the map's maximum
    point within ``tolerance`` px of a box; an all-zero map points nowhere, a miss) as 1.0 / 0.0;
    NaN when there is no box to point at (the class's boxes fell outside the crop)."""
    if len(boxes) == 0:
        return float("nan")
    return float(pointing_hit(heatmap, boxes, tolerance))


def _box_iou(map_a: torch.Tensor, map_b: torch.Tensor, threshold: float) -> float:
    """IoU of the two maps' 15 % boxes; 0 when only one map has a box (the other is all zero: its
    box vanished), NaN when neither has one."""
    box_a, box_b = heatmap_to_box(map_a, threshold), heatmap_to_box(map_b, threshold)
    if box_a is None and box_b is None:
        return float("nan")
    return 0.0 if box_a is None or box_b is None else iou(box_a, box_b)


# --------------------------------------------------------------------------------------------
# One attack and its explanations
# --------------------------------------------------------------------------------------------


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
    before: dict[str, torch.Tensor] | None = None,
    explain_failures: bool = False,
) -> AttackOutcome:
    """Attack ``images`` (normalised, as a data set gives them) away from / towards a class, and
    compute each method's maps of the true class before and after, and of the new top-1 class.

    Args:
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
    labels = target if spec.targeted else true_class
    batch_seed = int(run_key({"seed": seed, "spec": spec, "ids": list(image_ids)}), 16)
    adversarial = run_attack(pixel_model, pixels, labels, spec, batch_seed)
    attacked = pixel_model.normalise(adversarial)
    with torch.no_grad():
        new_class = entry.model(attacked).argmax(dim=1)
    success = attack_success(new_class, true_class, target)
    explained = torch.arange(len(images), device=images.device) if explain_failures else success.nonzero()[:, 0]
    maps = {}
    for method in methods:
        full = torch.full((len(images), 3, *images.shape[-2:]), float("nan"))
        if len(explained):
            clean = before[method] if before is not None else heatmaps(method, entry.model, entry.layer, images, true_class)
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


def _outcome_rows(
    outcome: AttackOutcome, samples: Sequence[Sample], spec: AttackSpec, threshold: float, tolerance: float
) -> list[dict[str, Any]]:
    rows = []
    for i, sample in enumerate(samples):
        boxes = sample.boxes_of(int(outcome.true_class[i]))
        for method, maps in outcome.maps.items():
            before, after_true, after_new = maps[i]
            explained = not torch.isnan(maps[i]).any()
            nan = float("nan")
            rows.append(
                {
                    "image_id": sample.image_id,
                    "attack": spec.attack,
                    "mode": spec.mode,
                    "eps": spec.eps,
                    "method": method,
                    "attacked": True,
                    "true_class": int(outcome.true_class[i]),
                    "target": int(outcome.target[i]),
                    "new_class": int(outcome.new_class[i]),
                    "success": bool(outcome.success[i]),
                    "linf": float((outcome.adversarial[i] - outcome.pixels[i]).abs().max()),
                    "explained": explained,
                    "vanished": float(not after_true.max() > 0) if explained else nan,
                    "rank_corr": rank_correlation(before, after_true) if explained else nan,
                    "box_iou": _box_iou(before, after_true, threshold) if explained else nan,
                    "points_before": points_at(before, boxes, tolerance) if explained else nan,
                    "points_after_true": points_at(after_true, boxes, tolerance) if explained else nan,
                    "points_new": points_at(after_new, boxes, tolerance) if explained else nan,
                }
            )
    return rows


def correctly_classified(
    entry: ModelEntry, dataset: Dataset, batch_size: int = 16, device: str = "cpu", num_workers: int = 0
) -> list[int]:
    """Indices of the items whose clean top-1 class is one of their ground-truth classes: the
    images an attack can be scored on. Attacking only these keeps the attack batches full."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples, num_workers=num_workers)
    keep, start = [], 0
    with torch.no_grad():
        for images, samples in loader:
            predicted = entry.model(images.to(device)).argmax(dim=1).tolist()
            keep += [start + i for i, (label, s) in enumerate(zip(predicted, samples)) if label in s.labels]
            start += len(samples)
    return keep


def attack_batch(
    entry: ModelEntry,
    images: torch.Tensor,
    samples: Sequence[Sample],
    specs: Sequence[AttackSpec],
    methods: Sequence[str] = ("gradcam", "guided_backprop"),
    seed: int = 0,
    threshold: float = 0.15,
    tolerance: float = 15.0,
) -> list[dict[str, Any]]:
    """Every attack of ``specs`` on the correctly classified images of a batch (see the module
    docstring for the protocol and the columns). Every image gets an ``attack == "none"`` row."""
    with torch.no_grad():
        predicted = entry.model(images).argmax(dim=1).cpu()
    keep = [i for i, sample in enumerate(samples) if int(predicted[i]) in sample.labels]
    rows: list[dict[str, Any]] = [
        {"image_id": s.image_id, "attack": NOT_ATTACKED, "attacked": False, "true_class": int(predicted[i])}
        for i, s in enumerate(samples)
        if i not in keep
    ]
    if not keep:
        return _complete(rows)
    chosen = [samples[i] for i in keep]
    ids = [s.image_id for s in chosen]
    x, y = images[keep], predicted[keep].to(images.device)
    before = {m: heatmaps(m, entry.model, entry.layer, x, y) for m in methods}
    rows += [  # the clean baseline: does the true-class map point at the object before any attack?
        {"image_id": s.image_id, "attack": NOT_ATTACKED, "method": m, "attacked": True, "true_class": int(y[i]),
         "points_before": points_at(before[m][i].cpu(), s.boxes_of(int(y[i])), tolerance)}
        for i, s in enumerate(chosen)
        for m in methods
    ]
    for spec in specs:
        outcome = attack_and_explain(entry, x, y, ids, spec, methods, seed, before)
        rows += _outcome_rows(outcome, chosen, spec, threshold, tolerance)
    return _complete(rows)


def _complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with exactly ``COLUMNS``, in order (NaN where a row has no value)."""
    return [{column: row.get(column, float("nan")) for column in COLUMNS} for row in rows]


def evaluate_attacks(
    entry: ModelEntry,
    dataset: Dataset,
    dataset_name: str,
    results_dir: str | Path,
    specs: Sequence[AttackSpec],
    methods: Sequence[str] = ("gradcam", "guided_backprop"),
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    num_workers: int = 0,
    threshold: float = 0.15,
    tolerance: float = 15.0,
) -> pd.DataFrame:
    """:func:`attack_batch` over ``dataset``, resumably, into
    ``results_dir/<model>_attacks_<dataset>_<settings hash>.csv``; returns all rows."""
    settings = {"model": entry.name, "dataset": dataset_name, "data": dataset_fingerprint(dataset),
                "specs": [vars(s) for s in specs], "methods": list(methods), "seed": seed,
                "threshold": threshold, "tolerance": tolerance}
    path = Path(results_dir) / f"{entry.name}_attacks_{dataset_name}_{run_key(settings)}.csv"
    rows = run_resumable(
        dataset,
        lambda images, samples: attack_batch(entry, images, samples, specs, methods, seed, threshold, tolerance),
        path,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        description=f"{entry.name} attacks {dataset_name}",
    )
    return rows.assign(model=entry.name, dataset=dataset_name)


# --------------------------------------------------------------------------------------------
# The chapter's table
# --------------------------------------------------------------------------------------------


def attack_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, attack, mode, eps, method): ``images`` attacked, ``successes``,
    ``success_pct``; then, over the successful attacks only, the means of ``rank_corr`` and
    ``box_iou`` and, in %, ``vanished`` / ``points_before`` / ``points_after_true`` / ``points_new``
    (NaN cells -- constant map, no box to point from or at -- are left out of each mean)."""
    attacked = rows[rows["attack"] != NOT_ATTACKED].copy()
    attacked["success"] = attacked["success"].astype(bool)
    keys = ["model", "attack", "mode", "eps", "method"]
    grouped = attacked.groupby(keys, sort=False)
    table = pd.DataFrame({"images": grouped["image_id"].nunique(), "successes": grouped["success"].sum()})
    table["success_pct"] = 100.0 * table["successes"] / table["images"]
    won = attacked[attacked["success"]].groupby(keys, sort=False)
    means = won[["rank_corr", "box_iou"]].mean()
    pointing = 100.0 * won[["vanished", "points_before", "points_after_true", "points_new"]].mean()
    return table.join(means).join(pointing).reset_index()


def clean_pointing(rows: pd.DataFrame) -> pd.DataFrame:
    """The baseline of the pointing columns: per (model, method), the attacked images and how often
    (%) the true-class map of the clean image points at the object."""
    clean = rows[(rows["attack"] == NOT_ATTACKED) & rows["attacked"].astype(bool)]
    grouped = clean.groupby(["model", "method"], sort=False)
    table = pd.DataFrame({"images": grouped["image_id"].nunique(), "points_before": 100.0 * grouped["points_before"].mean()})
    return table.reset_index()

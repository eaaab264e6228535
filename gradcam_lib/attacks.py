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
  true-class map before, the true-class map after, and the new top-1 class's map after lies closer
  than 15 px (TorchRay's pointing-game tolerance, strict) to a ground-truth box of ``y``
  (:func:`gradcam_lib.pointing.pointing_hit`, chapter 2).

Rows with ``attack == "none"`` record every image: one with ``attacked`` False for an image the
model misclassifies, one per method with ``points_before`` (the clean baseline) for an attacked
image, so every table can say how many images stand behind it. :func:`correctly_classified` picks the
attackable images of a data set beforehand, so that attack batches are full.

Summaries (:func:`attack_table`, :func:`paired_outcomes`, :func:`compare_settings`): a successful
attack after which the true-class map vanished is *counted* (``vanished``) and left out of the
means of the map comparisons (``rank_corr``, ``box_iou``, ``points_after_true``), whose number of
images is ``n``. Intervals are over images or -- when the rows carry a ``cluster`` column
(:func:`with_clusters`: the photograph an attacked object comes from, since the composite
benchmark pastes crops of the same few photographs) -- account for the clusters: means by a
bootstrap over whole clusters, shares by Wilson's interval on Kish's effective sample size. Settings
are compared on the same images only (paired: :func:`compare_settings`), never by pooling settings
as if they were independent samples.

Every function leaves the caller's model as it found it (train / eval flags, ``requires_grad``)
and the global RNGs untouched: forward passes run inside
:func:`gradcam_lib.explain.explanation_scope`, random draws come from seeded generators or inside
``torch.random.fork_rng``.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Mapping, Sequence
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
from gradcam_lib.datasets.composite import CompositeDataset
from gradcam_lib.faithfulness import rank_correlation
from gradcam_lib.localization import heatmap_to_box, iou
from gradcam_lib.methods import explanation_scope, heatmaps
from gradcam_lib.models import ModelEntry
from gradcam_lib.pointing import pointing_hit
from gradcam_lib.results import dataset_fingerprint, model_fingerprint, run_key, run_resumable
from gradcam_lib.stats import (
    McNemar,
    PairedDifference,
    cluster_bootstrap_ci,
    mcnemar,
    mean_ci,
    paired_difference,
    wilson_bounds,
)

__all__ = [
    "ATTACKS",
    "COLUMNS",
    "AttackOutcome",
    "AttackSpec",
    "Comparison",
    "PixelSpaceModel",
    "attack_and_explain",
    "attack_batch",
    "attack_success",
    "attack_table",
    "clean_pointing",
    "compare_settings",
    "correctly_classified",
    "effective_units",
    "evaluate_attacks",
    "mean_interval",
    "paired_outcomes",
    "photograph_of",
    "points_at",
    "random_targets",
    "run_attack",
    "share_interval",
    "to_pixels",
    "with_clusters",
]

ATTACKS: dict[str, str] = {"fgsm": "FGSM", "pgd": "PGD"}
NOT_ATTACKED = "none"
# Comparisons of the true-class map before / after: undefined for a vanished map, which is counted.
MAP_COLUMNS = ("rank_corr", "box_iou", "points_after_true")
BINARY_COLUMNS = ("success", "vanished", "points_before", "points_after_true", "points_new")
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


def _predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------
# Comparing maps
# --------------------------------------------------------------------------------------------


def points_at(heatmap: torch.Tensor, boxes: torch.Tensor, tolerance: float = 15.0) -> float:
    """Chapter 2's pointing test (:func:`gradcam_lib.pointing.pointing_hit`: the map's maximum
    point closer than ``tolerance`` px to a box; a constant map points nowhere, a miss) as 1.0 / 0.0;
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
    labels = target if target is not None else true_class  # target is None iff not spec.targeted
    batch_seed = int(run_key({"seed": seed, "spec": spec, "ids": list(image_ids)}), 16)
    adversarial = run_attack(pixel_model, pixels, labels, spec, batch_seed)
    attacked = pixel_model.normalise(adversarial)
    new_class = _predict(entry.model, attacked)
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
    # a generator of its own: iterating a DataLoader otherwise draws its base seed from the global RNG
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples, num_workers=num_workers,
                        generator=torch.Generator())
    keep, start = [], 0
    for images, samples in loader:
        predicted = _predict(entry.model, images.to(device)).tolist()
        keep += [start + i for i, (label, s) in enumerate(zip(predicted, samples, strict=True)) if label in s.labels]
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
    predicted = _predict(entry.model, images).cpu()
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
    ``results_dir/<model>_attacks_<dataset>_<settings hash>.csv`` (the hash covers the model, its
    Grad-CAM layer, the data, the attacks and the scoring); returns all rows."""
    # the Grad-CAM layer is part of the key: rows computed at another layer are never reused
    settings = {"model": entry.name, "weights": model_fingerprint(entry.model), "layer": entry.layer_name,
                "dataset": dataset_name, "data": dataset_fingerprint(dataset),
                "specs": [vars(s) for s in specs], "methods": list(methods), "seed": seed,
                "threshold": threshold, "tolerance": tolerance}
    path = Path(results_dir) / f"{entry.name}_attacks_{dataset_name}_{run_key(settings)}.csv"
    with torch.random.fork_rng(devices=[]):  # run_resumable's DataLoader draws its base seed from the global RNG
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
# Units, intervals and paired comparisons
# --------------------------------------------------------------------------------------------


def photograph_of(image_id: str, label: int, datasets: Sequence[Dataset]) -> str:
    """The independent unit behind an attacked image: the photograph its object of class ``label``
    comes from. A composite image (:class:`~gradcam_lib.datasets.composite.CompositeDataset`) pastes
    crops of the embedded photographs, so its unit is the photograph of that class's crop
    (``source_of`` is ``<photo id>#<box>``); any other image is its own unit."""
    for dataset in datasets:
        if isinstance(dataset, CompositeDataset):
            try:
                return dataset.source_of(image_id, label).split("#")[0]
            except KeyError:  # another seed's image, or a class that is not in the image
                continue
    return image_id


def with_clusters(rows: pd.DataFrame, datasets: Sequence[Dataset]) -> pd.DataFrame:
    """``rows`` with a ``cluster`` column (:func:`photograph_of` of each row's image and true class),
    which :func:`attack_table` and :func:`paired_outcomes` resample by."""
    pairs = rows[["image_id", "true_class"]].drop_duplicates()
    units = {(i, c): photograph_of(i, int(c), datasets) for i, c in pairs.itertuples(index=False)}
    return rows.assign(cluster=[units[i, c] for i, c in zip(rows["image_id"], rows["true_class"], strict=True)])


def effective_units(clusters: Sequence[object] | np.ndarray) -> float:
    """Kish's effective sample size ``(sum m_c)^2 / sum m_c^2`` of units in clusters of sizes
    ``m_c`` when the units of a cluster are perfectly correlated (Kish 1965, *Survey Sampling*,
    Sec. 11.7): the number of clusters when they are equally large, the number of units when each
    is its own cluster."""
    _, sizes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_counts=True)
    return float(sizes.sum() ** 2 / (sizes**2).sum()) if len(sizes) else 0.0


def share_interval(
    hits: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray | None = None, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(share, low, high)`` of a hit rate over images (NaN entries left out): Wilson's score
    interval, on the images when they are independent (``clusters`` None) or, when they come in
    clusters, on Kish's effective sample size (:func:`effective_units`: the images of one cluster
    counted as one observation). The latter is conservative, and never collapses to a point the way
    a bootstrap over a handful of clusters does when every image has the same outcome."""
    data = np.asarray(hits, dtype=np.float64)
    keep = ~np.isnan(data)
    data = data[keep]
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    share = float(data.mean())
    n = len(data) if clusters is None else effective_units(np.asarray(clusters, dtype=object)[keep])
    return (share, *wilson_bounds(share, n, confidence))


MIN_UNITS = 5  # fewer independent units than this: no bootstrap interval (a handful of resamples)


def mean_interval(
    values: Sequence[float] | np.ndarray, clusters: Sequence[object] | None = None, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)``, NaN left out: BCa bootstrap over the images
    (:func:`gradcam_lib.stats.mean_ci`) or, with clusters, the percentile bootstrap over whole
    clusters (:func:`gradcam_lib.stats.cluster_bootstrap_ci`). Fewer than :data:`MIN_UNITS` units
    (images or clusters): the mean and no interval."""
    data = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(data)
    units = keep.sum() if clusters is None else len(set(np.asarray(clusters, dtype=object)[keep].astype(str)))
    if units < MIN_UNITS:
        return (float(data[keep].mean()) if keep.any() else float("nan")), float("nan"), float("nan")
    if clusters is None:
        return mean_ci(data, confidence)
    return cluster_bootstrap_ci(data, clusters, confidence)


def _successful_maps(frame: pd.DataFrame) -> pd.DataFrame:
    """Attack rows with the map comparisons set to NaN where the true-class map vanished (the
    vanished maps are counted instead)."""
    frame = frame.copy()
    gone = frame["vanished"].eq(1.0)
    frame.loc[gone, list(MAP_COLUMNS)] = float("nan")
    return frame


def _clusters(frame: pd.DataFrame) -> np.ndarray | None:
    return frame["cluster"].to_numpy(dtype=object) if "cluster" in frame else None


def _select(rows: pd.DataFrame, where: Mapping[str, object]) -> pd.DataFrame:
    """Rows whose every ``column == value`` of ``where`` (floats compared with ``np.isclose``: eps
    is read back from a CSV)."""
    mask = np.ones(len(rows), dtype=bool)
    for column, value in where.items():
        if isinstance(value, float):
            mask &= np.isclose(rows[column].astype(float).to_numpy(), value, rtol=1e-9, atol=1e-12)
        else:
            mask &= (rows[column] == value).to_numpy()
    return rows[mask]


def paired_outcomes(
    rows: pd.DataFrame, column: str, a: Mapping[str, object], b: Mapping[str, object], column_b: str | None = None
) -> pd.DataFrame:
    """One row per image that has a value of ``column`` under selection ``a`` and of ``column_b``
    (default: ``column``) under selection ``b`` (e.g. ``{"attack": "pgd", "mode": "untargeted",
    "eps": 1 / 255, "method": "gradcam"}`` against the same at 8 / 255): columns ``image_id``,
    ``a``, ``b`` and ``cluster`` (the image when the rows have none). Map comparisons of vanished
    maps are left out (:data:`MAP_COLUMNS`), as are images without a value under one of the
    selections (a failed attack, a map that is constant)."""
    attacked = _successful_maps(rows[rows["attack"] != NOT_ATTACKED])
    sides = []
    for name, where, col in (("a", a, column), ("b", b, column_b or column)):
        part = _select(attacked, where)
        if part["image_id"].duplicated().any():
            raise ValueError(f"selection {dict(where)} holds several rows per image; add the keys that make it one")
        units = part["cluster"] if "cluster" in part else part["image_id"]
        sides.append(pd.DataFrame({"image_id": part["image_id"].to_numpy(), name: part[col].astype(float).to_numpy(),
                                   f"cluster_{name}": units.to_numpy()}))
    both = sides[0].merge(sides[1], on="image_id").dropna(subset=["a", "b"])
    return pd.DataFrame({"image_id": both["image_id"], "a": both["a"], "b": both["b"],
                         "cluster": both["cluster_a"]}).reset_index(drop=True)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two attack settings (or methods) on the same images: the paired
    bootstrap of the mean difference a - b (over clusters when the rows have them) and, for hit /
    miss columns, McNemar's exact test over the images as well."""

    column: str
    difference: PairedDifference
    mcnemar: McNemar | None = None

    @property
    def shown(self) -> bool:
        """A difference is shown: the bootstrap interval excludes 0 and, for hit / miss columns,
        McNemar's exact p < 0.05."""
        return self.difference.excludes_zero and (self.mcnemar is None or self.mcnemar.p_value < 0.05)

    def __str__(self) -> str:
        text = f"a - b = {self.difference}"
        return text if self.mcnemar is None else f"{text}; {self.mcnemar}"


def compare_settings(
    rows: pd.DataFrame,
    column: str,
    a: Mapping[str, object],
    b: Mapping[str, object],
    column_b: str | None = None,
    seed: int = 0,
) -> Comparison:
    """Paired comparison of ``column`` under selection ``a`` vs ``column_b`` (default ``column``)
    under ``b`` (:func:`paired_outcomes`): :func:`gradcam_lib.stats.paired_difference` over the
    images' clusters and, for hit / miss columns (:data:`BINARY_COLUMNS`),
    :func:`gradcam_lib.stats.mcnemar` over the images. Fewer than :data:`MIN_UNITS` independent
    units behind the pairs: no interval (nothing can be shown)."""
    pairs = paired_outcomes(rows, column, a, b, column_b)
    clusters = pairs["cluster"].to_numpy(dtype=object) if "cluster" in rows else None
    units = pairs["cluster"].nunique()
    if units >= MIN_UNITS:
        difference = paired_difference(pairs["a"], pairs["b"], clusters=clusters, seed=seed)
    else:
        mean = float((pairs["a"] - pairs["b"]).mean()) if len(pairs) else float("nan")
        difference = PairedDifference(mean, float("nan"), float("nan"), len(pairs))
    binary = column in BINARY_COLUMNS and (column_b or column) in BINARY_COLUMNS
    test = mcnemar(pairs["a"] > 0.5, pairs["b"] > 0.5) if binary else None
    return Comparison(column if column_b is None else f"{column} - {column_b}", difference, test)


# --------------------------------------------------------------------------------------------
# The chapter's table
# --------------------------------------------------------------------------------------------


def attack_table(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (model, attack, mode, eps, method), each with its own 95 % intervals over the
    images of that setting -- shares: Wilson (:func:`share_interval`), means: bootstrap
    (:func:`mean_interval`); both account for the clusters when the rows have a ``cluster`` column:

    * ``images`` attacked, ``units`` (their clusters), ``successes``, ``success_pct`` with
      ``success_low`` / ``success_high``;
    * ``vanished``: successful attacks after which the true-class map is all zero -- a count, not
      averaged into anything else;
    * ``n``: the other successful attacks, over which ``rank_corr``, ``box_iou`` (each with
      ``_low`` / ``_high``) and ``points_after_true`` (%) are averaged (a constant clean map, whose
      rank correlation is undefined, is left out of ``rank_corr`` too);
    * over all successful attacks, in %: ``points_before`` (the clean true-class map) and
      ``points_new`` (the new class's map after) with ``points_new_low`` / ``points_new_high``
      (NaN where the class has no box in the crop)."""
    attacked = rows[rows["attack"] != NOT_ATTACKED].copy()
    attacked["success"] = attacked["success"].astype(bool)
    if "cluster" not in attacked:
        attacked["cluster"] = attacked["image_id"]
    keys = ["model", "attack", "mode", "eps", "method"]
    records = []
    for key, group in attacked.groupby(keys, sort=False):
        clusters = group["cluster"].to_numpy(dtype=object) if "cluster" in rows else None
        share, low, high = share_interval(group["success"].astype(float), clusters, confidence)
        record = dict(zip(keys, key, strict=True))
        record.update(images=group["image_id"].nunique(), units=group["cluster"].nunique(),
                      successes=int(group["success"].sum()),
                      success_pct=100 * share, success_low=100 * low, success_high=100 * high)
        won = _successful_maps(group[group["success"]])
        won_clusters = won["cluster"].to_numpy(dtype=object) if "cluster" in rows else None
        record["vanished"] = int(won["vanished"].eq(1.0).sum())
        record["n"] = int((won["explained"].astype(bool) & ~won["vanished"].eq(1.0)).sum()) if len(won) else 0
        for column in ("rank_corr", "box_iou"):
            mean, low, high = mean_interval(won[column].astype(float), won_clusters, confidence)
            record.update({column: mean, f"{column}_low": low, f"{column}_high": high})
        for column in ("points_before", "points_after_true", "points_new"):
            values = won[column].astype(float)
            record[column] = 100 * values.mean() if values.notna().any() else float("nan")
        share, low, high = share_interval(won["points_new"].astype(float), won_clusters, confidence)
        record.update(points_new_low=100 * low, points_new_high=100 * high)
        records.append(record)
    return pd.DataFrame(records)


def clean_pointing(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The baseline of the pointing columns: per (model, method), the attacked images and how often
    (%) the true-class map of the clean image points at the object, with its interval
    (:func:`share_interval`, over clusters when the rows have them)."""
    clean = rows[(rows["attack"] == NOT_ATTACKED) & rows["attacked"].astype(bool)]
    records = []
    for (model, method), group in clean.groupby(["model", "method"], sort=False):
        share, low, high = share_interval(group["points_before"].astype(float), _clusters(group), confidence)
        records.append({"model": model, "method": method, "images": group["image_id"].nunique(),
                        "points_before": 100 * share, "points_before_low": 100 * low, "points_before_high": 100 * high})
    return pd.DataFrame(records)

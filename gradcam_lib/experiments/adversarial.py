"""Chapter 8's run: FGSM / PGD on the correctly classified images, and what each attack does to the
explanations (:mod:`gradcam_lib.attacks.adversarial`, :mod:`gradcam_lib.metrics.stability`).

Protocol of :meth:`AdversarialExperiment.batch`, per image: the model's clean top-1 class ``y``
must be one of the image's ground-truth classes (only correctly classified images are attacked);
every attack of the settings runs on them (untargeted, or targeted towards a seeded random class),
and for each successful attack and method the row holds the measures of
:func:`~gradcam_lib.metrics.stability.map_stability` (NaN for failed attacks, whose maps are not
computed).

Rows with ``attack == "none"`` record every image: one with ``attacked`` False for an image the
model misclassifies, one per method with ``points_before`` (the clean baseline) for an attacked
image, so every table can say how many images stand behind it. :func:`correctly_classified` picks
the attackable images of a data set beforehand, so that attack batches are full.
:func:`with_clusters` adds each row's independent unit (the photograph its object comes from).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from gradcam_lib.attacks.adversarial import AttackOutcome, AttackSpec, attack_and_explain, predict
from gradcam_lib.datasets.base import Sample, collate_samples
from gradcam_lib.datasets.composite import CompositeDataset
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import heatmaps
from gradcam_lib.metrics.stability import map_stability, points_at
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import run_key

__all__ = [
    "COLUMNS",
    "NOT_ATTACKED",
    "AdversarialExperiment",
    "AdversarialSettings",
    "attack_seed",
    "correctly_classified",
    "photograph_of",
    "with_clusters",
]

NOT_ATTACKED = "none"
# Every row has every column, in this order: run_resumable appends each batch to the CSV without a
# header, so a batch with other columns would land under the wrong names.
COLUMNS = (
    "image_id", "attack", "mode", "eps", "method", "attacked", "true_class", "target", "new_class", "success",
    "linf", "explained", "vanished", "rank_corr", "box_iou", "points_before", "points_after_true", "points_new",
)


@dataclass(frozen=True)
class AdversarialSettings:
    """The attacks, the explanation methods and the scoring (15 % boxes, 15 px pointing)."""

    specs: tuple[AttackSpec, ...]
    methods: tuple[str, ...] = ("gradcam", "guided_backprop")
    seed: int = 0
    threshold: float = 0.15
    tolerance: float = 15.0


def attack_seed(seed: int, spec: AttackSpec, image_ids: Sequence[str]) -> int:
    """PGD's random start for one batch: drawn from the seed, the attack and the batch's image ids."""
    return int(run_key({"seed": seed, "spec": spec, "ids": list(image_ids)}), 16)


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
        predicted = predict(entry.model, images.to(device)).tolist()
        keep += [start + i for i, (label, s) in enumerate(zip(predicted, samples, strict=True)) if label in s.labels]
        start += len(samples)
    return keep


def _complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with exactly ``COLUMNS``, in order (NaN where a row has no value)."""
    return [{column: row.get(column, float("nan")) for column in COLUMNS} for row in rows]


def _outcome_rows(
    outcome: AttackOutcome, samples: Sequence[Sample], spec: AttackSpec, threshold: float, tolerance: float
) -> list[dict[str, Any]]:
    rows = []
    for i, sample in enumerate(samples):
        boxes = sample.boxes_of(int(outcome.true_class[i]))
        for method, maps in outcome.maps.items():
            explained = not torch.isnan(maps[i]).any()
            row = {
                "image_id": sample.image_id, "attack": spec.attack, "mode": spec.mode, "eps": spec.eps,
                "method": method, "attacked": True, "true_class": int(outcome.true_class[i]),
                "target": int(outcome.target[i]), "new_class": int(outcome.new_class[i]),
                "success": bool(outcome.success[i]),
                "linf": float((outcome.adversarial[i] - outcome.pixels[i]).abs().max()), "explained": explained,
            }
            if explained:
                before, after_true, after_new = maps[i]
                row.update(map_stability(before, after_true, after_new, boxes, threshold, tolerance))
            rows.append(row)
    return rows


class AdversarialExperiment(Experiment[AdversarialSettings]):
    """Every attack of the settings on the correctly classified images of each batch; rows in
    ``<results_dir>/<model>_attacks_<dataset>_<key>.csv`` (see the module docstring)."""

    tag: ClassVar[str] = "attacks"

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        entry, settings = self.entry, self.settings
        predicted = predict(entry.model, images).cpu()
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
        before = {m: heatmaps(m, entry.model, entry.layer, x, y) for m in settings.methods}
        rows += [  # the clean baseline: does the true-class map point at the object before any attack?
            {"image_id": s.image_id, "attack": NOT_ATTACKED, "method": m, "attacked": True, "true_class": int(y[i]),
             "points_before": points_at(before[m][i].cpu(), s.boxes_of(int(y[i])), settings.tolerance)}
            for i, s in enumerate(chosen)
            for m in settings.methods
        ]
        for spec in settings.specs:
            outcome = attack_and_explain(entry, x, y, ids, spec, settings.methods, settings.seed,
                                         attack_seed(settings.seed, spec, ids), before)
            rows += _outcome_rows(outcome, chosen, spec, settings.threshold, settings.tolerance)
        return _complete(rows)


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
    which the report's intervals and paired comparisons resample by."""
    pairs = rows[["image_id", "true_class"]].drop_duplicates()
    units = {(i, c): photograph_of(i, int(c), datasets) for i, c in pairs.itertuples(index=False)}
    return rows.assign(cluster=[units[i, c] for i, c in zip(rows["image_id"], rows["true_class"], strict=True)])

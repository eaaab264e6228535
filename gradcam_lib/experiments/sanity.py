"""Chapter 9's runs: the sanity checks of Adebayo et al. (NeurIPS 2018, "Sanity checks for saliency
maps"), resumably (:class:`~gradcam_lib.experiments.base.Experiment`).

* :class:`RandomizationExperiment`: the model-parameter randomisation test (their Sec. 3.1),
  cascading or independent over :func:`~gradcam_lib.models.randomization.randomization_stages`;
* :class:`DataRandomizationExperiment`: the data randomisation test (their Sec. 3.2): the same
  architecture trained on permuted labels, its maps against the normally trained network's.

Every map is the registry's with the channel *sum* for input-space methods (signed, so the rank
correlation "without absolute values" means something; the absolute measures take ``|map|``) and
the CAMs upsampled to the input size as they are displayed; the measures are
:func:`~gradcam_lib.metrics.similarity.similarities`. The explained class is fixed: the trained
model's top-1 prediction (randomisation) or the digit's label (data randomisation), so only the
weights differ between the two maps compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import maps as method_maps
from gradcam_lib.metrics.similarity import similarities
from gradcam_lib.models import ModelEntry
from gradcam_lib.models.randomization import Stage, randomization_stages, randomized
from gradcam_lib.run_keys import model_fingerprint

__all__ = ["DataRandomizationExperiment", "DataRandomizationSettings", "RandomizationExperiment",
           "RandomizationSettings", "compared_rows", "randomized_maps"]


def _maps(entry: ModelEntry, methods: Sequence[str], images: torch.Tensor, targets: torch.Tensor,
          ) -> dict[str, torch.Tensor]:
    """``{method: (B, H, W)}`` maps of ``targets`` (signed channel sums; CAMs at the input size)."""
    return {m: method_maps(m, entry.model, entry.layer, images, targets, reduction="sum").detach().cpu()
            for m in methods}


def _randomizations(entry: ModelEntry, depths: Sequence[int], cascading: bool, seed: int,
                    ) -> Iterator[tuple[int, Stage]]:
    """For each depth L of ``depths``: ``(L, stage L)`` yielded while the model is randomised up to
    L (cascading) or at L alone; the weights come back after each step, and if the loop breaks."""
    stages = randomization_stages(entry.model)
    for depth in depths:
        if not 1 <= depth <= len(stages):
            raise ValueError(f"depth must lie in [1, {len(stages)}] (the model's stages), got {depth}")
        with randomized(entry.model, stages[:depth] if cascading else [stages[depth - 1]], seed):
            yield depth, stages[depth - 1]


def randomized_maps(entry: ModelEntry, methods: Sequence[str], images: torch.Tensor, depths: Sequence[int],
                    cascading: bool = True, seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """``{L: {method: (B, H, W)}}`` maps of each image's top-1 class (chosen by the trained model)
    after randomising up to stage L, for the figure of Adebayo et al.; ``L = 0``: the trained model."""
    with torch.no_grad():
        targets = entry.model(images).argmax(1)
    series = {0: _maps(entry, methods, images, targets)}
    for depth, _ in _randomizations(entry, depths, cascading, seed):
        series[depth] = _maps(entry, methods, images, targets)
    return series


def compared_rows(samples: Sequence[Sample], original: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
                  hog_cell: int, **columns: Any) -> list[dict[str, Any]]:
    """One row per (image, method): ``image_id``, ``method``, ``columns`` and the similarities of
    ``other``'s map to ``original``'s."""
    return [{"image_id": sample.image_id, "method": method, **columns,
             **similarities(original[method][i], other[method][i], hog_cell)}
            for method in original for i, sample in enumerate(samples)]


@dataclass(frozen=True)
class RandomizationSettings:
    """Everything that changes the rows of :class:`RandomizationExperiment`.

    Attributes:
        methods: registered method keys.
        cascading: randomise stages 1..L together (True) or stage L alone (False).
        seed: the randomised weights' seed (:func:`~gradcam_lib.models.randomization.randomized`).
        hog_cell: pixels per HOG cell (8 at 224 px, scikit-image's default).
    """

    methods: tuple[str, ...]
    cascading: bool = True
    seed: int = 0
    hog_cell: int = 8


class RandomizationExperiment(Experiment[RandomizationSettings]):
    """Per image, method and stage L (1 = the logits' layer): the similarity of the map of the model
    randomised up to L (cascading) or at L alone (independent) to the trained model's map.

    Rows: ``image_id``, ``method``, ``stage`` (L), ``layer`` (the stage's name) and the measures of
    :func:`~gradcam_lib.metrics.similarity.similarities`."""

    tag = "randomization"

    def labels(self) -> dict[str, Any]:
        return {"test": "cascading" if self.settings.cascading else "independent"}

    def key(self) -> dict[str, Any]:
        return {**super().key(), "stages": [stage.modules for stage in randomization_stages(self.entry.model)]}

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        s, model = self.settings, self.entry.model
        with torch.no_grad():
            targets = model(images).argmax(1)
        original = _maps(self.entry, s.methods, images, targets)
        depths = range(1, len(randomization_stages(model)) + 1)
        rows: list[dict[str, Any]] = []
        for depth, stage in _randomizations(self.entry, depths, s.cascading, s.seed):
            changed = _maps(self.entry, s.methods, images, targets)
            rows += compared_rows(samples, original, changed, s.hog_cell, stage=depth, layer=stage.name)
        return rows


@dataclass(frozen=True)
class DataRandomizationSettings:
    """Everything that changes the rows of :class:`DataRandomizationExperiment` (see
    :class:`RandomizationSettings`)."""

    methods: tuple[str, ...]
    hog_cell: int = 8


class DataRandomizationExperiment(Experiment[DataRandomizationSettings]):
    """Per image and method: the similarity of ``randomized``'s map (the network trained on permuted
    labels) to the trained network's, both for the image's first label.

    Rows: ``image_id``, ``method`` and the measures of
    :func:`~gradcam_lib.metrics.similarity.similarities`."""

    tag = "data_randomization"

    def __init__(self, entry: ModelEntry, dataset: Dataset, dataset_name: str,
                 settings: DataRandomizationSettings, randomized_entry: ModelEntry) -> None:
        super().__init__(entry, dataset, dataset_name, settings)
        self.randomized_entry = randomized_entry

    def key(self) -> dict[str, Any]:
        return {**super().key(), "randomized_weights": model_fingerprint(self.randomized_entry.model)}

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        s = self.settings
        targets = torch.tensor([sample.labels[0] for sample in samples], device=images.device)
        original = _maps(self.entry, s.methods, images, targets)
        other = _maps(self.randomized_entry, s.methods, images, targets)
        return compared_rows(samples, original, other, s.hog_cell)

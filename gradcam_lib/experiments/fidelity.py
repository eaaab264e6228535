"""Chapter 7's run: fidelity and contrastivity of one attribution method per image, under KTH's and
Pope et al.'s (CVPR 2019, Sec. 4.3) definitions, with random-mask nulls, resumably
(:class:`~gradcam_lib.experiments.base.Experiment`). The metrics are in
:mod:`gradcam_lib.metrics.fidelity`.

Two things are shared by the images of a batch: Integrated Gradients' step count (the first of
``ig_steps`` at which every explained-class map of the batch converges) and the generator of the
random masks (seeded by ``seed`` and the batch's first position). So the batch is a setting
(:attr:`FidelitySettings.batch_size`, in the run key) and :meth:`FidelityExperiment.run` uses it;
a resumed run continues at a batch boundary, so its batches are the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import attribute
from gradcam_lib.methods.attributions import IG_STEPS
from gradcam_lib.metrics.fidelity import (
    contrastivity,
    input_support,
    label_sets,
    mask_images,
    method_options,
    normalised_saliency_mask,
    pairwise_contrastivity,
    positive_percentile_mask,
    probabilities,
    random_masks_like,
)
from gradcam_lib.models import ModelEntry

__all__ = ["FidelityExperiment", "FidelitySettings"]


@dataclass(frozen=True)
class FidelitySettings:
    """Everything that changes the rows of :class:`FidelityExperiment`.

    Attributes:
        method: a registered method (the chapter's: ``gradcam``, ``ig``, ``shap``); input-space maps
            are summed over channels.
        percentiles: KTH's binarisation levels; pope_threshold: Pope et al.'s.
        n_classes: classes compared per image (top-``n_classes`` by score; the first is explained).
        fill: value of the removed pixels, in the model's input space.
        ig_steps, ig_baseline, ig_tolerance: Integrated Gradients' step counts tried in turn, its
            baseline and the completeness gap it must reach; shap_samples: SHAP's samples.
        seed: SHAP's and the random masks' seed; random_draws: random masks per image and null.
        batch_size: images evaluated together (see the module notes).
    """

    method: str
    percentiles: tuple[float, ...] = (1, 10)
    n_classes: int = 10
    fill: float = 0.0
    ig_steps: tuple[int, ...] = IG_STEPS
    shap_samples: int = 50
    seed: int = 0
    pope_threshold: float = 0.01
    random_draws: int = 8
    ig_baseline: float = 0.0
    ig_tolerance: float = 0.05
    batch_size: int = 100


def _batch_seed(seed: int, first: int) -> int:
    """The random masks' seed of the batch starting at position ``first`` (``seed`` for the first)."""
    if first == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{first}".encode()).digest()[:8], "little")


class FidelityExperiment(Experiment[FidelitySettings]):
    """Per image, one row per binarisation: KTH's (rule ``KTH``, one per percentile) and Pope et
    al.'s (rule ``Pope``); every metric is computed for every row.

    The explained class is each image's top-1 prediction; KTH's contrastivity compares its map with
    the maps of the next ``n_classes - 1`` classes by score, Pope's with the top-2 class's. The
    nulls average ``random_draws`` random masks per image (uniform, and inside the support). The
    labels are the samples' ``labels`` (an image without labels has NaN hits and accuracy drops).
    ``background``: SHAP's background images (hashed into the run key).

    Rows: ``image_id``, ``image`` (position in the data set), ``method``, ``rule``, ``level``
    (percentile or threshold) and ``fidelity``, ``fidelity_uniform``, ``fidelity_support``
    (probability drop of the map's mask and of the nulls), ``accuracy_drop``,
    ``accuracy_drop_uniform``, ``accuracy_drop_support`` (NaN without labels), ``hit_before``, ``hit_after`` (top-1
    correct on x and on x', 1 / 0), ``contrastivity`` (KTH), ``contrastivity_pair`` (Pope, top-1
    vs top-2; NaN when ``n_classes`` is 1), ``kept`` (share of the pixels in the mask),
    ``kept_support`` (share of the support in the mask), ``ig_gap`` (completeness gap of the
    explained class's IG map, NaN for other methods), ``ig_gap_other_max`` and ``ig_steps``.
    """

    tag = "fidelity"

    def __init__(self, entry: ModelEntry, dataset: Dataset, dataset_name: str, settings: FidelitySettings,
                 background: torch.Tensor | None = None) -> None:
        super().__init__(entry, dataset, dataset_name, settings)
        self.background = background
        self._positions = {self.dataset[i].image_id: i for i in range(len(self.dataset))}  # type: ignore[arg-type]

    def key(self) -> dict[str, Any]:
        """The shared key plus a hash of the SHAP background's bytes."""
        key = super().key()
        if self.background is not None:
            values = self.background.detach().cpu().contiguous()
            digest = hashlib.sha256(f"{values.dtype}{tuple(values.shape)}".encode())
            digest.update(values.numpy().tobytes())
            key["background"] = digest.hexdigest()[:16]
        return key

    def run(self, results_dir: str | Path, batch_size: int | None = None, device: str | torch.device = "cpu",
            num_workers: int = 0) -> pd.DataFrame:
        """:meth:`Experiment.run` with the settings' batch size (another one is refused: it would
        change the rows)."""
        if batch_size is not None and batch_size != self.settings.batch_size:
            raise ValueError(f"the batch size is a setting of this experiment ({self.settings.batch_size}); "
                             f"got {batch_size}")
        return super().run(results_dir, self.settings.batch_size, device, num_workers)

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        s, model = self.settings, self.entry.model
        n = len(images)
        probs = probabilities(model, images)
        classes = probs.topk(s.n_classes, dim=1).indices
        before = probs.gather(1, classes[:, :1])[:, 0]
        background = None if self.background is None else self.background.to(images.device)
        options = method_options(s.method, background, s.ig_steps, s.shap_samples, s.seed, s.ig_baseline,
                                 s.ig_tolerance)
        explained = attribute(s.method, model, self.entry.layer, images, classes, reduction="sum", **options)
        maps, gaps, steps_used = explained.maps, explained.info.get("gaps"), explained.info.get("steps", np.nan)
        support = input_support(images, s.fill)
        sets = label_sets([tuple(sample.labels) for sample in samples], n)
        rows_index = torch.arange(n, device=images.device)
        target = classes[:, 0]

        def hits(scores: torch.Tensor) -> torch.Tensor:
            """1 / 0: the top-1 class is one of the image's labels; NaN for an image without labels."""
            top = scores.argmax(1).cpu().tolist()
            return torch.tensor([float(t in c) if c else float("nan") for t, c in zip(top, sets, strict=True)])

        def outcomes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """One forward of the masked images: (probability drop of the explained class, hit after)."""
            after = probabilities(model, mask_images(images, masks, s.fill))
            return (before - after[rows_index, target]).cpu(), hits(after)

        hits_before = hits(probs)
        first = self._positions[samples[0].image_id]
        generator = torch.Generator().manual_seed(_batch_seed(s.seed, first))
        binarisations = [("KTH", float(p), positive_percentile_mask(maps, p)) for p in s.percentiles]
        binarisations.append(("Pope", float(s.pope_threshold), normalised_saliency_mask(maps, s.pope_threshold)))
        nan = np.full(n, np.nan)
        frames = []
        for rule, level, masks in binarisations:
            own = masks[:, 0]
            row: dict[str, Any] = {"image_id": [sample.image_id for sample in samples],
                                   "image": [self._positions[sample.image_id] for sample in samples],
                                   "method": s.method, "rule": rule, "level": level}
            drop, hits_after = outcomes(own)
            row["fidelity"], row["accuracy_drop"] = drop.numpy(), (hits_before - hits_after).numpy()
            row["hit_before"], row["hit_after"] = hits_before.numpy(), hits_after.numpy()
            for name, restrict in (("uniform", None), ("support", support)):
                draws = [outcomes(random_masks_like(own, generator, restrict)) for _ in range(s.random_draws)]
                row[f"fidelity_{name}"] = torch.stack([d for d, _ in draws]).mean(0).numpy()
                row[f"accuracy_drop_{name}"] = (hits_before - torch.stack([h for _, h in draws]).mean(0)).numpy()
            row["contrastivity"] = contrastivity(masks, 0).numpy() if s.n_classes > 1 else nan
            row["contrastivity_pair"] = pairwise_contrastivity(own, masks[:, 1]).numpy() if s.n_classes > 1 else nan
            row["kept"] = own.flatten(1).float().mean(1).cpu().numpy()
            row["kept_support"] = ((own & support).flatten(1).sum(1).float()
                                   / support.flatten(1).sum(1).clamp(min=1).float()).cpu().numpy()
            row["ig_gap"] = gaps[:, 0].numpy() if gaps is not None else nan
            row["ig_gap_other_max"] = gaps[:, 1:].amax(1).numpy() if gaps is not None and s.n_classes > 1 else nan
            row["ig_steps"] = steps_used
            frames.append(pd.DataFrame(row))
        # float64 so that the values come back from the results file exactly as computed
        rows = pd.concat(frames, ignore_index=True)
        floats = rows.select_dtypes("floating").columns
        return rows.astype({c: np.float64 for c in floats}).to_dict("records")

"""Chapter 6's run: the one-pixel attack on every image, and the Grad-CAM map at the attacked pixel
of each successful attack (the sensitivity axiom; KTH's experiment).

Per image one row: the attack's outcome (:meth:`~gradcam_lib.attacks.one_pixel.OnePixelResult.rows`)
and, for a successful attack, the measures of :func:`~gradcam_lib.metrics.sensitivity.pixel_sensitivity`
on the Grad-CAM map *before* (original top-1 class, original image) and *after* (new top-1 class,
attacked image) as ``before_<measure>`` / ``after_<measure>`` (NaN for a failed attack). Each batch
is seeded from the settings' seed and its first image id, so the batch size is a setting (it
changes which images share a population's draws) and a resumed run gives the rows of an
uninterrupted one. Timings stay out of the rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradcam_lib.attacks.differential_evolution import SU2019, DEConfig
from gradcam_lib.attacks.one_pixel import OnePixelResult, attacked_maps, one_pixel_attack
from gradcam_lib.datasets import build_dataset
from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.mnist import Split, as_samples
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.metrics.sensitivity import (
    RandomPixelTest,
    map_value_at,
    pixel_percentiles,
    pixel_sensitivity,
    random_pixel_test,
)
from gradcam_lib.models import ModelEntry
from gradcam_lib.models.mnist import least_confident

__all__ = [
    "MEASURES",
    "SensitivityExperiment",
    "SensitivitySettings",
    "attack_set",
    "de_config",
    "pixel_tests",
    "recomputed_maps",
    "sensitivity_rows",
]

MEASURES = ("value", "percentile", "relative", "null_percentile", "zero_share")


@dataclass(frozen=True)
class SensitivitySettings:
    """The differential evolution (its budget), the seed, and the images attacked together."""

    config: DEConfig = SU2019
    seed: int = 0
    batch_size: int = 64


def de_config(popsize: int, maxiter: int, mutation: float | Sequence[float] = 0.5, recombination: float = 1.0,
              strategy: str = "rand1", init: str = "su2019") -> DEConfig:
    """A :class:`DEConfig` from a chapter's parameters (a mutation range given as a list)."""
    scale: float | tuple[float, float] = (
        (float(mutation[0]), float(mutation[1])) if isinstance(mutation, Sequence) else float(mutation)
    )
    return DEConfig(popsize=popsize, maxiter=maxiter, mutation=scale, recombination=recombination,
                    strategy=strategy, init=init)


def attack_set(entry: ModelEntry, dataset: str, n: int, mnist_test: Split, selection: str = "least_confident",
               data_root: str | None = None, seed: int = 0) -> list[Sample]:
    """The images a run attacks: MNIST test digits (the ``least_confident`` or the ``first``), or
    the first ``n`` images of a data set (:func:`~gradcam_lib.datasets.build_dataset`)."""
    if dataset == "mnist":
        picks = least_confident(entry.model, mnist_test, n) if selection == "least_confident" else torch.arange(n)
        return as_samples(mnist_test, "mnist_test", picks)
    return list(cast(Iterable[Sample], build_dataset(dataset, entry.transform, n, data_root, seed)))[:n]


def sensitivity_rows(model: nn.Module, layer: nn.Module, images: torch.Tensor, result: OnePixelResult,
                     mean: Sequence[float], std: Sequence[float]) -> list[dict[str, Any]]:
    """The measures of :func:`~gradcam_lib.metrics.sensitivity.pixel_sensitivity` on the Grad-CAM
    maps before / after (:func:`~gradcam_lib.attacks.one_pixel.attacked_maps`) of each successful
    attack, with the ``index`` of its image in the batch. One row per successful attack."""
    hit = result.success.nonzero().squeeze(1)
    if len(hit) == 0:
        return []
    x, y = result.x[hit], result.y[hit]
    maps = attacked_maps(model, layer, images[hit.to(images.device)], x, y, result.colour[hit],
                         result.class_before[hit], result.class_after[hit], mean, std)
    rows: dict[str, list] = {"index": hit.tolist()}
    for when, heat in zip(("before", "after"), maps, strict=True):
        for measure, values in pixel_sensitivity(heat, x, y).items():
            rows[f"{when}_{measure}"] = values.tolist()
    return [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]


class SensitivityExperiment(Experiment[SensitivitySettings]):
    """The one-pixel attack and the Grad-CAM read-outs of one (model, data set, budget); rows carry
    ``popsize`` and ``maxiter``. ``eval_batch`` (candidate images per forward pass) changes memory,
    not rows."""

    tag: ClassVar[str] = "one_pixel"

    def __init__(self, entry: ModelEntry, dataset: Any, dataset_name: str, settings: SensitivitySettings,
                 eval_batch: int = 512) -> None:
        super().__init__(entry, dataset, dataset_name, settings)
        self.eval_batch = eval_batch

    def labels(self) -> dict[str, Any]:
        return {"popsize": self.settings.config.popsize, "maxiter": self.settings.config.maxiter}

    def batch(self, images: torch.Tensor, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        entry, settings = self.entry, self.settings
        mean, std = entry.transform.mean, entry.transform.std
        batch_seed = settings.seed + zlib.crc32(samples[0].image_id.encode())
        result = one_pixel_attack(entry.model, images, mean, std, settings.config, batch_seed, self.eval_batch)
        empty = {f"{when}_{m}": float("nan") for when in ("before", "after") for m in MEASURES}
        rows = [{**row, "image_id": sample.image_id, **empty}
                for row, sample in zip(result.rows(), samples, strict=True)]
        for measured in sensitivity_rows(entry.model, entry.layer, images, result, mean, std):
            rows[measured.pop("index")].update(measured)
        return rows

    def run(self, results_dir: str | Path, batch_size: int | None = None, device: str | torch.device = "cpu",
            num_workers: int = 0) -> pd.DataFrame:
        """:meth:`Experiment.run` in batches of the settings' ``batch_size`` (another is refused)."""
        if batch_size is not None and batch_size != self.settings.batch_size:
            raise ValueError(f"the batch size is a setting here ({self.settings.batch_size}), got {batch_size}")
        return super().run(results_dir, self.settings.batch_size, device, num_workers)


def recomputed_maps(entry: ModelEntry, hit: pd.DataFrame, samples: Sequence[Sample], device: str = "cpu"
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The images and Grad-CAM maps before / after of the successful attacks in ``hit`` (rows of one
    run, read back), recomputed from the stored pixels; checked against the stored values."""
    lookup = {s.image_id: s for s in samples}
    images = torch.stack([lookup[i].image for i in hit["image_id"]]).to(device)
    x, y = torch.tensor(hit["x"].to_numpy()), torch.tensor(hit["y"].to_numpy())
    colour = torch.tensor(hit[[f"colour_{c}" for c in range(images.shape[1])]].to_numpy(), dtype=torch.float32)
    maps = attacked_maps(entry.model, entry.layer, images, x, y, colour, torch.tensor(hit["class_before"].to_numpy()),
                         torch.tensor(hit["class_after"].to_numpy()), entry.transform.mean, entry.transform.std)
    for when, heat in zip(("before", "after"), maps, strict=True):
        value, _ = map_value_at(heat, x, y)
        if not np.allclose(value.numpy(), hit[f"{when}_value"].to_numpy(), rtol=1e-5, atol=1e-7):
            raise AssertionError(f"recomputed {when} maps differ from the stored values")
    return images, maps


def pixel_tests(hit: pd.DataFrame, maps: tuple[torch.Tensor, torch.Tensor], draws: int = 10_000, seed: int = 0
                ) -> dict[tuple[str, str], RandomPixelTest]:
    """``(when, kind) -> test`` of the attacked pixels against a random pixel
    (:func:`~gradcam_lib.metrics.sensitivity.random_pixel_test`): ``rank`` on the maps' percentile
    ranks, ``zero`` on the indicator "the map is zero at the pixel"; ``when`` is before / after."""
    x, y = torch.tensor(hit["x"].to_numpy()), torch.tensor(hit["y"].to_numpy())
    tests = {}
    for when, heat in zip(("before", "after"), maps, strict=True):
        tests[when, "rank"] = random_pixel_test(pixel_percentiles(heat), x, y, draws, seed)
        tests[when, "zero"] = random_pixel_test((heat == 0).double(), x, y, draws, seed)
    return tests
